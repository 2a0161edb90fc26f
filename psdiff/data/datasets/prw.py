"""PRW loader: the dataset's own files (frame lists, per-frame .mat, query_info.txt) -> dicts.

Reads exactly what the reference loaders (SeqNet, NAE4PS) read, the same way:
* frames: `frame_train.mat` / `frame_test.mat` (cell Nx1 of names without `.jpg`), in file order;
* annotation boxes (`annotations/<frame>.jpg.mat`, rows `[id, x, y, w, h]`, variable `box_new`,
  else `anno_file`, else `anno_previous`): x, y, w, h are clipped at 0 *before* `x2 = x + w`
  (so a box left of the frame is shifted, not cropped), then truncated to int32;
* query boxes (`query_info.txt`, `pid x y w h frame` per CRLF line): `[x, y, x + w, y + h]` is
  truncated to int32 *first* and then clipped at 0 (a crop);
* camera id = the digit after the first `c` of the frame name (`c3s1_000073.jpg` -> 3).

Pids. Unknown people (-2 in the files) get -1. Gallery and query pids are the raw ids. Training
pids are remapped: the sorted `ID_train` ids become 1..len(ID_train) (483 on the real data), so
that training labels are contiguous on both datasets (`label = pid - 1`, as for CUHK-SYSU). The
reference keeps raw ids instead and sizes its lookup table for 482 of them, which leaves ids 483
and 932 past its end. A train-frame id that `ID_train` does not list is left unlabeled, with a
warning.

Published counts: 5,704 train frames, 6,112 gallery frames, 2,057 queries of 450 identities.
The paper gives 482 training identities, but `ID_train.mat` lists 483 (ids 1..478, 480..483, 932
are what the train frames hold), so 483 is what the check expects.
"""

import logging
import os
import re
from collections import defaultdict

import numpy as np

from psdiff.utils.errors import PsdiffError

from ..catalog import register_dataset
from ..protocol import QueryGallery, SearchProtocol
from .common import (
    README_HINT,
    check_counts,
    check_root,
    check_split,
    image_size,
    load_mat,
    mat_numbers,
    mat_records,
    mat_text,
)

logger = logging.getLogger(__name__)

PUBLISHED_COUNTS = {
    "train": {"frames": 5704, "identities": 483},
    "gallery": {"frames": 6112},
    "query": {"queries": 2057, "identities": 450},
}
FRAME_LISTS = {  # split -> (file, variable)
    "train": ("frame_train.mat", "img_index_train"),
    "gallery": ("frame_test.mat", "img_index_test"),
}
ANNOTATION_VARIABLES = ("box_new", "anno_file", "anno_previous")
UNKNOWN_ID = -2  # PRW's id for people whose identity is unknown


def camera_id(frame_name: str) -> int:
    """The camera of a frame: the digit after the first `c` (`c3s1_000073.jpg` -> 3)."""
    match = re.search(r"c\d", frame_name)
    if match is None:
        raise PsdiffError(f"PRW frame name {frame_name!r} has no camera tag c<digit>")
    return int(match.group()[1:])


def _frame_dict(root: str, image_id: str, named_in: str) -> dict:
    """The image-level fields of a dataset or query dict (path, id, size, camera)."""
    file_name = os.path.join(root, "frames", image_id)
    height, width = image_size(file_name, named_in)
    return {
        "file_name": file_name,
        "image_id": image_id,
        "height": height,
        "width": width,
        "cam_id": camera_id(image_id),
    }


def _annotation_boxes(path: str) -> tuple:
    """(int32 xyxy boxes [n, 4], raw ids [n]) of one frame's annotation file."""
    rows = mat_numbers(load_mat(path, ANNOTATION_VARIABLES), path, "the boxes",
                       "rows [id, x, y, w, h] of finite numbers", columns=5)
    boxes = np.clip(rows[:, 1:], 0, None)  # clip x, y, w, h, then add: a shift, as the reference
    boxes[:, 2:] += boxes[:, :2]
    return boxes.astype(np.int32), rows[:, 0].astype(np.int64)


def _train_id_map(root: str) -> dict:
    """Sorted `ID_train` ids -> 1..N (see the module docstring)."""
    path = os.path.join(root, "ID_train.mat")
    ids = mat_numbers(load_mat(path, ("ID_train",)), path, "ID_train", "identity numbers").ravel()
    return {int(raw): index + 1 for index, raw in enumerate(sorted(set(ids.astype(np.int64))))}


def _load_frames(root: str, split: str) -> list:
    """Dataset dicts of the train or gallery split."""
    list_file, variable = FRAME_LISTS[split]
    list_path = os.path.join(root, list_file)
    cells = mat_records(load_mat(list_path, (variable,)))
    names = [mat_text(cell, list_path, f"{variable} entry {i}") + ".jpg"
             for i, cell in enumerate(cells, start=1)]
    id_map = _train_id_map(root) if split == "train" else None
    unmapped = set()
    dicts = []
    for name in names:
        record = _frame_dict(root, name, list_path)
        boxes, ids = _annotation_boxes(os.path.join(root, "annotations", name + ".mat"))
        annotations = []
        for box, raw in zip(boxes, ids):
            pid = -1 if raw == UNKNOWN_ID else int(raw)
            if id_map is not None and pid != -1:
                if pid not in id_map:
                    unmapped.add(pid)
                pid = id_map.get(pid, -1)
            annotations.append({"bbox": [float(v) for v in box], "pid": pid})
        record["annotations"] = annotations
        dicts.append(record)
    if unmapped:
        logger.warning(
            f"PRW train frames hold ids {sorted(unmapped)} that ID_train.mat does not list; "
            "their boxes are left unlabeled"
        )
    counts = {"frames": len(dicts)}
    if split == "train":
        counts["identities"] = len(id_map)
    check_counts(root, "PRW", split, counts, PUBLISHED_COUNTS[split])
    return dicts


def _load_queries(root: str) -> list:
    """Query dicts from `query_info.txt`: `pid x y w h frame` per line."""
    path = os.path.join(root, "query_info.txt")
    if not os.path.isfile(path):
        raise PsdiffError(f"missing query file {path}; {README_HINT}")
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8").splitlines()
    queries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            pid = int(fields[0])
            x, y, w, h = (float(v) for v in fields[1:5])
            frame = fields[5]
        except (ValueError, IndexError):
            message = f"{path} line {number} is not 'pid x y w h frame': {line!r}"
            raise PsdiffError(message) from None
        box = np.clip(np.array([x, y, x + w, y + h]).astype(np.int32), 0, None)  # truncate, clip
        query = _frame_dict(root, frame + ".jpg", path)
        query.update(bbox=[float(v) for v in box], pid=pid)
        queries.append(query)
    counts = {"queries": len(queries), "identities": len({q["pid"] for q in queries})}
    check_counts(root, "PRW", "query", counts, PUBLISHED_COUNTS["query"])
    return queries


def load_prw(root: str, split: str) -> list:
    """Load a PRW split ("train", "gallery" or "query") from the dataset folder `root`.

    Every dict carries `cam_id`. Gallery = all test frames; a query's gallery is every gallery
    frame but its own (the evaluator applies the camera rule).
    """
    check_root(root, "PRW")
    check_split(split)
    if split == "query":
        return _load_queries(root)
    return _load_frames(root, split)


class PRWProtocol(SearchProtocol):
    """PRW: the gallery is every test frame but the query's (docs/datasets-and-evaluation.md
    §3.5)."""

    name = "prw"

    def load(self, folder: str, split: str, gallery_size: int) -> list:
        return load_prw(folder, split)

    def query_galleries(self, gallery: list, queries: list, ignore_cam_id: bool = True):
        """All test frames but the query frame (`ignore_cam_id` False: frames of other cameras
        only); the positives are the frames holding the query pid, with the first box of that
        pid there as ground truth."""
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


PRW = PRWProtocol()
register_dataset("prw", "PRW", PRW)
