"""Data: the dataset catalog and its registered datasets, the dataset-dict -> model-input mapper,
the loaders, and PSDiff's teacher targets e0 attached to the training dicts."""

from . import datasets, synthetic  # noqa: F401  (register the built-in datasets)
from .build import build_test_loader, build_train_loader
from .catalog import (
    SearchSplit,
    get_protocol,
    get_search_split,
    get_train_dicts,
    list_datasets,
    register_dataset,
    resolve_root,
)
from .mapper import DatasetMapper
from .protocol import QueryGallery, SearchProtocol

__all__ = [
    "DatasetMapper",
    "QueryGallery",
    "SearchProtocol",
    "SearchSplit",
    "build_test_loader",
    "build_train_loader",
    "get_protocol",
    "get_search_split",
    "get_train_dicts",
    "list_datasets",
    "register_dataset",
    "resolve_root",
]
