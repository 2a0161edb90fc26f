"""Dataset catalog: a name in `DATASETS.TRAIN` / `DATASETS.TEST` -> dataset dicts or a search split.

Names resolve under the datasets root (`DATASETS.ROOT`, else `$PSDIFF_DATASETS`, else
`./datasets`), which holds `CUHK-SYSU/` and `PRW/` (and `synthetic/CUHK-SYSU/`,
`synthetic/PRW/` written by `tools/make_synthetic.py`); `datasets/README.md` shows the trees.
"""

import os
from dataclasses import dataclass

from psdiff.utils.errors import PsdiffError

from .datasets import load_cuhk_sysu, load_prw


@dataclass(frozen=True)
class _Entry:
    """Where a catalog name lives and how to read it."""

    protocol: str  # "cuhk_sysu" | "prw": the on-disk format and the evaluation protocol
    folder: str  # the dataset folder under the datasets root
    kind: str  # "train" (dataset dicts) or "test" (gallery + queries)


_SYNTHETIC_CUHK = os.path.join("synthetic", "CUHK-SYSU")
_SYNTHETIC_PRW = os.path.join("synthetic", "PRW")
_CATALOG = {
    "cuhk_sysu_train": _Entry("cuhk_sysu", "CUHK-SYSU", "train"),
    "cuhk_sysu_test": _Entry("cuhk_sysu", "CUHK-SYSU", "test"),
    "prw_train": _Entry("prw", "PRW", "train"),
    "prw_test": _Entry("prw", "PRW", "test"),
    "synthetic_cuhk_sysu_train": _Entry("cuhk_sysu", _SYNTHETIC_CUHK, "train"),
    "synthetic_cuhk_sysu_test": _Entry("cuhk_sysu", _SYNTHETIC_CUHK, "test"),
    "synthetic_prw_train": _Entry("prw", _SYNTHETIC_PRW, "train"),
    "synthetic_prw_test": _Entry("prw", _SYNTHETIC_PRW, "test"),
}


@dataclass
class SearchSplit:
    """A person-search test set: gallery dataset dicts and query dicts (see design.md)."""

    name: str
    protocol: str  # "cuhk_sysu" | "prw"
    gallery: list
    queries: list


def list_datasets() -> list:
    """Every catalog name."""
    return sorted(_CATALOG)


def resolve_root(cfg_root: str) -> str:
    """The datasets root: the config value, else `$PSDIFF_DATASETS`, else `./datasets`."""
    return cfg_root or os.environ.get("PSDIFF_DATASETS") or "./datasets"


def _lookup(name: str, kind: str) -> _Entry:
    """The catalog entry of `name`, which must be of `kind` ("train" or "test")."""
    if name not in _CATALOG:
        raise PsdiffError(f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")
    entry = _CATALOG[name]
    if entry.kind != kind:
        valid = ", ".join(n for n in list_datasets() if _CATALOG[n].kind == kind)
        raise PsdiffError(f"dataset {name!r} is a {entry.kind} set; use one of: {valid}")
    return entry


def dataset_folder(name: str, root: str) -> str:
    """The folder a catalog name is read from, e.g. `<root>/CUHK-SYSU`."""
    if name not in _CATALOG:
        raise PsdiffError(f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")
    return os.path.join(root, _CATALOG[name].folder)


def _load(entry: _Entry, folder: str, split: str, gallery_size: int) -> list:
    """Run the entry's loader on one split."""
    if not os.path.isdir(folder) and entry.folder.startswith("synthetic"):
        parent = os.path.dirname(folder)
        raise PsdiffError(
            f"synthetic dataset {folder} does not exist; write it with "
            f"`python tools/make_synthetic.py --root {parent}` (see datasets/README.md)"
        )
    if entry.protocol == "cuhk_sysu":
        return load_cuhk_sysu(folder, split, gallery_size)
    return load_prw(folder, split)


def get_train_dicts(name: str, root: str) -> list:
    """Dataset dicts of a training set, e.g. `get_train_dicts("prw_train", "./datasets")`."""
    entry = _lookup(name, "train")
    return _load(entry, dataset_folder(name, root), "train", gallery_size=100)


def get_search_split(name: str, root: str, gallery_size: int = 100) -> SearchSplit:
    """Gallery and queries of a test set; `gallery_size` picks CUHK-SYSU's TestG<N> (-1 = the
    whole pool) and is ignored for PRW."""
    entry = _lookup(name, "test")
    folder = dataset_folder(name, root)
    gallery = _load(entry, folder, "gallery", gallery_size)
    queries = _load(entry, folder, "query", gallery_size)
    return SearchSplit(name=name, protocol=entry.protocol, gallery=gallery, queries=queries)

