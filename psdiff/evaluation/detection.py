"""Detection AP at IoU 0.5 and recall over the gallery images.

The protocol is docs/datasets-and-evaluation.md §3.2.

The reference (SeqNet `eval_detection`) matches detections to ground truth by mutual best IoU,
not Hungarian: a (gt, det) pair is a true positive iff IoU >= 0.5, the det is the gt's arg-max
det and the gt is the det's arg-max gt, on IoUs stored in float32 (first index wins ties).
AP = average_precision(is_tp, score) x recall, so missed people lower AP.
"""

import numpy as np

from .predictions import GalleryRows
from .ranking import average_precision, box_iou


def _mutual_best_matches(ious: np.ndarray, iou_thresh: float) -> np.ndarray:
    """[num_gt, num_det] bool: pairs above the threshold that are each other's arg-max IoU."""
    best_gt = np.argmax(ious, axis=0)
    best_det = np.argmax(ious, axis=1)
    is_best_gt = np.arange(ious.shape[0])[:, None] == best_gt[None, :]
    is_best_det = np.arange(ious.shape[1])[None, :] == best_det[:, None]
    return (ious >= iou_thresh) & is_best_gt & is_best_det


def eval_detection(gallery: list, rows: GalleryRows, det_thresh: float = 0.01,
                   iou_thresh: float = 0.5, labeled_only: bool = False) -> dict:
    """`{"AP", "recall", "num_gt", "num_tp"}` of `rows` (aligned with `gallery` dicts).

    labeled_only: the ground truth is the labeled people only (pid != -1), and an image
    without any labeled person is skipped entirely, its detections included.
    An image with detections but no ground truth counts them all as false positives.
    """
    y_true, y_score = [], []
    count_gt, count_tp = 0, 0
    threshold = np.float32(det_thresh)  # in the scores' float32 (protocol §3.6)
    for i, record in enumerate(gallery):
        annotations = record["annotations"]
        if labeled_only:
            annotations = [a for a in annotations if a["pid"] != -1]
            if not annotations:
                continue
        # the reference holds ground-truth boxes as int32
        gt = np.asarray([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4)
        gt = gt.astype(np.int32)
        begin, end = rows.offsets[i], rows.offsets[i + 1]
        scores = rows.scores[begin:end]
        keep = scores >= threshold
        count_gt += len(gt)
        if not keep.any():
            continue
        ious = box_iou(gt, rows.boxes[begin:end][keep]).astype(np.float32)
        matched = (_mutual_best_matches(ious, iou_thresh) if len(gt)
                   else np.zeros((0, int(keep.sum())), dtype=bool))
        y_true.append(matched.any(axis=0))
        y_score.append(scores[keep])
        count_tp += int(matched.sum())
    recall = count_tp / count_gt if count_gt else 0.0
    ap = average_precision(np.concatenate(y_true), np.concatenate(y_score)) if y_true else 0.0
    return {"AP": ap * recall, "recall": recall, "num_gt": count_gt, "num_tp": count_tp}
