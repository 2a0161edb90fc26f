"""Every metric of a dataset's protocol from a predictions file (docs/architecture.md, Metric keys).

Keys: `search/mAP`, `search/top1`, `search/top5`, `search/top10` (headline: CUHK-SYSU gallery
`gallery_size`, PRW with the configured camera rule); `search@{N}/...` for each CUHK-SYSU
gallery size N (`search@all/...` for the whole pool); `det/AP`, `det/recall` and the labeled-only
`det_labeled/AP`, `det_labeled/recall`. Values are fractions in [0, 1], except
`.../queries_without_gt`: the number of queries whose gallery holds no ground truth (their AP is
0; the reference would crash on them).
"""

import logging
import time
from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np

from psdiff.data import get_protocol, resolve_root
from psdiff.data.catalog import dataset_folder
from psdiff.utils.errors import PsdiffError

from .detection import eval_detection
from .predictions import GalleryRows, Predictions
from .ranking import rank_queries

logger = logging.getLogger(__name__)


def _sides(predictions: Predictions, dataset_name: str) -> tuple:
    """How error lines name the two sides: the dataset the predictions were made on (their
    meta) and the dataset they are scored against."""
    made_on = predictions.meta.get("dataset")
    return (f"the predictions of {made_on!r}" if made_on else "the predictions",
            f"dataset {dataset_name!r}" if dataset_name else "the dataset")


def align_gallery(predictions: Predictions, gallery: list, dataset_name: str = "") -> GalleryRows:
    """The file's gallery detections reordered to the dataset's gallery list (names must match)."""
    names = [record["image_id"] for record in gallery]
    if len(names) != len(predictions.gallery_names) or set(names) != set(
            predictions.gallery_names.tolist()):
        missing = sorted(set(names) - set(predictions.gallery_names.tolist()))[:3]
        ours, theirs = _sides(predictions, dataset_name)
        raise PsdiffError(
            f"{ours} hold {len(predictions.gallery_names)} gallery images, {theirs} has "
            f"{len(names)}; e.g. missing from the predictions: {missing}")
    rows = predictions.gallery
    if list(predictions.gallery_names) == names:
        return rows
    position = {name: i for i, name in enumerate(predictions.gallery_names.tolist())}
    return rows.take_images(np.asarray([position[n] for n in names], dtype=np.int64))


def check_queries(predictions: Predictions, queries: list, dataset_name: str = "") -> None:
    """The file's queries are the dataset's, in the same order (same images, same boxes)."""
    ours, theirs = _sides(predictions, dataset_name)
    if len(queries) != len(predictions.query_names):
        raise PsdiffError(f"{ours} hold {len(predictions.query_names)} queries, {theirs} has "
                          f"{len(queries)}: score them on the dataset they were made on")
    for i, query in enumerate(queries):
        if (predictions.query_names[i] != query["image_id"]
                or not np.allclose(predictions.query_boxes[i], query["bbox"], atol=1e-3)):
            raise PsdiffError(
                f"query {i} is {predictions.query_names[i]} {predictions.query_boxes[i].tolist()}"
                f" in {ours} but {query['image_id']} {list(query['bbox'])} in {theirs}")


def search_rows(rows: GalleryRows, det_thresh: float, cws: bool) -> GalleryRows:
    """Detections that enter the ranking: score >= det_thresh in float32; with
    CWS each embedding is scaled by its detection score, so sim = cos x score (protocol:
    docs/datasets-and-evaluation.md §3.6, §3.7)."""
    kept = rows.filter(rows.scores >= np.float32(det_thresh))
    if cws:
        kept.embeddings = kept.embeddings * kept.scores[:, None]
    return kept


def compute_metrics(predictions: Predictions, protocol: str, gallery: list, queries: list,
                    load_queries: Optional[Callable[[int], list]] = None,
                    gallery_sizes: Sequence[int] = (), gallery_size: int = 100,
                    det_thresh_search: float = 0.5, det_thresh_detection: float = 0.01,
                    ignore_cam_id: bool = True, cws: bool = False,
                    dataset_name: str = "") -> dict:
    """The flat metrics dict of `predictions` on a split, under the search protocol registered
    as `protocol` ("cuhk_sysu", "prw", ...; psdiff/data/protocol.py).

    `queries` is the headline query list (CUHK-SYSU: loaded at `gallery_size`); where the
    protocol scores several gallery sizes, `load_queries(N)` loads the queries of size N.
    `dataset_name` names the split in the error lines of a file that does not fit it.
    """
    search = get_protocol(protocol)
    start = time.perf_counter()
    check_queries(predictions, queries, dataset_name)
    rows = align_gallery(predictions, gallery, dataset_name)
    metrics = {}
    for prefix, labeled_only in (("det", False), ("det_labeled", True)):
        result = eval_detection(gallery, rows, det_thresh_detection, labeled_only=labeled_only)
        metrics[f"{prefix}/AP"], metrics[f"{prefix}/recall"] = result["AP"], result["recall"]

    ranked = search_rows(rows, det_thresh_search, cws)
    for prefixes, setting_queries in search.search_settings(queries, load_queries, gallery_size,
                                                           gallery_sizes):
        if setting_queries is not queries:
            check_queries(predictions, setting_queries, dataset_name)
        galleries = search.query_galleries(gallery, setting_queries, ignore_cam_id)
        result = rank_queries(ranked, predictions.query_embeddings, galleries,
                              len(setting_queries))
        for prefix in prefixes:
            metrics.update(result.summary(prefix))
    if metrics["search/queries_without_gt"]:
        logger.warning("%d queries have no ground truth in their gallery (AP 0 for them)",
                       int(metrics["search/queries_without_gt"]))
    logger.info("metrics computed in %.1f s", time.perf_counter() - start)
    return metrics


def metrics_from_cfg(cfg, predictions: Predictions, split) -> dict:
    """`compute_metrics` with the protocol settings of `cfg.TEST`, on a catalog `SearchSplit`
    (its queries were loaded at `split.gallery_size`: TEST.GALLERY_SIZE, or the size the tree
    fell back to). Gallery sizes of `TEST.GALLERY_SIZES`
    the tree cannot be scored at (small synthetic sets) are skipped with a warning."""
    search = get_protocol(split.protocol)
    folder = dataset_folder(split.name, resolve_root(cfg.DATASETS.ROOT))
    return compute_metrics(
        predictions, split.protocol, split.gallery, split.queries,
        load_queries=lambda size: search.load(folder, "query", size),
        gallery_sizes=search.supported_gallery_sizes(folder, cfg.TEST.GALLERY_SIZES),
        gallery_size=split.gallery_size,
        det_thresh_search=cfg.TEST.DET_THRESH_SEARCH,
        det_thresh_detection=cfg.TEST.DET_THRESH_DETECTION,
        ignore_cam_id=cfg.TEST.IGNORE_CAM_ID, cws=cfg.TEST.CWS, dataset_name=split.name,
    )
