"""Ranking queries against their galleries: AP and top-k exactly as the reference protocol scores.

One engine serves every search protocol (CUHK-SYSU at each gallery size, PRW with either camera
rule): a protocol only says, per query, which gallery images to rank and where the query person
is in each (docs/datasets-and-evaluation.md §3.3-3.5). For each query:

- every detection of every listed image (listed twice: ranked once) is scored by its dot
  product with the query embedding;
- in an image holding the query person, the highest-similarity detection whose IoU with the
  (int32) ground truth reaches `min(0.5, wh / ((w+10)(h+10)))` is the single positive;
- AP = average_precision(labels, sims) x found / count_gt, where count_gt counts every listed
  entry that holds the person (recall scaling); top-k = a positive among the k
  highest similarities.

Similarities are float32 (as the reference's), computed in float64 and rounded once, so they do
not depend on how queries are chunked. Speed: they are computed image by image for all the
queries that list the image (one matmul per image and chunk of queries) and scattered into one
flat array per chunk, so each query's scores are a contiguous slice and no embedding is copied
per query.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
from tqdm import tqdm

from psdiff.data.protocol import QueryGallery

from .predictions import GalleryRows

TOPK = (1, 5, 10)  # the ranks the reference reports


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """sklearn's `average_precision_score` in numpy: sum over score thresholds of dR x P.

    Tied scores form one threshold (so AP does not depend on the order of ties); comparisons
    run in the dtype of `y_score`. Returns 0 when there is no positive.
    """
    y_true = np.asarray(y_true, dtype=bool)
    y_score = np.asarray(y_score)
    if not y_true.any():
        return 0.0
    order = np.argsort(y_score, kind="mergesort")[::-1]
    y_score, y_true = y_score[order], y_true[order]
    last_of_threshold = np.r_[np.flatnonzero(np.diff(y_score)), len(y_score) - 1]
    tps = np.cumsum(y_true)[last_of_threshold]
    precision = tps / (last_of_threshold + 1)
    recall_step = np.diff(np.r_[0, tps]) / tps[-1]
    return float(np.sum(recall_step * precision))


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU [n,m] of xyxy boxes [n,4] and [m,4] (continuous, no +1), in float64."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(1, -1, 4)
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area_a + area_b - inter)


def size_aware_iou_threshold(gt: np.ndarray) -> float:
    """`min(0.5, wh / ((w+10)(h+10)))` of an int32 xyxy box: small people get a looser IoU."""
    w, h = int(gt[2]) - int(gt[0]), int(gt[3]) - int(gt[1])
    return min(0.5, (w * h) / ((w + 10) * (h + 10)))


@dataclass
class RankedQuery:
    """One query's ranking: similarities of all its gallery rows and which rows are positives.

    `scores` lists the rows image by image in gallery order (first listing), detections in their
    stored order; `images[k]` owns `scores[starts[k]:starts[k+1]]`. `positives` are positions in
    `scores`, ascending.
    """

    scores: np.ndarray
    images: np.ndarray
    starts: np.ndarray
    positives: np.ndarray
    count_gt: int

    def ap(self) -> float:
        """Recall-scaled AP: sum over positives of precision at their score, / count_gt.

        Equal to sklearn's AP over the found positives times found / count_gt (protocol §3.3).
        """
        if len(self.positives) == 0:
            return 0.0
        pos = self.scores[self.positives]
        ranked_above = (self.scores[None, :] >= pos[:, None]).sum(axis=1)
        positives_above = (pos[None, :] >= pos[:, None]).sum(axis=1)
        return float(np.sum(positives_above / ranked_above) / self.count_gt)

    def first_positive_rank(self) -> Optional[int]:
        """0-based rank of the best positive (None if no positive was found).

        Ranks follow a stable sort by decreasing similarity: ties keep gallery order. The
        reference's unstable `argsort` leaves tie order to the platform; this rule is fixed.
        """
        if len(self.positives) == 0:
            return None
        pos = self.scores[self.positives]
        best = self.positives[np.argmax(pos)]  # argmax: the earliest of tied best positives
        top = self.scores[best]
        return int(np.count_nonzero(self.scores > top)
                   + np.count_nonzero(self.scores[:best] == top))

    def top_rows(self, k: int) -> np.ndarray:
        """Positions in `scores` of the k best rows, best first (same tie rule as the rank)."""
        return np.argsort(-self.scores, kind="stable")[:k]


@dataclass
class SearchResult:
    """Per-query AP and top-k hits of a search evaluation, and their averages."""

    ap: np.ndarray  # float64[Q]
    hits: np.ndarray  # bool[Q, len(topk)]
    count_gt: np.ndarray  # int64[Q], listed entries holding the query person
    count_tp: np.ndarray  # int64[Q], positives found
    topk: tuple = TOPK

    def summary(self, prefix: str) -> dict:
        """`{prefix}/mAP`, `{prefix}/top{k}` (fractions), `{prefix}/queries_without_gt` (count)."""
        num = max(len(self.ap), 1)
        metrics = {f"{prefix}/mAP": float(self.ap.sum() / num)}
        for i, k in enumerate(self.topk):
            metrics[f"{prefix}/top{k}"] = float(self.hits[:, i].sum() / num)
        metrics[f"{prefix}/queries_without_gt"] = float(np.count_nonzero(self.count_gt == 0))
        return metrics


def _prepare(gallery: QueryGallery, counts: np.ndarray):
    """Unique listed images that have detections (first listing order), their GT, and count_gt."""
    images = np.asarray(gallery.images, dtype=np.int64)
    gt_boxes = np.asarray(gallery.gt_boxes, dtype=np.float64).reshape(-1, 4)
    count_gt = int(np.count_nonzero(~np.isnan(gt_boxes).any(axis=1)))
    _, first = np.unique(images, return_index=True)
    first.sort()
    first = first[counts[images[first]] > 0]
    return images[first], gt_boxes[first], count_gt


def _positive(rows: GalleryRows, image: int, sims: np.ndarray, gt: np.ndarray) -> int:
    """Index among the image's rows of its positive (-1 if none): the most similar detection
    passing the size-aware IoU with the int32 GT (the reference truncates GT boxes to int32)."""
    gt = gt.astype(np.int32)
    iou = box_iou(rows.boxes[rows.offsets[image]:rows.offsets[image + 1]], gt)[:, 0]
    passing = iou >= size_aware_iou_threshold(gt)
    if not passing.any():
        return -1
    return int(np.argmax(np.where(passing, sims, -np.inf)))


def iter_ranked(rows: GalleryRows, query_embeddings: np.ndarray,
                galleries: Callable[[int], QueryGallery], indices: Sequence[int],
                max_chunk_scores: int = 1 << 25) -> Iterator[tuple]:
    """Yield `(query index, RankedQuery)` for each of `indices`, in order.

    `rows` are the gallery detections that enter the ranking (already thresholded, CWS already
    applied to the embeddings); `galleries(i)` gives query i's gallery. Queries are processed in
    chunks holding at most about `max_chunk_scores` similarities.
    """
    counts = rows.counts
    chunk, chunk_rows = [], 0
    for i in indices:
        images, gt_boxes, count_gt = _prepare(galleries(i), counts)
        chunk.append((i, images, gt_boxes, count_gt))
        chunk_rows += int(counts[images].sum())
        if chunk_rows >= max_chunk_scores:
            yield from _rank_chunk(rows, query_embeddings, chunk)
            chunk, chunk_rows = [], 0
    if chunk:
        yield from _rank_chunk(rows, query_embeddings, chunk)


def _rank_chunk(rows: GalleryRows, query_embeddings: np.ndarray, chunk: list) -> Iterator[tuple]:
    """Similarities of a chunk of queries (one matmul per image), then each query's labels."""
    counts = rows.counts
    pair_image = np.concatenate([images for _, images, _, _ in chunk])
    pair_query = np.repeat(np.arange(len(chunk)), [len(images) for _, images, _, _ in chunk])
    pair_start = np.concatenate([[0], np.cumsum(counts[pair_image])])
    flat = np.empty(pair_start[-1], dtype=np.float32)
    # float32 inputs, float64 products and sums, rounded to float32 once: the similarities do
    # not depend on how queries are chunked (BLAS sums float32 in a shape-dependent order)
    chunk_queries = query_embeddings[[i for i, _, _, _ in chunk]].astype(np.float64)

    order = np.argsort(pair_image, kind="stable")
    bounds = np.flatnonzero(np.diff(pair_image[order])) + 1
    for group in np.split(order, bounds) if len(order) else []:
        image = pair_image[group[0]]
        emb = rows.embeddings[rows.offsets[image]:rows.offsets[image + 1]].astype(np.float64)
        sims = emb @ chunk_queries[pair_query[group]].T  # [n_det, queries listing this image]
        flat[pair_start[group][None, :] + np.arange(len(emb))[:, None]] = sims

    first_pair = 0
    for i, images, gt_boxes, count_gt in chunk:
        last_pair = first_pair + len(images)
        begin, end = pair_start[first_pair], pair_start[last_pair]
        scores = flat[begin:end]
        starts = pair_start[first_pair:last_pair + 1] - begin
        positives = []
        for k in np.flatnonzero(~np.isnan(gt_boxes).any(axis=1)):
            hit = _positive(rows, images[k], scores[starts[k]:starts[k + 1]], gt_boxes[k])
            if hit >= 0:
                positives.append(starts[k] + hit)
        yield i, RankedQuery(scores, images, starts, np.asarray(positives, np.int64), count_gt)
        first_pair = last_pair


def rank_queries(rows: GalleryRows, query_embeddings: np.ndarray,
                 galleries: Callable[[int], QueryGallery], num_queries: int,
                 topk: Sequence[int] = TOPK, max_chunk_scores: int = 1 << 25) -> SearchResult:
    """AP and top-k of queries 0..num_queries-1 (a query without GT gets AP 0, no hit)."""
    ap = np.zeros(num_queries)
    hits = np.zeros((num_queries, len(topk)), dtype=bool)
    count_gt = np.zeros(num_queries, dtype=np.int64)
    count_tp = np.zeros(num_queries, dtype=np.int64)
    ranking = iter_ranked(rows, query_embeddings, galleries, range(num_queries),
                          max_chunk_scores)
    for i, ranked in tqdm(ranking, total=num_queries, desc="ranking queries", disable=None,
                          leave=False, mininterval=2):
        ap[i] = ranked.ap()
        rank = ranked.first_positive_rank()
        hits[i] = rank is not None and rank < np.asarray(topk)
        count_gt[i], count_tp[i] = ranked.count_gt, len(ranked.positives)
    return SearchResult(ap, hits, count_gt, count_tp, tuple(topk))
