"""Dataset dict -> model input dict: read the image, resize its shortest edge, flip, move boxes.

Detectron2's `DatasetMapper` with `ResizeShortestEdge` and `RandomFlip`, for the model-input
contract of docs/architecture.md: `image` uint8 CHW (BGR by default) at the resized size, `height` /
`width` of the original image (predictions are rescaled to it), and in training `instances`
with `boxes` (xyxy in resized pixels), `pids` and, when the dicts carry teacher targets,
`embeddings` (the `embedding_flip` variant when the image was flipped).
"""

import cv2
import numpy as np
import torch

from psdiff.utils.errors import PsdiffError
from psdiff.utils.image import read_image

_QUERY_ONLY_KEYS = ("annotations", "gallery_ids", "gallery_boxes")  # not passed to the model


def resized_shape(height: int, width: int, short: int, max_size: int) -> tuple:
    """(new_height, new_width): shortest edge to `short`, longest edge at most `max_size`
    (Detectron2's `ResizeShortestEdge.get_output_shape`, rounding half up)."""
    scale = short / min(height, width)
    new_h, new_w = height * scale, width * scale
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def read_dataset_image(dataset_dict: dict, image_format: str = "BGR") -> np.ndarray:
    """The HWC uint8 image of a dataset dict, checked against the dict's height and width."""
    path = dataset_dict["file_name"]
    image = read_image(path, image_format)
    expected = (dataset_dict.get("height"), dataset_dict.get("width"))
    if None not in expected and image.shape[:2] != expected:
        raise PsdiffError(
            f"image {path} is {image.shape[0]}x{image.shape[1]} but its annotation says "
            f"{expected[0]}x{expected[1]} (height x width)"
        )
    return image


def _teacher_targets(annotations: list, flipped: bool, file_name: str):
    """float32 [M, D] teacher embeddings of the annotations (the flipped image's when
    `flipped`), or None when no annotation carries teacher targets."""
    if not any("embedding" in a or "embedding_flip" in a for a in annotations):
        return None
    key = "embedding_flip" if flipped else "embedding"
    missing = sum(key not in a for a in annotations)
    if missing:
        raise PsdiffError(
            f"{missing} of {len(annotations)} persons of {file_name} lack the teacher target "
            f"{key!r}; every person needs 'embedding' and 'embedding_flip'"
        )
    return np.asarray([np.asarray(a[key], dtype=np.float32) for a in annotations], np.float32)


class DatasetMapper:
    """Callable turning one dataset dict into one model input dict (see the module docstring)."""

    def __init__(
        self,
        is_train: bool,
        min_sizes: tuple,
        max_size: int,
        sampling: str = "choice",
        flip: str = "horizontal",
        image_format: str = "BGR",
        with_instances: bool = None,
    ):
        """`min_sizes`: shortest-edge sizes, one chosen per image in training ("choice") or the
        (low, high) bounds of a uniform integer ("range"); the first one at test time. `flip`:
        "horizontal" (probability 0.5, training only) or "none". `with_instances`: output the
        ground truth (default: in training only)."""
        if sampling not in ("choice", "range"):
            raise PsdiffError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING is {sampling!r}; use choice or range")
        if flip not in ("horizontal", "none"):
            raise PsdiffError(f"INPUT.RANDOM_FLIP is {flip!r}; use horizontal or none")
        if image_format not in ("BGR", "RGB"):
            raise PsdiffError(f"INPUT.FORMAT is {image_format!r}; use BGR or RGB")
        self.is_train = is_train
        self.min_sizes = tuple(int(s) for s in np.atleast_1d(min_sizes))
        self.max_size = int(max_size)
        self.sampling = sampling
        self.flip = flip if is_train else "none"
        self.image_format = image_format
        self.with_instances = is_train if with_instances is None else with_instances

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, with_instances: bool = None):
        """Build from `INPUT.*` (training or test sizes)."""
        if is_train:
            sizes, max_size = cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN
        else:
            sizes, max_size = (cfg.INPUT.MIN_SIZE_TEST,), cfg.INPUT.MAX_SIZE_TEST
        return cls(
            is_train=is_train,
            min_sizes=sizes,
            max_size=max_size,
            sampling=cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
            flip=cfg.INPUT.RANDOM_FLIP,
            image_format=cfg.INPUT.FORMAT,
            with_instances=with_instances,
        )

    def _short_side(self, rng: np.random.Generator) -> int:
        """The shortest-edge size for this image."""
        if not self.is_train:
            return self.min_sizes[0]
        if self.sampling == "range":
            return int(rng.integers(min(self.min_sizes), max(self.min_sizes) + 1))
        return self.min_sizes[int(rng.integers(len(self.min_sizes)))]

    def __call__(self, dataset_dict: dict, rng: np.random.Generator = None) -> dict:
        """Map one dict; `rng` draws the size and the flip (the loaders pass a per-sample one,
        which makes an epoch's augmentation repeatable)."""
        rng = np.random.default_rng() if rng is None else rng
        image = read_dataset_image(dataset_dict, self.image_format)
        output = {k: v for k, v in dataset_dict.items() if k not in _QUERY_ONLY_KEYS}
        output["image"], new_size, flipped = self.map_image(image, rng)
        if self.with_instances:
            output["instances"] = self._instances(dataset_dict, image.shape[:2], new_size, flipped)
        return output

    def map_image(self, image: np.ndarray, rng: np.random.Generator = None) -> tuple:
        """Resize (and in training perhaps flip) an HWC image already in `INPUT.FORMAT` order:
        (uint8 CHW tensor, (new_h, new_w), flipped). Also serves images that come from memory
        (`psdiff.engine.predictor`)."""
        rng = np.random.default_rng() if rng is None else rng
        height, width = image.shape[:2]
        new_h, new_w = resized_shape(height, width, self._short_side(rng), self.max_size)
        flipped = self.flip == "horizontal" and rng.random() < 0.5
        if (new_h, new_w) != (height, width):
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        if flipped:
            image = image[:, ::-1]
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return tensor, (new_h, new_w), flipped

    def _instances(self, dataset_dict: dict, size: tuple, new_size: tuple, flipped: bool) -> dict:
        """Boxes moved with the image (scaled, mirrored, clipped to it; empty ones dropped),
        pids and teacher embeddings."""
        annotations = dataset_dict.get("annotations", [])
        boxes = np.asarray([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4)
        boxes *= [new_size[1] / size[1], new_size[0] / size[0]] * 2
        if flipped:
            boxes[:, [0, 2]] = new_size[1] - boxes[:, [2, 0]]
        boxes = np.clip(boxes, 0, [new_size[1], new_size[0]] * 2)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        pids = np.asarray([a["pid"] for a in annotations], dtype=np.int64)
        instances = {
            "boxes": torch.as_tensor(boxes[keep], dtype=torch.float32),
            "pids": torch.as_tensor(pids[keep]),
        }
        embeddings = _teacher_targets(annotations, flipped, dataset_dict["file_name"])
        if embeddings is not None:
            instances["embeddings"] = torch.from_numpy(embeddings[keep])
        return instances
