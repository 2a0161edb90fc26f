"""Search metrics of queries against their galleries, under their dataset's registered protocol.

Which gallery images each query is ranked against, and where its person is in each, is the
dataset's `SearchProtocol.query_galleries` (psdiff/data/protocol.py; CUHK-SYSU: the protocol
file's list, PRW: every other frame, docs/datasets-and-evaluation.md); the ranking and scoring
are the same for every dataset (`ranking.rank_queries`).
"""

from collections.abc import Sequence

import numpy as np

from psdiff.data import get_protocol

from .predictions import GalleryRows
from .ranking import TOPK, SearchResult, rank_queries


def eval_search(rows: GalleryRows, query_embeddings: np.ndarray, protocol: str, gallery: list,
                queries: list, ignore_cam_id: bool = True,
                topk: Sequence[int] = TOPK) -> SearchResult:
    """Search metrics of `queries` over `rows` (aligned with the `gallery` dicts) under the
    search protocol registered as `protocol`."""
    galleries = get_protocol(protocol).query_galleries(gallery, queries, ignore_cam_id)
    return rank_queries(rows, query_embeddings, galleries, len(queries), topk)
