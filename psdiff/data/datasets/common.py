"""File-reading helpers shared by the CUHK-SYSU and PRW loaders.

Every failure to read the user's dataset tree becomes a one-line `PsdiffError` that names the
path at fault and points at `datasets/README.md`, so a broken tree is reported at start-up.
"""

import logging
import os
import struct

import numpy as np
import scipy.io

from psdiff.utils.errors import PsdiffError
from psdiff.utils.image import read_image

logger = logging.getLogger(__name__)

README_HINT = "see datasets/README.md for the expected tree"
# A tree written by psdiff.data.synthetic holds this file; its counts are not checked.
SYNTHETIC_MARKER = "psdiff_synthetic.json"

# JPEG start-of-frame markers (they carry the image size); C4, C8 and CC are not frames.
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
_JPEG_STANDALONE = {0x01} | set(range(0xD0, 0xD9))


def check_root(root: str, dataset: str) -> None:
    """Fail with one line if the dataset folder does not exist."""
    if not os.path.isdir(root):
        raise PsdiffError(f"{dataset} root {root} does not exist; {README_HINT}")


def check_split(split: str) -> None:
    """Fail with one line on a split name other than train / gallery / query."""
    if split not in ("train", "gallery", "query"):
        raise PsdiffError(f"unknown split {split!r}; valid splits: train, gallery, query")


def load_mat(path: str, variables: tuple) -> np.ndarray:
    """Return the first of `variables` found in the MATLAB file `path` (scipy defaults, unsqueezed).

    The reference loaders call `scipy.io.loadmat(path)` with its defaults; we do the same and let
    the callers index with `ravel()` so that 1-element arrays never collapse to 0-d.
    """
    if not os.path.isfile(path):
        raise PsdiffError(f"missing annotation file {path}; {README_HINT}")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises many types (ValueError, TypeError, MatReadError, ...)
        reason = " ".join(str(e).split()) or type(e).__name__
        raise PsdiffError(f"cannot read MATLAB file {path} ({reason}); {README_HINT}") from None
    for name in variables:
        if name in mat:
            return mat[name]
    found = ", ".join(k for k in sorted(mat) if not k.startswith("__")) or "nothing"
    wanted = " or ".join(repr(v) for v in variables)
    raise PsdiffError(f"{path} has no variable {wanted} (found: {found}); {README_HINT}")


def mat_str(value) -> str:
    """A MATLAB char array as scipy returns it (e.g. `array(['s1.jpg'])`) -> 's1.jpg'."""
    return str(np.asarray(value).ravel()[0])


def mat_records(value) -> list:
    """The elements of a MATLAB struct or cell array of any shape (1xN, Nx1, 1x1) as a flat list."""
    return list(np.asarray(value).ravel())


def _jpeg_size(f):
    """(height, width) from a JPEG's start-of-frame header, or None if `f` is not a JPEG."""
    if f.read(2) != b"\xff\xd8":
        return None
    while True:
        byte = f.read(1)
        while byte and byte != b"\xff":
            byte = f.read(1)
        while byte == b"\xff":
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in _JPEG_STANDALONE:
            continue
        if marker in _JPEG_SOF:
            header = f.read(7)
            if len(header) < 7:
                return None
            height, width = struct.unpack(">HH", header[3:7])
            return height, width
        length = f.read(2)
        if len(length) < 2:
            return None
        f.seek(struct.unpack(">H", length)[0] - 2, os.SEEK_CUR)


def image_size(path: str, named_in: str) -> tuple:
    """(height, width) of the image at `path`, read from the JPEG header without decoding it.

    Decoding 18k images only to learn their sizes would take minutes; headers take a second.
    Other formats fall back to OpenCV. `named_in` is the annotation file that lists the image.
    """
    if not os.path.isfile(path):
        raise PsdiffError(f"image {path} named in {named_in} does not exist; {README_HINT}")
    with open(path, "rb") as f:
        size = _jpeg_size(f)
    if size is None or 0 in size:
        try:
            size = read_image(path).shape[:2]
        except PsdiffError:
            raise PsdiffError(f"cannot read image {path} named in {named_in}; {README_HINT}")
    return int(size[0]), int(size[1])


def check_counts(root: str, dataset: str, split: str, counts: dict, published: dict) -> None:
    """Warn when a full-size tree does not hold the published number of images / identities.

    Trees written by our synthetic generator (marked by `SYNTHETIC_MARKER`) are small on purpose
    and are not checked.
    """
    if os.path.isfile(os.path.join(root, SYNTHETIC_MARKER)):
        return
    for key, value in counts.items():
        expected = published[key]
        if value != expected:
            logger.warning(
                f"{dataset} {split} split at {root} has {value} {key}, the published dataset has "
                f"{expected}: is the tree complete? ({README_HINT})"
            )
