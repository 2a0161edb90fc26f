"""The postprocessor alone, on hand-made detections: threshold, clip, drop empty boxes, NMS,
top-k and rescale to the original image, embeddings following their box."""

import dataclasses

import torch
import torch.nn.functional as F
from tiny_config import tiny_cfg

from psdiff.modeling.postprocess import DetectionPostprocessor

#            box (input pixels, image 100 x 200)  score  fate with the postprocessor below
DETECTIONS = [([100, 20, 150, 80], 0.7),  # C: kept, second
              ([12, 12, 52, 62], 0.8),  # B: IoU 0.84 with A, suppressed by NMS
              ([60, 10, 90, 40], 0.4),  # E: under the score threshold
              ([10, 10, 50, 60], 0.9),  # A: kept, first
              ([150, 50, 250, 90], 0.6),  # D: clipped to x2 = 200, kept, third
              ([20, 70, 40, 95], 0.55),  # F: fourth after NMS, cut by top-3
              ([210, 10, 260, 40], 0.95)]  # G: empty once clipped to the image, dropped
INPUT_SIZE, OUTPUT_SIZE = (100, 200), (200, 400)  # (h, w): the original is twice as large


def run(postprocessor, embeddings):
    boxes = torch.tensor([box for box, _ in DETECTIONS], dtype=torch.float32)
    scores = torch.tensor([score for _, score in DETECTIONS])
    return postprocessor(boxes, scores, embeddings, INPUT_SIZE, OUTPUT_SIZE)


def test_threshold_clip_nms_top_k_then_rescale():
    embeddings = torch.randn(len(DETECTIONS), 8, generator=torch.Generator().manual_seed(0))
    post = DetectionPostprocessor(score_thresh=0.5, use_nms=True, nms_thresh=0.5,
                                  max_detections=3)
    out = run(post, embeddings)
    torch.testing.assert_close(out["boxes"], torch.tensor(
        [[20.0, 20, 100, 120], [200, 40, 300, 160], [300, 100, 400, 180]]))  # A, C, D x2
    torch.testing.assert_close(out["scores"], torch.tensor([0.9, 0.7, 0.6]))
    torch.testing.assert_close(out["embeddings"], F.normalize(embeddings[[3, 0, 4]], dim=-1))

    no_nms = run(dataclasses.replace(post, use_nms=False), embeddings)  # B comes back
    torch.testing.assert_close(no_nms["scores"], torch.tensor([0.9, 0.8, 0.7]))
    everything = run(dataclasses.replace(post, score_thresh=0.0, max_detections=10), embeddings)
    torch.testing.assert_close(everything["scores"], torch.tensor([0.9, 0.7, 0.6, 0.55, 0.4]))


def test_postprocessor_from_config():
    cfg = tiny_cfg("TEST.SCORE_THRESH", 0.3, "MODEL.PSDIFF.USE_NMS", False,
                   "MODEL.PSDIFF.NMS_THRESH", 0.6, "TEST.DETECTIONS_PER_IMAGE", 7)
    assert DetectionPostprocessor.from_config(cfg) == DetectionPostprocessor(
        score_thresh=0.3, use_nms=False, nms_thresh=0.6, max_detections=7)


def test_a_box_clipped_to_the_input_stays_inside_the_original_after_rescaling():
    # 84 * (96 / 84) is 96.0000076 in float32: rescaling alone would leave the image
    out = DetectionPostprocessor(score_thresh=0.0)(
        torch.tensor([[10.0, 0.0, 90.0, 10.0]]), torch.tensor([0.9]), torch.ones(1, 8),
        (10, 84), (10, 96))
    assert out["boxes"][0, 2].item() == 96.0
