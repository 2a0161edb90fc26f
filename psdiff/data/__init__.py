"""Data: dataset readers and catalog, the dataset-dict -> model-input mapper, and loaders."""

from .build import build_test_loader, build_train_loader
from .catalog import (
    SearchSplit,
    get_search_split,
    get_train_dicts,
    list_datasets,
    resolve_root,
)
from .mapper import DatasetMapper

__all__ = [
    "DatasetMapper",
    "SearchSplit",
    "build_test_loader",
    "build_train_loader",
    "get_search_split",
    "get_train_dicts",
    "list_datasets",
    "resolve_root",
]
