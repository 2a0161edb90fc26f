"""Dataset catalog: a name in `DATASETS.TRAIN` / `DATASETS.TEST` -> dataset dicts or a search split.

Each dataset registers once, in its own module, with `register_dataset(name, folder, protocol)`:
that gives the names `<name>_train` and `<name>_test`, read from `<datasets root>/<folder>` by
the `SearchProtocol`, which also tells the evaluation how the test split is scored. The datasets
root is `DATASETS.ROOT`, else `$PSDIFF_DATASETS`, else `./datasets`; it holds `CUHK-SYSU/` and
`PRW/` (and `synthetic/CUHK-SYSU/`, `synthetic/PRW/` written by `tools/make_synthetic.py`);
`datasets/README.md` shows the trees.
"""

import os
from dataclasses import dataclass

from psdiff.utils.errors import PsdiffError

from .protocol import SearchProtocol


@dataclass(frozen=True)
class _Entry:
    """Where a catalog name lives and how to read it."""

    protocol: SearchProtocol  # the on-disk format and the evaluation protocol
    folder: str  # the dataset folder under the datasets root
    kind: str  # "train" (dataset dicts) or "test" (gallery + queries)
    missing_hint: str  # said when the folder does not exist ("" = the loader reports it)


_CATALOG = {}  # catalog name -> _Entry
_PROTOCOLS = {}  # protocol name -> SearchProtocol


@dataclass
class SearchSplit:
    """A person-search test set: gallery dataset dicts and query dicts (docs/architecture.md)."""

    name: str
    protocol: str  # the registered protocol's name, e.g. "cuhk_sysu" or "prw"
    gallery: list
    queries: list
    gallery_size: int = 100  # the size the queries' galleries were loaded at (the headline's)


def register_dataset(name: str, folder: str, protocol: SearchProtocol,
                     missing_hint: str = "") -> None:
    """Make `<name>_train` and `<name>_test` catalog names read from `<root>/<folder>` by
    `protocol`. `missing_hint` tells how to make a folder that does not exist (e.g. the tool
    that writes it; `{parent}` is replaced by the folder's parent)."""
    if _PROTOCOLS.setdefault(protocol.name, protocol) is not protocol:
        raise ValueError(f"another search protocol is already registered as {protocol.name!r}")
    for kind in ("train", "test"):
        key = f"{name}_{kind}"
        if key in _CATALOG:
            raise ValueError(f"dataset {key!r} is already registered")
        _CATALOG[key] = _Entry(protocol, folder, kind, missing_hint)


def get_protocol(name: str) -> SearchProtocol:
    """The search protocol registered as `name` ("cuhk_sysu", "prw", ...)."""
    if name not in _PROTOCOLS:
        raise PsdiffError(f"unknown search protocol '{name}' ({', '.join(sorted(_PROTOCOLS))})")
    return _PROTOCOLS[name]


def list_datasets() -> list:
    """Every catalog name."""
    return sorted(_CATALOG)


def resolve_root(cfg_root: str) -> str:
    """The datasets root: the config value, else `$PSDIFF_DATASETS`, else `./datasets`."""
    return cfg_root or os.environ.get("PSDIFF_DATASETS") or "./datasets"


def _lookup(name: str, kind: str = None) -> _Entry:
    """The catalog entry of `name`, which must be of `kind` ("train" or "test") if given."""
    if name not in _CATALOG:
        raise PsdiffError(f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")
    entry = _CATALOG[name]
    if kind is not None and entry.kind != kind:
        valid = ", ".join(n for n in list_datasets() if _CATALOG[n].kind == kind)
        raise PsdiffError(f"dataset {name!r} is a {entry.kind} set; use one of: {valid}")
    return entry


def dataset_folder(name: str, root: str) -> str:
    """The folder a catalog name is read from, e.g. `<root>/CUHK-SYSU`."""
    return os.path.join(root, _lookup(name).folder)


def _load(entry: _Entry, folder: str, split: str, gallery_size: int) -> list:
    """Run the entry's loader on one split."""
    if not os.path.isdir(folder) and entry.missing_hint:
        hint = entry.missing_hint.format(parent=os.path.dirname(folder))
        raise PsdiffError(f"dataset folder {folder} does not exist; {hint}")
    return entry.protocol.load(folder, split, gallery_size)


def get_train_dicts(name: str, root: str) -> list:
    """Dataset dicts of a training set, e.g. `get_train_dicts("prw_train", "./datasets")`."""
    entry = _lookup(name, "train")
    return _load(entry, dataset_folder(name, root), "train", gallery_size=100)


def get_search_split(name: str, root: str, gallery_size: int = 100) -> SearchSplit:
    """Gallery and queries of a test set; `gallery_size` picks the queries' galleries where the
    dataset has several (CUHK-SYSU's TestG<N>, -1 = the whole pool) and is ignored otherwise.
    A tree without that size falls back as its protocol says (`headline_gallery_size`)."""
    entry = _lookup(name, "test")
    folder = dataset_folder(name, root)
    gallery_size = entry.protocol.headline_gallery_size(folder, gallery_size)
    gallery = _load(entry, folder, "gallery", gallery_size)
    queries = _load(entry, folder, "query", gallery_size)
    return SearchSplit(name=name, protocol=entry.protocol.name, gallery=gallery, queries=queries,
                       gallery_size=gallery_size)
