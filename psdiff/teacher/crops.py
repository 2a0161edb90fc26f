"""Ground-truth person crops for the teacher: cutting, augmentation, dataset and P x K sampler.

The teacher sees each annotated box of the scene images as a 256x128 crop (HHCL's input,
bicubic resize). Training batches hold P identities x K crops (HHCL's sampler, preferring other
"cameras": the PRW camera, or the scene image for CUHK-SYSU) plus unlabeled crops that serve
only as extra negatives.
"""

import math
import random

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from psdiff.utils.errors import PsdiffError
from psdiff.utils.image import read_image

PIXEL_MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # ImageNet, as HHCL
PIXEL_STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def flip_box(box, width: int) -> list:
    """The box of the same person in the horizontally flipped image (x -> width - x)."""
    x1, y1, x2, y2 = box
    return [width - x2, y1, width - x1, y2]


def crop_box(image: np.ndarray, box, size) -> np.ndarray:
    """Cut box [x1, y1, x2, y2] (continuous pixels) and resize it bicubically to size (h, w).

    The box is widened outward to whole pixels (floor x1, ceil x2) and clipped to the image; on
    a flipped image the flipped box gives exactly the mirrored pixels.
    """
    height, width = image.shape[:2]
    x1 = min(max(math.floor(box[0]), 0), width - 1)
    y1 = min(max(math.floor(box[1]), 0), height - 1)
    x2 = max(min(math.ceil(box[2]), width), x1 + 1)
    y2 = max(min(math.ceil(box[3]), height), y1 + 1)
    return cv2.resize(image[y1:y2, x1:x2], (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def to_tensor(crop_bgr: np.ndarray) -> torch.Tensor:
    """BGR uint8 HxWx3 -> RGB float 3xHxW normalized with ImageNet's mean and std."""
    rgb = crop_bgr[:, :, ::-1].astype(np.float32) / 255.0
    return torch.from_numpy(((rgb - PIXEL_MEAN_RGB) / PIXEL_STD_RGB).transpose(2, 0, 1).copy())


def augment(crop: np.ndarray, pad: int, erasing_prob: float, rng=random) -> np.ndarray:
    """HHCL's training augmentation: flip (p=0.5), pad-and-random-crop, random erasing."""
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    h, w = crop.shape[:2]
    if pad > 0:
        padded = cv2.copyMakeBorder(np.ascontiguousarray(crop), pad, pad, pad, pad,
                                    cv2.BORDER_CONSTANT, value=0)
        top, left = rng.randint(0, 2 * pad), rng.randint(0, 2 * pad)
        crop = padded[top: top + h, left: left + w]
    crop = np.ascontiguousarray(crop)
    if rng.random() < erasing_prob:
        _random_erase(crop, rng)
    return crop


def _random_erase(crop: np.ndarray, rng: random.Random) -> None:
    """Random Erasing (area 0.02-0.4, aspect 0.3-3.3), filled with the ImageNet mean color."""
    h, w = crop.shape[:2]
    for _ in range(100):
        area = rng.uniform(0.02, 0.4) * h * w
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
        eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < eh < h and 0 < ew < w:
            top, left = rng.randint(0, h - eh), rng.randint(0, w - ew)
            crop[top: top + eh, left: left + ew] = (PIXEL_MEAN_RGB[::-1] * 255).astype(np.uint8)
            return


class CropDataset(Dataset):
    """Every annotated box of the dataset dicts as one item: {"image": tensor, "pid", "index"}.

    `labels[i]` is the identity index (0..num_classes-1, sorted pids) of crop i, -1 if unlabeled;
    `groups[i]` is its "camera" for the sampler: `cam_id` when the dicts have one, else the image.
    """

    def __init__(self, dataset_dicts, size=(256, 128), train: bool = False, pad: int = 10,
                 erasing_prob: float = 0.5):
        self.dicts = dataset_dicts
        self.size = tuple(size)
        self.train = train
        self.pad = pad
        self.erasing_prob = erasing_prob
        self.items = [(i, j) for i, d in enumerate(dataset_dicts)
                      for j in range(len(d["annotations"]))]
        pids = [dataset_dicts[i]["annotations"][j]["pid"] for i, j in self.items]
        self.class_pids = sorted({p for p in pids if p >= 0})
        index_of = {p: k for k, p in enumerate(self.class_pids)}
        self.labels = np.array([index_of.get(p, -1) for p in pids], dtype=np.int64)
        self.groups = np.array([dataset_dicts[i].get("cam_id", i) for i, _ in self.items])

    @property
    def num_classes(self) -> int:
        return len(self.class_pids)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        i, j = self.items[index]
        record = self.dicts[i]
        box = record["annotations"][j]["bbox"]
        crop = crop_box(read_image(record["file_name"]), box, self.size)
        if self.train:
            crop = augment(crop, self.pad, self.erasing_prob, random)  # seeded per loader worker
        return {"image": to_tensor(crop), "label": int(self.labels[index]), "index": index}


def collate_crops(items):
    """Stack crop items into {"images": N x 3 x H x W, "labels": long[N], "indices": long[N]}."""
    return {"images": torch.stack([it["image"] for it in items]),
            "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),
            "indices": torch.tensor([it["index"] for it in items], dtype=torch.long)}


class PKBatchSampler:
    """Infinite batches: P identities x K crops (+ U unlabeled crops), this rank's share of each.

    Every rank draws the same global batch from the same seed and keeps identities
    [rank*P/W, (rank+1)*P/W) and its slice of the unlabeled crops, so all ranks have equal batch
    shapes (the memory all-gather needs that). For each identity: one random anchor, then K-1
    crops preferring other groups than the anchor's, drawn with replacement when too few exist.
    """

    def __init__(self, labels, groups, p: int, k: int, num_unlabeled: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if p % world_size or num_unlabeled % world_size:
            raise PsdiffError(f"TEACHER.P ({p}) and TEACHER.NUM_UNLABELED ({num_unlabeled}) must "
                              f"be divisible by the number of processes ({world_size})")
        labels = np.asarray(labels)
        self.members = {}
        for index, label in enumerate(labels.tolist()):
            if label >= 0:
                self.members.setdefault(label, []).append(index)
        if len(self.members) < p:
            raise PsdiffError(
                f"TEACHER.P = {p} exceeds the {len(self.members)} training identities")
        self.unlabeled = np.flatnonzero(labels < 0).tolist()
        if num_unlabeled and not self.unlabeled:
            raise PsdiffError("TEACHER.NUM_UNLABELED > 0 but the training set has no unlabeled box")
        self.groups = np.asarray(groups)
        self.p, self.k, self.u = p, k, num_unlabeled
        self.rng = random.Random(seed)
        self.rank, self.world_size = rank, world_size

    def _instances(self, label):
        indices = self.members[label]
        anchor = self.rng.choice(indices)
        others = [i for i in indices if i != anchor]
        self.rng.shuffle(others)
        others.sort(key=lambda i: self.groups[i] == self.groups[anchor])  # other groups first
        chosen = [anchor] + others[: self.k - 1]
        while len(chosen) < self.k:
            chosen.append(self.rng.choice(indices))
        return chosen

    def _epoch(self):
        """One pass over the identities in random order, in groups of P (last partial dropped)."""
        labels = sorted(self.members)
        self.rng.shuffle(labels)
        for start in range(0, len(labels) - self.p + 1, self.p):
            yield labels[start: start + self.p]

    def __iter__(self):
        p_rank, u_rank = self.p // self.world_size, self.u // self.world_size
        while True:
            for identities in self._epoch():
                batch = [self._instances(label) for label in identities]
                unlabeled = [self.rng.choice(self.unlabeled) for _ in range(self.u)]
                mine = batch[self.rank * p_rank: (self.rank + 1) * p_rank]
                yield [i for group in mine for i in group] + \
                    unlabeled[self.rank * u_rank: (self.rank + 1) * u_rank]
