"""The teacher's own evaluation: PSDiff's search protocol with ground-truth boxes as detections.

Every ground-truth box of every gallery image becomes a detection scored 1 carrying the teacher's
embedding of its crop, and each query box the teacher's embedding of its crop. These
`Predictions` are scored by the evaluation package (`compute_metrics`) exactly as PSDiff's are:
the same galleries (CUHK-SYSU: the query's list at `TEACHER.GALLERY_SIZE`; PRW: the frames
`TEST.IGNORE_CAM_ID` leaves), the same AP (tied similarities form one threshold) and a query
whose gallery holds no ground truth scores AP 0. No person is missed, so `teacher/mAP` is the
ceiling of PSDiff's `search/mAP` at the same setting (docs/teacher.md), and a weak teacher
shows before it is distilled.
"""

import logging

import numpy as np

from psdiff.data.catalog import get_search_split, resolve_root
from psdiff.evaluation import Predictions, compute_metrics

from .inference import dataset_jobs, embed_boxes

logger = logging.getLogger(__name__)


def ground_truth_predictions(split, query_embeddings: np.ndarray,
                             gallery_embeddings: list) -> Predictions:
    """The split's ground truth as a search evaluation's predictions: gallery image i's boxes
    (annotation order, score 1) with `gallery_embeddings[i]` [n_i, D], and the query boxes with
    `query_embeddings` [Q, D]."""
    outputs = [{"boxes": [a["bbox"] for a in record["annotations"]],
                "scores": np.ones(len(record["annotations"])), "embeddings": embeddings}
               for record, embeddings in zip(split.gallery, gallery_embeddings)]
    return Predictions.from_outputs(
        [record["image_id"] for record in split.gallery], outputs,
        [query["image_id"] for query in split.queries], [query["bbox"] for query in split.queries],
        query_embeddings, meta={"dataset": split.name})


def teacher_metrics(predictions: Predictions, split, gallery_size: int,
                    ignore_cam_id: bool) -> dict:
    """The headline search metrics of `predictions` under the split's protocol, named
    `teacher/mAP`, `teacher/top1` (top5, top10), `teacher/queries_without_gt`, plus
    `teacher/num_queries` (every query is scored)."""
    metrics = compute_metrics(predictions, split.protocol, split.gallery, split.queries,
                              gallery_size=gallery_size, ignore_cam_id=ignore_cam_id,
                              dataset_name=split.name)
    renamed = {f"teacher/{key.split('/', 1)[1]}": value for key, value in metrics.items()
               if key.startswith("search/")}
    renamed["teacher/num_queries"] = float(len(split.queries))
    return renamed


def evaluate_teacher(network, cfg, dataset_name: str) -> dict:
    """Embed every gallery box and every query box of a test set with the teacher and score
    them by the search protocol (`teacher_metrics`)."""
    split = get_search_split(dataset_name, resolve_root(cfg.DATASETS.ROOT),
                             cfg.TEACHER.GALLERY_SIZE)
    size, device = cfg.TEACHER.INPUT_SIZE, cfg.MODEL.DEVICE
    workers = cfg.DATALOADER.NUM_WORKERS
    query_jobs = [(query["file_name"], [query["bbox"]]) for query in split.queries]
    per_query = embed_boxes(network, query_jobs, size, device, num_workers=workers,
                            desc="teacher queries")  # one [1, D] array per query
    gallery_embeddings = embed_boxes(network, dataset_jobs(split.gallery), size, device,
                                     num_workers=workers, desc="teacher gallery")
    query_embeddings = np.concatenate(per_query + [np.zeros((0, network.emb_dim), np.float32)])
    predictions = ground_truth_predictions(split, query_embeddings, gallery_embeddings)
    metrics = teacher_metrics(predictions, split, split.gallery_size, cfg.TEST.IGNORE_CAM_ID)
    logger.info("teacher on ground-truth boxes, search protocol: mAP %.4f, top-1 %.4f "
                "(%d queries)", metrics["teacher/mAP"], metrics["teacher/top1"],
                len(split.queries))
    return metrics
