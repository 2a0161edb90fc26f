"""What a person-search dataset registers besides its folder: how its splits are read and how
its queries are scored (docs/datasets-and-evaluation.md).

A dataset module subclasses `SearchProtocol` and registers it with `catalog.register_dataset`
(Detectron2's DatasetCatalog, with the protocol in the role of MetadataCatalog's
`evaluator_type`). The evaluation code is generic: it asks the protocol, per test split, which
search settings to report and, per query, which gallery images to rank (`QueryGallery`), and
ranks them all the same way. A new dataset is therefore one new module.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class QueryGallery:
    """The gallery of one query, in protocol order.

    `images` indexes the gallery image list (an image may be listed twice); `gt_boxes` [n,4]
    is the query person's box xyxy in that image, a NaN row where the person is absent.
    """

    images: np.ndarray
    gt_boxes: np.ndarray


def gallery_size_key(size: int) -> str:
    """The metric prefix of gallery size N: `search@N`, or `search@all` for the whole pool (-1)."""
    return "search@all" if size == -1 else f"search@{size}"


class SearchProtocol:
    """How one dataset format is read and scored; `name` is what its SearchSplits carry."""

    name = ""

    def load(self, folder: str, split: str, gallery_size: int) -> list:
        """Dataset dicts of "train" / "gallery", or query dicts of "query", read from `folder`;
        `gallery_size` picks the queries' galleries where the dataset has several."""
        raise NotImplementedError

    def query_galleries(self, gallery: list, queries: list,
                        ignore_cam_id: bool = True) -> Callable[[int], QueryGallery]:
        """`i -> QueryGallery`: the gallery images query i is ranked against and where its
        person is in each. `ignore_cam_id` False keeps only other cameras, where that applies."""
        raise NotImplementedError

    def search_settings(self, queries: list, load_queries: Optional[Callable[[int], list]],
                        gallery_size: int, gallery_sizes) -> list:
        """`[(metric prefixes, queries)]`: the search evaluations of a test split whose
        headline queries are `queries`. By default one, reported as `search/...`; a dataset
        with several gallery sizes adds one per size (`load_queries(N)` gives its queries)."""
        return [(("search",), queries)]

    def headline_gallery_size(self, folder: str, requested: int) -> int:
        """The gallery size the headline `search/...` metrics are scored at: `requested`
        (TEST.GALLERY_SIZE) where the tree at `folder` supports it, as every tree does by
        default."""
        return requested

    def supported_gallery_sizes(self, folder: str, requested) -> list:
        """The `requested` gallery sizes the tree at `folder` can be scored at (by default all;
        a dataset without gallery sizes ignores them)."""
        return list(requested)
