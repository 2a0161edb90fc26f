"""PSDiff's embedding targets e0 (Eq. 11): the cache file of the teacher's embedding of every
training box, original and flipped, read back and attached to the training dicts.

PSDiff regresses (and denoises towards) e0 = Teacher(S, b0). A frozen teacher inside the
training loop would add about 3-6% to an iteration; the cache adds nothing measurable, crops the
original-resolution image and keeps the teacher off the training GPUs (docs/teacher.md has the
measurement), so e0 is computed once by `tools/build_targets.py` into a `.npz` file keyed by
image and box:

  image_ids   str[I]        training images, dataset order
  offsets     int64[I+1]    image i owns rows offsets[i]:offsets[i+1]
  boxes       float32[R,4]  its boxes, annotation order, xyxy original pixels
  embeddings  float32[R,D]  e0 of each box; embeddings_flip: e0 of the box in the flipped image
  meta        JSON str      format, dataset name, teacher fingerprint, D, crop size

Loading checks the file against the dataset (its name, then every image and box) and the
teacher (a hash of its weights), checks that every box and e0 is finite, and refuses a mismatch
or a NaN with one line naming the image. `attach_targets` copies e0 into the dataset dicts as
each annotation's "embedding" / "embedding_flip", which the data mapper turns into
`instances["embeddings"]` (the flipped one when it flips the image). The training loader does
this whenever TEACHER.CACHE is set; the teacher package writes the file
(`psdiff.teacher.inference.build_targets`) with `save_targets`.
"""

import copy
import hashlib
import json
import logging
import os
import zipfile

import numpy as np
import torch

from psdiff.utils.errors import PsdiffError
from psdiff.utils.finite import first_non_finite_row, first_non_finite_value, owner_of_row
from psdiff.utils.io import atomic_write
from psdiff.utils.weights import load_pth, strip_ddp_prefix

logger = logging.getLogger(__name__)

CACHE_FORMAT = "psdiff-teacher-targets-v1"
CACHE_ARRAYS = ("image_ids", "offsets", "boxes", "embeddings", "embeddings_flip")
BOX_TOLERANCE = 1e-3  # pixels; cached boxes are float32 copies of the dataset's
_NETWORK_PARTS = ("body.", "pool.", "head.", "neck.")  # ReIDNetwork's modules (teacher/network.py)


def teacher_fingerprint(state_dict: dict) -> str:
    """sha256 of the teacher network's weights (names, shapes and values), 16 hex digits."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(state_dict[name].shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def load_network_state(path: str) -> dict:
    """The teacher network's weights in a checkpoint of tools/train_teacher.py (TeacherModel's
    `network.*` entries), or a bare ReIDNetwork state_dict; anything else is a one-line error.

    The fingerprint of these weights names the teacher that built a cache, so the cache's reader
    and `psdiff.teacher.network.load_teacher` read them the same way.
    """
    state = load_pth(path, "TEACHER.WEIGHTS")
    state = strip_ddp_prefix(state.get("model", state) if isinstance(state, dict) else {})
    network = {k[len("network."):]: v for k, v in state.items() if k.startswith("network.")}
    network = network or {k: v for k, v in state.items() if k.startswith(_NETWORK_PARTS)}
    if not network:
        raise PsdiffError(f"TEACHER.WEIGHTS {path} holds no teacher network weights")
    return network


def save_targets(path: str, cache: dict) -> None:
    """Write the cache atomically (a crash leaves no half-written file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, **cache))


def load_targets(path: str, dataset_name: str = None, teacher: str = None) -> dict:
    """Read a cache; refuse it if built for another dataset name or another teacher fingerprint.

    Images and boxes are checked one by one by `attach_targets` (a filtered subset of the
    images the cache was built for is fine).
    """
    if not os.path.isfile(path):
        raise PsdiffError(f"TEACHER.CACHE file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            cache = {k: data[k] for k in data.files}
        meta = json.loads(str(cache["meta"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise PsdiffError(f"TEACHER.CACHE {path} is not an intact e0 cache ({type(e).__name__}); "
                          "rebuild it with tools/build_targets.py")
    if meta.get("format") != CACHE_FORMAT:
        raise PsdiffError(f"TEACHER.CACHE {path} has format '{meta.get('format')}', "
                          f"expected '{CACHE_FORMAT}'")
    if dataset_name is not None and meta["dataset"] != dataset_name:
        raise PsdiffError(f"TEACHER.CACHE {path} was built for dataset '{meta['dataset']}', "
                          f"not '{dataset_name}'; rebuild it with tools/build_targets.py")
    if teacher is not None and meta["teacher_fingerprint"] != teacher:
        raise PsdiffError(f"TEACHER.CACHE {path} was built by teacher {meta['teacher_fingerprint']}"
                          f", not by TEACHER.WEIGHTS (teacher {teacher}); rebuild it")
    _check_values(path, cache)
    cache["meta"] = meta
    return cache


def _check_values(path: str, cache: dict) -> None:
    """Every array is there and every box and e0 is finite: a NaN target would surface far
    from its cause, as a NaN loss or the matcher's error, iterations later."""
    missing = [name for name in CACHE_ARRAYS if name not in cache]
    if missing:
        raise PsdiffError(f"TEACHER.CACHE {path} lacks arrays {missing}; rebuild it with "
                          "tools/build_targets.py")
    for name in ("boxes", "embeddings", "embeddings_flip"):
        row = first_non_finite_row(cache[name])
        if row < 0:
            continue
        image = owner_of_row(cache["offsets"], row)
        box = row - int(cache["offsets"][image])
        value = first_non_finite_value(cache[name][row])
        raise PsdiffError(
            f"TEACHER.CACHE {path}: {name} of image {cache['image_ids'][image]} (box {box}) "
            f"holds {value}; rebuild it with tools/build_targets.py from a teacher that did not "
            "diverge")


def attach_targets(dataset_dicts, cache: dict) -> list:
    """Copies of the dicts whose annotations carry "embedding" and "embedding_flip" (float32 [D]).

    Each image is looked up by image_id and its boxes must equal the cached ones, in order.
    """
    rows = {name: i for i, name in enumerate(cache["image_ids"].tolist())}
    offsets, boxes = cache["offsets"], cache["boxes"]
    out = []
    for record in dataset_dicts:
        if record["image_id"] not in rows:
            raise PsdiffError(f"e0 cache has no entry for image {record['image_id']}; rebuild it "
                              "with tools/build_targets.py")
        i = rows[record["image_id"]]
        start, stop = int(offsets[i]), int(offsets[i + 1])
        wanted = np.asarray([a["bbox"] for a in record["annotations"]], dtype=np.float32)
        if stop - start != len(wanted) or \
                not np.allclose(boxes[start:stop], wanted.reshape(-1, 4), atol=BOX_TOLERANCE):
            raise PsdiffError(f"e0 cache boxes of image {record['image_id']} differ from the "
                              "dataset's; rebuild it with tools/build_targets.py")
        record = copy.copy(record)
        record["annotations"] = [
            dict(a, embedding=cache["embeddings"][start + j],
                 embedding_flip=cache["embeddings_flip"][start + j])
            for j, a in enumerate(record["annotations"])]
        out.append(record)
    return out


def checkpoint_fingerprint(path: str) -> str:
    """Fingerprint of the teacher network stored in a checkpoint written by the teacher trainer."""
    return teacher_fingerprint(load_network_state(path))


def attach_targets_from_config(cfg, dataset_dicts, dataset_name: str = None) -> list:
    """What the training loader does when TEACHER.CACHE is set: load it, validate it, attach e0.

    The cache must match the dataset (by default named "+".join(cfg.DATASETS.TRAIN)) and, when
    cfg.TEACHER.WEIGHTS is set, that teacher.
    """
    dataset_name = dataset_name or "+".join(cfg.DATASETS.TRAIN)
    teacher = checkpoint_fingerprint(cfg.TEACHER.WEIGHTS) if cfg.TEACHER.WEIGHTS else None
    cache = load_targets(cfg.TEACHER.CACHE, dataset_name, teacher)
    if cache["meta"]["emb_dim"] != cfg.MODEL.PSDIFF.EMB_DIM:
        raise PsdiffError(f"TEACHER.CACHE {cfg.TEACHER.CACHE} holds {cache['meta']['emb_dim']}-d "
                          f"embeddings but MODEL.PSDIFF.EMB_DIM is {cfg.MODEL.PSDIFF.EMB_DIM}")
    logger.info("e0 targets from %s (teacher %s, %d boxes)", cfg.TEACHER.CACHE,
                cache["meta"]["teacher_fingerprint"], len(cache["boxes"]))
    return attach_targets(dataset_dicts, cache)
