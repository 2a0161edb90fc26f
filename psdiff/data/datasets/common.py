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


def mat_records(value) -> list:
    """The elements of a MATLAB struct or cell array of any shape (1xN, Nx1, 1x1) as a flat list."""
    return list(np.asarray(value).ravel())


def _describe(value) -> str:
    """A short picture of a MATLAB value as scipy returns it, for an error line."""
    array = np.asarray(value)
    if array.dtype.names:
        return f"a struct with fields ({', '.join(array.dtype.names)})"
    if array.dtype.kind == "U":
        return f"the text {str(array.ravel()[0])!r}" if array.size else "an empty text"
    if array.dtype.kind == "O":
        return f"a cell array of {array.size} elements"
    if array.size == 0:
        return "an empty array"
    shown = ", ".join(str(v) for v in array.ravel()[:6].tolist())
    return f"{array.size} values [{shown}{', ...' if array.size > 6 else ''}]"


def _malformed(path: str, where: str, expected: str, value) -> PsdiffError:
    """One line naming the annotation file, the record in it, what was expected and found."""
    return PsdiffError(f"{path}: {where}: expected {expected}, found {_describe(value)}; "
                       f"{README_HINT}")


def mat_text(value, path: str, where: str) -> str:
    """A MATLAB char array as scipy returns it (e.g. `array(['s1.jpg'])`) -> 's1.jpg'."""
    array = np.asarray(value).ravel()
    if not array.size or array.dtype.kind != "U":
        raise _malformed(path, where, "a name (text)", value)
    return str(array[0])


def mat_numbers(value, path: str, where: str, expected: str, columns: int = 1) -> np.ndarray:
    """A MATLAB numeric array as finite float64 rows of `columns` values (`expected` says
    what they are, for the error line)."""
    try:
        numbers = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):  # text, a cell or a struct where numbers belong
        numbers = None
    if numbers is None or numbers.size % columns or not np.isfinite(numbers).all():
        raise _malformed(path, where, expected, value)
    return numbers.reshape(-1, columns)


def mat_box(value, path: str, where: str) -> np.ndarray:
    """A MATLAB `[x, y, w, h]` box as float64[4]."""
    expected = "a box [x, y, w, h] of 4 finite numbers"
    box = mat_numbers(value, path, where, expected, columns=4)
    if len(box) != 1:
        raise _malformed(path, where, expected, value)
    return box[0]


class MatRecord:
    """One record of a MATLAB struct array, read field by field: each malformed field is one
    `PsdiffError` line naming the file, the record (`where`) and what was expected.

    Fields are read by name or, as the reference loaders do, by position; `fields` is the
    published layout, named in the error line.
    """

    def __init__(self, value, path: str, where: str, fields: tuple):
        self.path, self.where, self.fields = path, where, fields
        array = np.asarray(value)
        if not array.dtype.names or not array.size:  # a 1x1 struct array holds one record
            raise _malformed(path, where, self._layout(), value)
        self.value = array.ravel()[0]

    def _layout(self) -> str:
        return f"a struct with fields ({', '.join(self.fields)})"

    def _label(self, field) -> str:
        return f"{self.where} {field if isinstance(field, str) else self.fields[field]}"

    def __getitem__(self, field):
        """The raw value of a field (a name, or a position)."""
        names = self.value.dtype.names
        if field in names if isinstance(field, str) else field < len(names):
            return self.value[field]
        raise _malformed(self.path, self.where, self._layout(), self.value)

    def text(self, field) -> str:
        return mat_text(self[field], self.path, self._label(field))

    def box(self, field, optional: bool = False):
        """The `[x, y, w, h]` box of a field; None for an empty one when `optional`."""
        value = self[field]
        if optional and np.asarray(value).size == 0:
            return None
        return mat_box(value, self.path, self._label(field))

    def record(self, field, fields: tuple) -> "MatRecord":
        """The single struct a field holds (e.g. a protocol record's Query)."""
        return MatRecord(self[field], self.path, self._label(field), fields)

    def records(self, field, name: str, fields: tuple) -> list:
        """The structs of a struct-array field, each named `name <k>` in errors."""
        return [MatRecord(value, self.path, f"{self.where} {name} {k}", fields)
                for k, value in enumerate(mat_records(self[field]), start=1)]


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
