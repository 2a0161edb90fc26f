"""From the CDL's last prediction to the model's output contract, and the seeded sampler noise.

`detections_to_output` turns one image's boxes, logits and embeddings into
`{"boxes", "scores", "embeddings"}` in original image pixels: score threshold, clip, drop empty
boxes, NMS (embeddings follow their box by index), top-k, rescale, L2-normalize.
`image_generator` derives the noise generator of one image from (seed, image_id), so evaluation
noise does not depend on batch composition, rank or RNG history (DiffusionDet #45, #112).
"""

import hashlib

import torch
import torch.nn.functional as F
from torchvision.ops import nms


def image_generator(seed, image_id):
    """A CPU torch.Generator seeded from `seed` and the image's id (stable across processes)."""
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    generator = torch.Generator()
    generator.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return generator


def rescale_boxes(boxes, from_size, to_size):
    """xyxy boxes from an image of (h, w) `from_size` to the same image at (h, w) `to_size`."""
    scale_y, scale_x = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return boxes * boxes.new_tensor([scale_x, scale_y, scale_x, scale_y])


def detections_to_output(
    boxes,
    scores,
    embeddings,
    input_size,
    output_size,
    score_thresh,
    nms_thresh,
    use_nms,
    max_detections,
):
    """One image's detections [K, 4] xyxy input pixels, scores [K], embeddings [K, D] -> output.

    `input_size` / `output_size`: (h, w) of the network input and of the original image.
    Embeddings come out L2-normalized; boxes are clipped to the image and sorted by score.
    """
    keep = scores >= score_thresh
    boxes, scores, embeddings = boxes[keep], scores[keep], embeddings[keep]
    height, width = input_size
    boxes = torch.stack(
        [
            boxes[:, 0].clamp(0, width),
            boxes[:, 1].clamp(0, height),
            boxes[:, 2].clamp(0, width),
            boxes[:, 3].clamp(0, height),
        ],
        dim=-1,
    )
    nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores, embeddings = boxes[nonempty], scores[nonempty], embeddings[nonempty]
    if use_nms:
        order = nms(boxes.float(), scores.float(), nms_thresh)
    else:
        order = scores.argsort(descending=True)
    order = order[:max_detections]
    return {  # float32 even under autocast, for the evaluator's numpy arrays
        "boxes": rescale_boxes(boxes[order].float(), input_size, output_size),
        "scores": scores[order].float(),
        "embeddings": F.normalize(embeddings[order].float(), dim=-1),
    }
