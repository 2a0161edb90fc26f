"""Person-search protocols: which gallery images each query is ranked against, where its person is.

- CUHK-SYSU (datasets-and-evaluation.md 3.2): the protocol file lists each query's gallery
  (the query image is never listed); the loader gives it as `gallery_ids` + `gallery_boxes`
  (NaN row = an image without the person). The whole-pool size (-1) is TestG50's list followed
  by every other pool image except the query image, done as NAE4PS does (the SeqNet/COAT branch
  is broken, section 3.2.8).
- PRW (section 3.3): the gallery is every test frame except the query frame; with
  `ignore_cam_id=False` only frames of other cameras. The positives are the gallery frames
  holding the query pid, with the first box of that pid as ground truth.

Both hand `ranking.rank_queries` a `QueryGallery` per query.
"""

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from psdiff.utils.errors import PsdiffError

from .predictions import GalleryRows
from .ranking import TOPK, QueryGallery, SearchResult, rank_queries


def cuhk_gallery_fn(gallery_names: Sequence[str], queries: list):
    """`i -> QueryGallery` for CUHK-SYSU queries that carry `gallery_ids` / `gallery_boxes`.

    The query image is dropped should a list name it: it is never part of its own gallery.
    """
    index = {name: i for i, name in enumerate(gallery_names)}

    def gallery(i: int) -> QueryGallery:
        """Query i's listed images (its own image dropped) and GT boxes."""
        query = queries[i]
        try:
            images = np.fromiter((index[n] for n in query["gallery_ids"]), np.int64)
        except KeyError as e:
            raise PsdiffError(f"query {i} ({query['image_id']}) lists gallery image {e} "
                              "that is not in the gallery split")
        keep = images != index.get(query["image_id"], -1)
        gt_boxes = np.asarray(query["gallery_boxes"], np.float64).reshape(-1, 4)
        return QueryGallery(images[keep], gt_boxes[keep])

    return gallery


def prw_gallery_fn(gallery: list, queries: list, ignore_cam_id: bool = True):
    """`i -> QueryGallery` for PRW: all test frames but the query frame (or other cameras only)."""
    index = {record["image_id"]: i for i, record in enumerate(gallery)}
    cams = np.asarray([record.get("cam_id", -1) for record in gallery])
    occurrences = defaultdict(list)  # pid -> [(frame index, first box of the pid there)]
    for i, record in enumerate(gallery):
        seen = set()
        for a in record["annotations"]:
            if a["pid"] != -1 and a["pid"] not in seen:
                seen.add(a["pid"])
                occurrences[a["pid"]].append((i, a["bbox"]))

    def query_gallery(i: int) -> QueryGallery:
        """Every frame but the query frame (camera rule applied), with the pid's boxes."""
        query = queries[i]
        keep = np.arange(len(gallery)) != index.get(query["image_id"], -1)
        if not ignore_cam_id:
            keep &= cams != query["cam_id"]
        gt_boxes = np.full((len(gallery), 4), np.nan)
        for frame, box in occurrences.get(query["pid"], []):
            gt_boxes[frame] = box
        images = np.flatnonzero(keep)
        return QueryGallery(images, gt_boxes[images])

    return query_gallery


def eval_search_cuhk(rows: GalleryRows, query_embeddings: np.ndarray, gallery_names: Sequence[str],
                     queries: list, topk: Sequence[int] = TOPK) -> SearchResult:
    """CUHK-SYSU search metrics of `queries` (one gallery size) over `rows` (aligned with names)."""
    return rank_queries(rows, query_embeddings, cuhk_gallery_fn(gallery_names, queries),
                        len(queries), topk)


def eval_search_prw(rows: GalleryRows, query_embeddings: np.ndarray, gallery: list,
                    queries: list, ignore_cam_id: bool = True,
                    topk: Sequence[int] = TOPK) -> SearchResult:
    """PRW search metrics of `queries` over `rows` (aligned with the `gallery` dicts)."""
    return rank_queries(rows, query_embeddings, prw_gallery_fn(gallery, queries, ignore_cam_id),
                        len(queries), topk)


def query_gallery_fn(protocol: str, gallery: list, queries: list, ignore_cam_id: bool = True):
    """`i -> QueryGallery` of either protocol ("cuhk_sysu" or "prw")."""
    if protocol == "prw":
        return prw_gallery_fn(gallery, queries, ignore_cam_id)
    return cuhk_gallery_fn([r["image_id"] for r in gallery], queries)
