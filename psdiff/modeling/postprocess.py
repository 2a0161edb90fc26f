"""From one image's detections to the model's output contract, as DETR's postprocessors.

`DetectionPostprocessor` turns one image's boxes, scores and embeddings into
`{"boxes", "scores", "embeddings"}` in original image pixels: score threshold, clip, drop empty
boxes, NMS (embeddings follow their box by index), top-k, rescale, L2-normalize.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import nms


def rescale_boxes(boxes, from_size, to_size):
    """xyxy boxes from an image of (h, w) `from_size` to the same image at (h, w) `to_size`."""
    scale_y, scale_x = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return boxes * boxes.new_tensor([scale_x, scale_y, scale_x, scale_y])


def clip_boxes(boxes, size):
    """xyxy boxes clamped to an image of (h, w) `size`."""
    height, width = size
    return torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                        boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], dim=-1)


@dataclass(frozen=True)
class DetectionPostprocessor:
    """Threshold -> clip -> drop empty -> NMS (or sort by score) -> top-k -> rescale."""

    score_thresh: float = 0.5  # TEST.SCORE_THRESH: detections scoring below it are dropped
    use_nms: bool = True  # MODEL.PSDIFF.USE_NMS
    nms_thresh: float = 0.5  # MODEL.PSDIFF.NMS_THRESH: IoU
    max_detections: int = 300  # TEST.DETECTIONS_PER_IMAGE

    @classmethod
    def from_config(cls, cfg):
        return cls(
            score_thresh=cfg.TEST.SCORE_THRESH,
            use_nms=cfg.MODEL.PSDIFF.USE_NMS,
            nms_thresh=cfg.MODEL.PSDIFF.NMS_THRESH,
            max_detections=cfg.TEST.DETECTIONS_PER_IMAGE,
        )

    def __call__(self, boxes, scores, embeddings, input_size, output_size):
        """One image's detections [K, 4] xyxy input pixels, scores [K], embeddings [K, D] ->
        output.

        `input_size` / `output_size`: (h, w) of the network input and of the original image.
        Embeddings come out L2-normalized; boxes are clipped to the image and sorted by score.
        """
        keep = scores >= self.score_thresh
        boxes, scores, embeddings = boxes[keep], scores[keep], embeddings[keep]
        boxes = clip_boxes(boxes, input_size)
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, embeddings = boxes[nonempty], scores[nonempty], embeddings[nonempty]
        if self.use_nms:
            order = nms(boxes.float(), scores.float(), self.nms_thresh)
        else:
            order = scores.argsort(descending=True)
        order = order[: self.max_detections]
        return {  # float32 even under autocast, for the evaluator's numpy arrays
            "boxes": clip_boxes(rescale_boxes(boxes[order].float(), input_size, output_size),
                                output_size),  # again: rescaling a clipped box can overshoot
            "scores": scores[order].float(),
            "embeddings": F.normalize(embeddings[order].float(), dim=-1),
        }
