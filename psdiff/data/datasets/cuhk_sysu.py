"""CUHK-SYSU loader: the dataset's own MATLAB files -> psdiff dataset dicts and query dicts.

Reads exactly what the reference loaders (SeqNet, NAE4PS) read, the same way:
* boxes come from `annotation/Images.mat`, stored `[x, y, w, h]`; boxes with w <= 0 or h <= 0
  are dropped, the rest cast to int32 and converted with `x2 = x + w`, `y2 = y + h`;
* train images = all images minus `pool.mat`, sorted as strings; gallery = `pool.mat` order;
* pids: train person i of `Train.mat` (0-based) -> pid i + 1; test query i of the query protocol
  -> pid i + 1 for its query box and every gallery box listed for it; every other box -> -1
  (unlabeled). Boxes are matched to Images.mat boxes by exact int32 equality, as the reference does;
* queries are the `Query` entries of `TestG50.mat` in file order, each carrying its gallery for the
  requested size (see `load_cuhk_sysu`).

Struct fields are read by position, as the reference does, and every MATLAB array is flattened
with `ravel()` so that a 1-element array never collapses into a 0-d one. A record without the
expected field, or a box that is not 4 finite numbers, is one line naming the file, the record
and what was expected (`common.MatRecord`).

Synthetic trees may hold gallery sizes other than the published 50..4000 (a small pool cannot
support 4000): the loader takes the query list from `TestG50.mat`, or from the smallest protocol
file when there is no TestG50, and `available_gallery_sizes` says which sizes a tree has.
"""

import glob
import logging
import os
import re

import numpy as np

from psdiff.utils.errors import PsdiffError

from ..catalog import register_dataset
from ..protocol import QueryGallery, SearchProtocol, gallery_size_key
from .common import (
    README_HINT,
    MatRecord,
    check_counts,
    check_root,
    check_split,
    image_size,
    load_mat,
    mat_records,
    mat_text,
)

logger = logging.getLogger(__name__)

PUBLISHED_COUNTS = {
    "train": {"images": 11206, "identities": 5532},
    "gallery": {"images": 6978},
    "query": {"queries": 2900},
}
PROTOCOL_DIR = os.path.join("annotation", "test", "train_test")
QUERY_LIST_SIZE = 50  # the reference takes its query list (and gallery pids) from TestG50
# Published struct layouts (named in errors; fields are read by position, Query/Gallery by name)
IMAGE_FIELDS = ("imname", "nAppear", "box")  # Images.mat Img
BOX_FIELDS = ("idlocate", "ishard")  # an Img record's box
PERSON_FIELDS = ("idname", "nAppear", "scene")  # Train.mat
SCENE_FIELDS = ("imname", "idlocate", "ishard")  # a person's scene, a protocol's Gallery entry
PROTOCOL_FIELDS = ("Query", "Gallery")  # TestG<N>.mat
QUERY_FIELDS = ("imname", "idlocate", "ishard", "idname")


def _annotation(root: str, *parts: str) -> str:
    """Path of a file under `annotation/`."""
    return os.path.join(root, "annotation", *parts)


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """float `[x, y, w, h]` -> int32 `[x1, y1, x2, y2]`: cast, then `x2 = x + w` (the reference)."""
    box = xywh.astype(np.int32)
    box[2:] += box[:2]
    return box


def available_gallery_sizes(root: str) -> list:
    """Gallery sizes N with a `TestG<N>.mat` file under the tree, ascending."""
    sizes = []
    for path in glob.glob(os.path.join(root, PROTOCOL_DIR, "TestG*.mat")):
        match = re.fullmatch(r"TestG(\d+)\.mat", os.path.basename(path))
        if match:
            sizes.append(int(match.group(1)))
    return sorted(sizes)


def _load_protocol(root: str, size: int) -> list:
    """The `(Query, Gallery)` records of `TestG<size>.mat`, in file order, as `MatRecord`s."""
    path = os.path.join(root, PROTOCOL_DIR, f"TestG{size}.mat")
    if not os.path.isfile(path):
        sizes = available_gallery_sizes(root)
        listed = ", ".join(str(s) for s in sizes) if sizes else "none"
        raise PsdiffError(
            f"CUHK-SYSU gallery size {size} needs {path}, which does not exist "
            f"(sizes in this tree: {listed}; -1 = whole pool); {README_HINT}"
        )
    records = mat_records(load_mat(path, (f"TestG{size}",)))
    return [MatRecord(r, path, f"record {i}", PROTOCOL_FIELDS) for i, r in enumerate(records, 1)]


def _query_list_size(root: str) -> int:
    """Which protocol file gives the query list: TestG50, else the smallest one present."""
    sizes = available_gallery_sizes(root)
    if QUERY_LIST_SIZE in sizes:
        return QUERY_LIST_SIZE
    if not sizes:
        path = os.path.join(root, PROTOCOL_DIR, f"TestG{QUERY_LIST_SIZE}.mat")
        raise PsdiffError(f"missing annotation file {path}; {README_HINT}")
    return sizes[0]


def _query_entry(record: MatRecord) -> tuple:
    """(image name, int32 xyxy box) of a protocol record's `Query` (imname, idlocate, ...)."""
    query = record.record("Query", QUERY_FIELDS)
    return query.text(0), _xywh_to_xyxy(query.box(1))


def _gallery_entries(record: MatRecord) -> list:
    """[(image name, int32 xyxy box or None)] of a protocol record's `Gallery`, in file order.

    Images that contain the query person carry a 1x4 `idlocate`; the others an empty one.
    """
    entries = []
    for item in record.records("Gallery", "Gallery entry", SCENE_FIELDS):
        locate = item.box(1, optional=True)
        entries.append((item.text(0), None if locate is None else _xywh_to_xyxy(locate)))
    return entries


def _load_image_boxes(root: str) -> dict:
    """Image name -> int32 `[x, y, w, h]` boxes of Images.mat (`Img`: imname, nAppear, box)."""
    path = _annotation(root, "Images.mat")
    boxes_of = {}
    for index, value in enumerate(mat_records(load_mat(path, ("Img",))), start=1):
        record = MatRecord(value, path, f"Img record {index}", IMAGE_FIELDS)
        name = record.text(0)
        record.where = f"{record.where} ({name})"
        boxes = [box.box(0) for box in record.records(2, "box", BOX_FIELDS)]
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        valid = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        if not valid.any():
            logger.warning(f"CUHK-SYSU image {name} has no box with positive size in {path}")
        boxes_of[name] = boxes[valid].astype(np.int32)
    return boxes_of


def _load_pool(root: str) -> list:
    """The test pool (gallery images) in `pool.mat` order."""
    path = _annotation(root, "pool.mat")
    cells = mat_records(load_mat(path, ("pool",)))
    return [mat_text(cell, path, f"pool entry {i}") for i, cell in enumerate(cells, start=1)]


class _PidAssigner:
    """Gives pids to Images.mat boxes matched by exact int32 equality; everything else stays -1."""

    def __init__(self, boxes_of: dict, source: str):
        self.boxes_of = boxes_of
        self.source = source
        self.pids_of = {name: np.full(len(b), -1, dtype=np.int64) for name, b in boxes_of.items()}
        self.unmatched = 0

    def assign(self, name: str, xyxy: np.ndarray, pid: int) -> None:
        """Set `pid` on the first box of image `name` equal to `xyxy` (int32 x1y1x2y2)."""
        if name not in self.boxes_of:
            raise PsdiffError(f"{self.source} names image {name}, which Images.mat does not list")
        boxes = self.boxes_of[name].copy()
        boxes[:, 2:] += boxes[:, :2]
        hits = np.flatnonzero((boxes == xyxy).all(axis=1))
        if len(hits):
            self.pids_of[name][hits[0]] = pid
        else:
            self.unmatched += 1

    def report(self) -> None:
        """Warn once about boxes that matched no Images.mat box (the reference skips them too)."""
        if self.unmatched:
            logger.warning(
                f"{self.unmatched} boxes of {self.source} match no box of Images.mat; "
                "they are left unlabeled, as in the reference loaders"
            )


def _train_pids(root: str, boxes_of: dict) -> tuple:
    """Pids from Train.mat (cell Nx1 of 1x1 structs (idname, nAppear, scene)); and N."""
    path = os.path.join(root, PROTOCOL_DIR, "Train.mat")
    persons = mat_records(load_mat(path, ("Train",)))
    assigner = _PidAssigner(boxes_of, path)
    for index, cell in enumerate(persons):
        person = MatRecord(cell, path, f"Train person {index + 1}", PERSON_FIELDS)
        for scene in person.records(2, "scene", SCENE_FIELDS):
            assigner.assign(scene.text(0), _xywh_to_xyxy(scene.box(1)), index + 1)
    assigner.report()
    return assigner.pids_of, len(persons)


def _gallery_pids(root: str, boxes_of: dict) -> dict:
    """Pids from the query protocol: query i gives pid i + 1 to its query and gallery boxes."""
    size = _query_list_size(root)
    assigner = _PidAssigner(boxes_of, os.path.join(root, PROTOCOL_DIR, f"TestG{size}.mat"))
    for index, record in enumerate(_load_protocol(root, size)):
        assigner.assign(*_query_entry(record), index + 1)
        for name, box in _gallery_entries(record):
            if box is None:  # positives come first; the reference stops at the first negative
                break
            assigner.assign(name, box, index + 1)
    assigner.report()
    return assigner.pids_of


def _image_dict(root: str, name: str, named_in: str) -> dict:
    """The image-level fields of a dataset dict (path, id, size read from the file header)."""
    file_name = os.path.join(root, "Image", "SSM", name)
    height, width = image_size(file_name, named_in)
    return {"file_name": file_name, "image_id": name, "height": height, "width": width}


def _load_images(root: str, split: str) -> list:
    """Dataset dicts of the train or gallery split."""
    boxes_of = _load_image_boxes(root)
    pool = _load_pool(root)
    missing = [name for name in pool if name not in boxes_of]
    if missing:
        raise PsdiffError(f"pool.mat lists image {missing[0]}, which Images.mat does not list")
    if split == "train":
        names = sorted(set(boxes_of) - set(pool))
        pids_of, num_ids = _train_pids(root, boxes_of)
        counts = {"images": len(names), "identities": num_ids}
    else:
        names = pool
        pids_of = _gallery_pids(root, boxes_of)
        counts = {"images": len(names)}
    check_counts(root, "CUHK-SYSU", split, counts, PUBLISHED_COUNTS[split])
    dicts = []
    images_mat = _annotation(root, "Images.mat")
    for name in names:
        record = _image_dict(root, name, images_mat)
        boxes = boxes_of[name].astype(np.int64)
        boxes[:, 2:] += boxes[:, :2]
        record["annotations"] = [
            {"bbox": [float(v) for v in box], "pid": int(pid)}
            for box, pid in zip(boxes, pids_of[name])
        ]
        dicts.append(record)
    return dicts


def _load_queries(root: str, gallery_size: int) -> list:
    """Query dicts, each with the gallery of `gallery_size` (-1 = the whole pool)."""
    list_size = _query_list_size(root)
    query_records = _load_protocol(root, list_size)
    gallery_records = query_records if gallery_size in (-1, list_size) else None
    if gallery_records is None:
        gallery_records = _load_protocol(root, gallery_size)
    if len(gallery_records) != len(query_records):
        raise PsdiffError(
            f"TestG{gallery_size}.mat lists {len(gallery_records)} queries but "
            f"TestG{list_size}.mat lists {len(query_records)}; {README_HINT}"
        )
    pool = _load_pool(root) if gallery_size == -1 else []
    protocol_path = os.path.join(root, PROTOCOL_DIR, f"TestG{list_size}.mat")
    queries = []
    for index, (record, gallery_record) in enumerate(zip(query_records, gallery_records)):
        name, box = _query_entry(record)
        if _query_entry(gallery_record)[0] != name:
            raise PsdiffError(
                f"query {index} is image {name} in TestG{list_size}.mat but "
                f"{_query_entry(gallery_record)[0]} in TestG{gallery_size}.mat"
            )
        entries = _gallery_entries(gallery_record)
        if gallery_size == -1:  # every other pool image joins as a negative (protocol §3.4)
            listed = {n for n, _ in entries} | {name}
            entries += [(n, None) for n in pool if n not in listed]
        nan_box = np.full(4, np.nan, dtype=np.float32)
        query = _image_dict(root, name, protocol_path)
        query.update(
            bbox=[float(v) for v in box],
            pid=index + 1,
            gallery_ids=[n for n, _ in entries],
            gallery_boxes=np.array(
                [nan_box if b is None else b.astype(np.float32) for _, b in entries],
                dtype=np.float32,
            ).reshape(-1, 4),
        )
        queries.append(query)
    check_counts(root, "CUHK-SYSU", "query", {"queries": len(queries)}, PUBLISHED_COUNTS["query"])
    return queries


def load_cuhk_sysu(root: str, split: str, gallery_size: int = 100) -> list:
    """Load a CUHK-SYSU split ("train", "gallery" or "query") from the dataset folder `root`.

    Queries carry `gallery_ids` (image ids in protocol order) and `gallery_boxes` (the query
    person's xyxy box per gallery image, NaN where absent) for `gallery_size` (50, 100, 500, 1000,
    2000, 4000 from `TestG<N>.mat`; -1 = TestG50's gallery followed by every other pool image but
    the query's). `gallery_size` is ignored for the other splits.
    """
    check_root(root, "CUHK-SYSU")
    check_split(split)
    if split == "query":
        return _load_queries(root, gallery_size)
    return _load_images(root, split)


class CUHKSYSUProtocol(SearchProtocol):
    """CUHK-SYSU: each query's gallery is listed by TestG<N>.mat; scored at every gallery size
    of TEST.GALLERY_SIZES the tree has (docs/datasets-and-evaluation.md §3.4)."""

    name = "cuhk_sysu"

    def load(self, folder: str, split: str, gallery_size: int) -> list:
        return load_cuhk_sysu(folder, split, gallery_size)

    def query_galleries(self, gallery: list, queries: list, ignore_cam_id: bool = True):
        """Query i's listed images (`gallery_ids`, its own image dropped should a list name it:
        it is never part of its own gallery) and GT boxes (`gallery_boxes`); no cameras."""
        index = {record["image_id"]: i for i, record in enumerate(gallery)}

        def query_gallery(i: int) -> QueryGallery:
            query = queries[i]
            try:
                images = np.fromiter((index[n] for n in query["gallery_ids"]), np.int64)
            except KeyError as e:
                raise PsdiffError(f"query {i} ({query['image_id']}) lists gallery image {e} "
                                  "that is not in the gallery split")
            keep = images != index.get(query["image_id"], -1)
            gt_boxes = np.asarray(query["gallery_boxes"], np.float64).reshape(-1, 4)
            return QueryGallery(images[keep], gt_boxes[keep])

        return query_gallery

    def search_settings(self, queries, load_queries, gallery_size: int, gallery_sizes) -> list:
        """The headline size (`search/...`) first, then each of `gallery_sizes` (`search@N/...`);
        a size that is both is ranked once."""
        settings = []
        for size in dict.fromkeys([gallery_size, *gallery_sizes]):
            prefixes = (("search",) if size == gallery_size else ()) + \
                ((gallery_size_key(size),) if size in gallery_sizes else ())
            settings.append((prefixes, queries if size == gallery_size else load_queries(size)))
        return settings

    def headline_gallery_size(self, folder: str, requested: int) -> int:
        """`requested` when the tree has its TestG<N>.mat, else the whole pool (-1) with a
        warning: a small tree without that file is still evaluated, reported as search@all."""
        if requested == -1 or requested in available_gallery_sizes(folder):
            return requested
        logger.warning("%s has no TestG%d.mat (TEST.GALLERY_SIZE %d): the headline search "
                       "metrics rank each query against the whole pool (-1) instead", folder,
                       requested, requested)
        return -1

    def supported_gallery_sizes(self, folder: str, requested) -> list:
        """The sizes with a TestG<N>.mat in the tree, and -1; small synthetic trees lack the large
        ones, which are skipped with a warning."""
        present = set(available_gallery_sizes(folder)) | {-1}
        if set(requested) - present:
            logger.warning("%s has no protocol file for gallery sizes %s; skipped", folder,
                           sorted(set(requested) - present))
        return [size for size in requested if size in present]


CUHK_SYSU = CUHKSYSUProtocol()
register_dataset("cuhk_sysu", "CUHK-SYSU", CUHK_SYSU)
