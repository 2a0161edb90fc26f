"""The teacher's own evaluation: query crop -> gallery ground-truth crops, mAP and top-1.

Detection plays no part: every ground-truth box of the query's gallery images is a candidate,
so the result is an upper bound for PSDiff's ReID branch (docs/teacher.md) and
shows a weak teacher before it is distilled. Galleries follow the search protocols: a CUHK-SYSU
query ranks the boxes of its `gallery_ids` (the positive is the box matching its row of
`gallery_boxes`); a PRW query ranks the boxes of every gallery frame but its own (positives are
the boxes with its pid). AP is the plain ranked-list average precision over the positives.
"""

import logging

import numpy as np
import torch
from torchvision.ops import box_iou

from .inference import dataset_jobs, embed_boxes

logger = logging.getLogger(__name__)


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mean over positives of the precision at their rank (ranked by score, highest first)."""
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(bool)
    if not hits.any():
        return 0.0
    ranks = np.flatnonzero(hits) + 1
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


def _candidates(query, gallery_index, gallery_dicts):
    """Indices of the gallery images to rank and, per image, a positive mask over its boxes."""
    if "gallery_ids" in query:
        images, masks = [], []
        for image_id, gt in zip(query["gallery_ids"], query["gallery_boxes"]):
            record = gallery_dicts[gallery_index[image_id]]
            mask = np.zeros(len(record["annotations"]), dtype=bool)
            if not np.isnan(gt).any() and len(mask):
                boxes = torch.tensor([a["bbox"] for a in record["annotations"]],
                                     dtype=torch.float32)
                iou = box_iou(torch.as_tensor(gt, dtype=torch.float32)[None], boxes)[0]
                if iou.max() >= 0.5:
                    mask[int(iou.argmax())] = True
            images.append(gallery_index[image_id])
            masks.append(mask)
        return images, masks
    images = [i for i, d in enumerate(gallery_dicts) if d["image_id"] != query["image_id"]]
    masks = [np.array([a["pid"] == query["pid"] for a in gallery_dicts[i]["annotations"]],
                      dtype=bool) for i in images]
    return images, masks


def retrieval_metrics(query_embs, queries, gallery_embs, gallery_dicts) -> dict:
    """mAP and top-1 of each query's embedding against its gallery's box embeddings.

    `gallery_embs[i]` holds the embeddings of gallery image i's boxes in annotation order.
    Queries without any positive in their gallery are left out and counted.
    """
    gallery_index = {d["image_id"]: i for i, d in enumerate(gallery_dicts)}
    aps, top1, skipped = [], [], 0
    for q_emb, query in zip(query_embs, queries):
        images, masks = _candidates(query, gallery_index, gallery_dicts)
        positive = np.concatenate(masks) if masks else np.zeros(0, dtype=bool)
        if not positive.any():
            skipped += 1
            continue
        scores = np.concatenate([gallery_embs[i] for i in images]) @ q_emb
        aps.append(average_precision(scores, positive))
        top1.append(float(positive[int(np.argmax(scores))]))
    if skipped:
        logger.warning("teacher retrieval: %d of %d queries have no positive and were skipped",
                       skipped, len(queries))
    return {"teacher/mAP": float(np.mean(aps)) if aps else 0.0,
            "teacher/top1": float(np.mean(top1)) if top1 else 0.0,
            "teacher/num_queries": float(len(aps))}


def evaluate_teacher(network, queries, gallery_dicts, size, device="cpu",
                     num_workers: int = 0) -> dict:
    """Embed the query boxes and every gallery box with the teacher, then rank (mAP, top-1)."""
    query_jobs = [(q["file_name"], [q["bbox"]]) for q in queries]
    query_embs = [e[0] for e in embed_boxes(network, query_jobs, size, device,
                                            num_workers=num_workers, desc="teacher queries")]
    gallery_embs = embed_boxes(network, dataset_jobs(gallery_dicts), size, device,
                               num_workers=num_workers, desc="teacher gallery")
    metrics = retrieval_metrics(query_embs, queries, gallery_embs, gallery_dicts)
    logger.info("teacher retrieval on ground-truth crops: mAP %.4f, top-1 %.4f (%d queries)",
                metrics["teacher/mAP"], metrics["teacher/top1"], metrics["teacher/num_queries"])
    return metrics
