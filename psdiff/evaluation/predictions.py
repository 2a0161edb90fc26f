"""The predictions file: every raw model output an evaluation needs, so metrics can be recomputed.

`predictions.npz` (docs/architecture.md, "Predictions file") holds plain numpy arrays, no pickles:

- `gallery_names` str[G]: gallery image file names (no folder), in the dataset's gallery order;
- `gallery_offsets` int64[G+1]: image i owns detection rows `offsets[i]:offsets[i+1]`;
- `gallery_boxes` float32[R,4] (xyxy, original pixels), `gallery_scores` float32[R],
  `gallery_embeddings` float32[R,D] (L2-normalized): all detections of all images concatenated;
- `query_names` str[Q], `query_boxes` float32[Q,4], `query_embeddings` float32[Q,D]: one row
  per query, in the order of the dataset's query list;
- `meta`: a JSON string (dataset, config, sampler, steps, seed, ...).

Metrics are a pure function of this file and the dataset's annotations (see `metrics.py`).
"""

import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from psdiff.utils.errors import PsdiffError
from psdiff.utils.finite import first_non_finite_row, first_non_finite_value, owner_of_row
from psdiff.utils.io import atomic_write

_ARRAYS = (
    "gallery_names",
    "gallery_offsets",
    "gallery_boxes",
    "gallery_scores",
    "gallery_embeddings",
    "query_names",
    "query_boxes",
    "query_embeddings",
)
_NUMBERS = ("gallery_boxes", "gallery_scores", "gallery_embeddings", "query_boxes",
            "query_embeddings")  # every value must be a finite number


@dataclass
class GalleryRows:
    """Detections of a list of gallery images as concatenated rows (image i owns a slice).

    This is the form the ranking and detection code read: `offsets[i]:offsets[i+1]` are the rows
    of image i in `boxes`, `scores` and `embeddings`.
    """

    offsets: np.ndarray  # int64[G+1]
    boxes: np.ndarray  # float32[R,4]
    scores: np.ndarray  # float32[R]
    embeddings: np.ndarray  # float32[R,D]

    @property
    def counts(self) -> np.ndarray:
        """Number of detections of each image."""
        return np.diff(self.offsets)

    def filter(self, keep: np.ndarray) -> "GalleryRows":
        """Keep the rows where `keep` is True; each image keeps its own surviving rows."""
        image_of_row = np.repeat(np.arange(len(self.offsets) - 1), self.counts)
        counts = np.bincount(image_of_row[keep], minlength=len(self.offsets) - 1)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return GalleryRows(offsets, self.boxes[keep], self.scores[keep], self.embeddings[keep])

    def take_images(self, order: np.ndarray) -> "GalleryRows":
        """The rows of images `order[0], order[1], ...`, in that order."""
        counts = self.counts[order]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        rows = np.repeat(self.offsets[order] - offsets[:-1], counts) + np.arange(offsets[-1])
        return GalleryRows(offsets, self.boxes[rows], self.scores[rows], self.embeddings[rows])


@dataclass
class Predictions:
    """All raw outputs of one evaluation run: gallery detections and query embeddings."""

    gallery_names: np.ndarray
    gallery_offsets: np.ndarray
    gallery_boxes: np.ndarray
    gallery_scores: np.ndarray
    gallery_embeddings: np.ndarray
    query_names: np.ndarray
    query_boxes: np.ndarray
    query_embeddings: np.ndarray
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_outputs(cls, gallery_names, gallery_outputs, query_names, query_boxes,
                     query_embeddings, meta=None) -> "Predictions":
        """Assemble from per-image outputs `{"boxes", "scores", "embeddings"}` (numpy or torch).

        `query_embeddings` is [Q, D] (also when Q = 0): it fixes the embedding dimension D.
        """
        query_embeddings = np.asarray(query_embeddings, dtype=np.float32)
        dim = query_embeddings.shape[1]

        def cat(key, shape):
            """One output key of every image, concatenated (empty with the right shape)."""
            parts = [np.asarray(o[key], dtype=np.float32).reshape(shape) for o in gallery_outputs]
            return np.concatenate(parts) if parts else np.zeros((0,) + shape[1:], np.float32)

        counts = [len(np.asarray(o["scores"]).reshape(-1)) for o in gallery_outputs]
        return cls(
            gallery_names=np.asarray(gallery_names, dtype=str),
            gallery_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            gallery_boxes=cat("boxes", (-1, 4)),
            gallery_scores=cat("scores", (-1,)),
            gallery_embeddings=cat("embeddings", (-1, dim)),
            query_names=np.asarray(query_names, dtype=str),
            query_boxes=np.asarray(query_boxes, dtype=np.float32).reshape(-1, 4),
            query_embeddings=query_embeddings,
            meta=dict(meta or {}),
        )

    @property
    def gallery(self) -> GalleryRows:
        """The gallery detections, in the file's image order."""
        return GalleryRows(self.gallery_offsets, self.gallery_boxes, self.gallery_scores,
                           self.gallery_embeddings)

    def save(self, path: str) -> None:
        """Write the .npz atomically (a crash leaves no half-written file)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        atomic_write(path, lambda f: np.savez(f, meta=np.asarray(json.dumps(self.meta)), **arrays))

    @classmethod
    def load(cls, path: str) -> "Predictions":
        """Read and check a predictions file; any problem is one `PsdiffError` line."""
        if not os.path.isfile(path):
            raise PsdiffError(f"predictions file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in _ARRAYS + ("meta",) if k not in data.files]
                if missing:
                    raise PsdiffError(f"predictions file {path} lacks arrays {missing}")
                arrays = {name: data[name] for name in _ARRAYS}
                meta = json.loads(str(data["meta"]))
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise PsdiffError(f"cannot read predictions file {path}: not an intact .npz archive "
                              f"of plain arrays ({type(e).__name__})")
        predictions = cls(meta=meta, **arrays)
        predictions.check(path)
        return predictions

    def check(self, where: str = "predictions") -> None:
        """Shapes agree with each other and every number is finite (raises `PsdiffError`
        naming the array at fault, and the first bad row)."""
        num_images, num_rows = len(self.gallery_names), len(self.gallery_scores)
        offsets = self.gallery_offsets
        problems = [
            (len(offsets) != num_images + 1, "gallery_offsets must have len(gallery_names)+1"),
            (len(offsets) and (offsets[0] != 0 or offsets[-1] != num_rows),
             "gallery_offsets must start at 0 and end at the number of detections"),
            (np.any(np.diff(offsets) < 0), "gallery_offsets must not decrease"),
            (self.gallery_boxes.shape != (num_rows, 4), "gallery_boxes must be [R,4]"),
            (len(self.gallery_embeddings) != num_rows, "gallery_embeddings must have R rows"),
            (self.query_boxes.shape != (len(self.query_names), 4), "query_boxes must be [Q,4]"),
            (len(self.query_embeddings) != len(self.query_names), "query_embeddings must be [Q,D]"),
            (num_rows and len(self.query_names)
             and self.gallery_embeddings.shape[1] != self.query_embeddings.shape[1],
             "gallery and query embeddings differ in dimension"),
        ]
        for bad, message in problems:
            if bad:
                raise PsdiffError(f"{where}: {message}")
        self._check_finite(where)

    def _check_finite(self, where: str) -> None:
        """Every box, score and embedding is a finite number: a NaN score or embedding would
        change the ranking silently (and make mAP NaN), so it is refused, naming the row."""
        for name in _NUMBERS:
            array = getattr(self, name)
            if array.dtype.kind not in "fiu":
                raise PsdiffError(f"{where}: {name} holds {array.dtype} values, not numbers")
            row = first_non_finite_row(array)
            if row < 0:
                continue
            if name.startswith("gallery"):
                image = self.gallery_names[owner_of_row(self.gallery_offsets, row)]
                owner = f"a detection of gallery image {image}"
            else:
                owner = f"query {row}, image {self.query_names[row]}"
            raise PsdiffError(f"{where}: {name} row {row} ({owner}) holds "
                              f"{first_non_finite_value(array[row])}; boxes, scores and "
                              "embeddings must be finite numbers (did the model diverge?)")
