"""Synthetic person-search benchmark, written in the exact on-disk formats of CUHK-SYSU and PRW.

The real datasets cannot be downloaded here, so the demo and the tests use this generator; the
real loaders (psdiff/data/datasets: `cuhk_sysu.py`, `prw.py`) read its output, which proves them
on the formats. The output is a pure function of the options and `seed` (each image has its own
random stream).

* CUHK-SYSU (`write_cuhk_sysu`): `Image/SSM/s<k>.jpg` (k a random permutation, so string and
  numeric order differ), `annotation/{Images,Person,pool}.mat`, `annotation/test/train_test/
  Train.mat` and `TestG<N>.mat` with the published variable names, struct layouts and field
  orders. Train and test identities are disjoint; every identity appears at least twice in its
  split; one query per test identity. Gallery sizes: a pool of P images supports a gallery of N
  only if N <= P - 1, so by default the generator writes the published sizes (50 .. 4000) that
  fit the pool; `gallery_sizes` chooses others (the tests use tiny ones). Positives come first in
  every gallery, and a larger gallery extends a smaller one.
* PRW (`write_prw`): `frames/c<cam>s<seq>_<frame6>.jpg` from six cameras (cams 1-5 16:9, cam 6
  smaller and 5:4, as in PRW), a fixed background per camera, `annotations/<frame>.jpg.mat` with
  `[id, x, y, w, h]` rows (fractional, negative for persons leaving the frame, -2 = unknown id;
  mostly `box_new`, some `anno_file` / `anno_previous`), `frame_{train,test}.mat`,
  `ID_train.mat`, `ID_test.mat` (`ID_test2`), `query_info.txt` with CRLF endings (one query per
  test identity per camera it appears in, its box slightly off the annotation as PRW's are hand
  drawn) and `query_box/` crops. Ids are sparse raw numbers, train and test disjoint.

Neither writer produces a 1-element struct or cell array where the reference loaders
`.squeeze()` (they would crash on it): at least two queries, two scenes per person, two gallery
entries. Each tree holds `psdiff_synthetic.json` (options and seed), which tells the loaders not
to compare its counts with the published ones.
"""

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np
import scipy.io
from tqdm import tqdm

from psdiff.data.datasets.common import SYNTHETIC_MARKER
from psdiff.utils.errors import PsdiffError
from psdiff.utils.image import read_image, write_image
from psdiff.utils.io import remove_stale_temporaries

from .scenes import random_appearance, render_background, render_scene

CUHK_GALLERY_SIZES = (50, 100, 500, 1000, 2000, 4000)
# PRW camera frame sizes (height, width): cams 1-5 are 1920x1080 and cam 6 720x576 in PRW.
PRW_CAMERA_SIZES = ((180, 320),) * 5 + ((192, 240),)
MIN_APPEARANCES = 2  # a query needs another image of its person; training needs pairs
JPEG_QUALITY = 90


@dataclass
class GroundTruth:
    """What a writer put on disk, in its own terms, for tests to compare the loaders against.

    `images`: image name (with .jpg) -> {"height", "width", "split" ("train" | "test"),
    "persons": [(identity, box)], and for PRW "cam" and "variable" (the .mat variable name)}.
    CUHK-SYSU: identity = person name ("p12") or None (unlabeled), box = int (x, y, w, h).
    PRW: identity = raw id (-2 = unknown), box = float [x, y, w, h] as written.
    `train_ids` / `test_ids`: CUHK-SYSU Train.mat order of names; PRW ID_train / ID_test2.
    `queries`: (identity, image name, box as written), in file order.
    `galleries` (CUHK-SYSU): gallery size -> per query, its gallery as (image name, box or None)
    in file order. `pool` (CUHK-SYSU): the test images in pool.mat order.
    """

    root: str
    images: dict = field(default_factory=dict)
    train_ids: list = field(default_factory=list)
    test_ids: list = field(default_factory=list)
    queries: list = field(default_factory=list)
    galleries: dict = field(default_factory=dict)
    pool: list = field(default_factory=list)


def _options(arguments: dict, name: str) -> dict:
    """The generator options recorded in the tree's marker file (not where it was written)."""
    return dict({k: v for k, v in arguments.items() if k not in ("root", "progress")}, format=name)


def _check_person_counts(persons_per_image: tuple, unlabeled_per_image: tuple) -> None:
    """Every image shows at least one labeled person (a box-less image breaks the reference)."""
    ranges = {"persons_per_image": persons_per_image, "unlabeled_per_image": unlabeled_per_image}
    for name, (low, high) in ranges.items():
        if not 0 <= low <= high:
            raise PsdiffError(f"synthetic benchmark: {name} = {(low, high)} is not a range")
    if persons_per_image[0] < 1:
        raise PsdiffError("synthetic benchmark: persons_per_image must start at 1 or more")


@contextmanager
def _staged(root: str, options: dict):
    """A fresh folder beside `root` that the tree is written into; once complete it replaces
    `root` (an older synthetic tree, never anything else), so a failed or interrupted run
    leaves `root` as it was and no half-written tree. Folders that killed runs left are
    removed first."""
    if os.path.isdir(root) and os.listdir(root) and \
            not os.path.isfile(os.path.join(root, SYNTHETIC_MARKER)):
        raise PsdiffError(f"{root} is not empty and was not written by the synthetic generator")
    parent, name = os.path.split(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    remove_stale_temporaries(parent)
    folder = os.path.join(parent, f"{name}.tmp.{os.getpid()}")
    os.makedirs(folder)
    try:
        with open(os.path.join(folder, SYNTHETIC_MARKER), "w") as f:
            json.dump(options, f, indent=1, sort_keys=True)
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if os.path.isdir(root):
        shutil.rmtree(root)
    os.replace(folder, root)


def _assign_identities(rng, num_images: int, ids: list, per_image: tuple, split: str) -> list:
    """The labeled identities of each image: `per_image` (min, max) of them, least used first,
    so appearances spread evenly; fails if some identity ends with fewer than two."""
    counts = {identity: 0 for identity in ids}
    plan = []
    for _ in range(num_images):
        count = min(int(rng.integers(per_image[0], per_image[1] + 1)), len(ids))
        used = [counts[identity] for identity in ids]
        order = np.lexsort((rng.random(len(ids)), used))  # fewest appearances first, ties random
        chosen = [ids[i] for i in order[:count]]
        for identity in chosen:
            counts[identity] += 1
        plan.append(chosen)
    rare = [identity for identity, n in counts.items() if n < MIN_APPEARANCES]
    if rare:
        raise PsdiffError(
            f"synthetic {split} split: {len(rare)} of {len(ids)} identities appear fewer than "
            f"{MIN_APPEARANCES} times; use more images, more persons per image or fewer identities"
        )
    return plan


def _plan(rng, names: list, num_train: int, gt: GroundTruth, per_image: tuple) -> list:
    """(split, image name, labeled identities) for every image: the first `num_train` names
    show train identities, the rest test identities."""
    splits = (
        ("train", names[:num_train], gt.train_ids),
        ("test", names[num_train:], gt.test_ids),
    )
    plan = []
    for split, split_names, ids in splits:
        chosen = _assign_identities(rng, len(split_names), ids, per_image, split)
        plan += [(split, name, labeled) for name, labeled in zip(split_names, chosen)]
    return plan


def _render(rng, background, identities: list, looks: dict, outside: bool):
    """Image and boxes of a scene holding `identities` (None / -2 = a fresh unlabeled person)."""
    appearances = [looks.get(i) or random_appearance(rng) for i in identities]
    return render_scene(rng, background, appearances, outside)


def _with_unlabeled(rng, labeled: list, unlabeled_range: tuple, unlabeled_id) -> list:
    """Labeled identities plus a random number of unlabeled persons, in random order."""
    count = int(rng.integers(unlabeled_range[0], unlabeled_range[1] + 1))
    identities = list(labeled) + [unlabeled_id] * count
    return [identities[i] for i in rng.permutation(len(identities))]


def _write_jpeg(path: str, image: np.ndarray) -> None:
    """Write a JPEG at the generator's quality."""
    write_image(path, image, (cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY))


def _save_mat(path: str, variables: dict) -> None:
    """Write a MATLAB v5 file, creating its folder."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    scipy.io.savemat(path, variables)


def _struct(fields: tuple, rows: list) -> np.ndarray:
    """A MATLAB 1xN struct array with `fields` in this order (the reference reads by position)."""
    array = np.empty((1, len(rows)), dtype=[(name, object) for name in fields])
    for i, row in enumerate(rows):
        array[0, i] = row
    return array


def _cell_column(items: list) -> np.ndarray:
    """A MATLAB Nx1 cell array."""
    array = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        array[i, 0] = item
    return array


def _xywh(box) -> np.ndarray:
    """A box as MATLAB's 1x4 double `idlocate`."""
    return np.asarray(box, dtype=np.float64).reshape(1, 4)


def _scalar(value) -> np.ndarray:
    """A MATLAB 1x1 double."""
    return np.array([[float(value)]])


def _scenes(appearances: list) -> np.ndarray:
    """`scene` struct 1xn (imname, idlocate, ishard) of a person's (image, box) appearances."""
    rows = [(name, _xywh(box), _scalar(0)) for name, box in appearances]
    return _struct(("imname", "idlocate", "ishard"), rows)


def _person(name: str, appearances: list) -> tuple:
    """One (idname, nAppear, scene) record of Person.mat / Train.mat."""
    return (name, _scalar(len(appearances)), _scenes(appearances))


def _cuhk_galleries(rng, gt: GroundTruth, test_names: list, sizes: list) -> None:
    """Choose one query per test identity and its galleries for every size (into `gt`)."""
    where = {identity: [] for identity in gt.test_ids}
    for name in test_names:
        for identity, box in gt.images[name]["persons"]:
            if identity is not None:
                where[identity].append((name, box))
    gt.galleries = {size: [] for size in sizes}
    for identity in [gt.test_ids[i] for i in rng.permutation(len(gt.test_ids))]:
        shown = [where[identity][i] for i in rng.permutation(len(where[identity]))]
        query, positives = shown[0], shown[1:]
        holding = {name for name, _ in shown}
        negatives = [n for n in test_names if n not in holding]
        negatives = [negatives[i] for i in rng.permutation(len(negatives))]
        gt.queries.append((identity, query[0], query[1]))
        if len(positives) >= min(sizes):
            raise PsdiffError(
                f"synthetic CUHK-SYSU: query {identity} has {len(positives)} gallery positives, "
                f"which do not fit gallery size {min(sizes)}; use larger gallery sizes"
            )
        for size in sizes:
            gallery = [(n, b) for n, b in positives] + [(n, None) for n in negatives]
            gt.galleries[size].append(gallery[:size])


def _write_cuhk_annotations(root: str, gt: GroundTruth) -> None:
    """Images.mat, Person.mat, pool.mat, Train.mat and TestG<N>.mat from the ground truth."""
    annotation = os.path.join(root, "annotation")
    protocol = os.path.join(annotation, "test", "train_test")
    box_fields = ("idlocate", "ishard")
    images = []
    for name in sorted(gt.images, key=lambda n: int(n[1:-4])):
        boxes = [(_xywh(box), _scalar(0)) for _, box in gt.images[name]["persons"]]
        images.append((name, _scalar(len(boxes)), _struct(box_fields, boxes)))
    image_struct = _struct(("imname", "nAppear", "box"), images)
    _save_mat(os.path.join(annotation, "Images.mat"), {"Img": image_struct})
    shown = {identity: [] for identity in gt.train_ids + gt.test_ids}
    for name, image in gt.images.items():
        for identity, box in image["persons"]:
            if identity is not None:
                shown[identity].append((name, box))
    person_fields = ("idname", "nAppear", "scene")
    persons = [_person(identity, shown[identity]) for identity in shown]
    _save_mat(os.path.join(annotation, "Person.mat"), {"Person": _struct(person_fields, persons)})
    _save_mat(os.path.join(annotation, "pool.mat"), {"pool": _cell_column(gt.pool)})
    train = _cell_column([_struct(person_fields, [_person(i, shown[i])]) for i in gt.train_ids])
    _save_mat(os.path.join(protocol, "Train.mat"), {"Train": train})
    query_fields = ("imname", "idlocate", "ishard", "idname")
    for size, galleries in gt.galleries.items():
        records = []
        for (identity, name, box), gallery in zip(gt.queries, galleries):
            query = _struct(query_fields, [(name, _xywh(box), _scalar(0), identity)])
            # Images without the query person have an empty 1x0 idlocate
            # (docs/datasets-and-evaluation.md §1.2).
            entries = [
                (n, _xywh(b) if b is not None else np.zeros((1, 0)), _scalar(0)) for n, b in gallery
            ]
            records.append((query, _struct(("imname", "idlocate", "ishard"), entries)))
        variable = f"TestG{size}"
        protocol_struct = _struct(("Query", "Gallery"), records)
        _save_mat(os.path.join(protocol, variable + ".mat"), {variable: protocol_struct})


def write_cuhk_sysu(
    root: str,
    num_train_images: int = 180,
    num_test_images: int = 120,
    num_train_ids: int = 50,
    num_test_ids: int = 50,
    persons_per_image: tuple = (1, 3),
    unlabeled_per_image: tuple = (0, 2),
    image_size: tuple = (240, 320),
    gallery_sizes: tuple = None,
    seed: int = 0,
    progress: bool = False,
) -> GroundTruth:
    """Write a synthetic CUHK-SYSU tree into the dataset folder `root`; return its ground truth.

    `persons_per_image` / `unlabeled_per_image`: (min, max) labeled / unlabeled persons per image;
    `image_size`: (height, width); `gallery_sizes`: the TestG<N> files to write (default: the
    published sizes that fit the test pool).
    """
    options = _options(locals(), "cuhk_sysu")
    sizes = list(gallery_sizes or [s for s in CUHK_GALLERY_SIZES if s <= num_test_images - 1])
    _check_person_counts(persons_per_image, unlabeled_per_image)
    if num_test_ids < 2 or not sizes or min(sizes) < 2 or max(sizes) > num_test_images - 1:
        raise PsdiffError(
            f"synthetic CUHK-SYSU: gallery sizes {sizes} and {num_test_ids} test identities need "
            f"at least 2 queries and sizes in 2..{num_test_images - 1} (test images - 1)"
        )
    with _staged(root, options) as folder:
        rng = np.random.default_rng(seed)
        names = [f"s{k}.jpg" for k in rng.permutation(num_train_images + num_test_images) + 1]
        ids = [f"p{k}" for k in rng.permutation(num_train_ids + num_test_ids) + 1]
        gt = GroundTruth(root, train_ids=ids[:num_train_ids], test_ids=ids[num_train_ids:])
        looks = {identity: random_appearance(rng) for identity in ids}
        plan = _plan(rng, names, num_train_images, gt, persons_per_image)
        height, width = image_size
        for index, (split, name, labeled) in enumerate(tqdm(plan, "CUHK-SYSU",
                                                            disable=not progress)):
            image_rng = np.random.default_rng([seed, index])
            identities = _with_unlabeled(image_rng, labeled, unlabeled_per_image, None)
            background = render_background(image_rng, height, width)
            image, boxes = _render(image_rng, background, identities, looks, outside=False)
            _write_jpeg(os.path.join(folder, "Image", "SSM", name), image)
            persons = list(zip(identities, boxes))
            gt.images[name] = {"height": height, "width": width, "split": split,
                               "persons": persons}
        test_names = names[num_train_images:]
        _cuhk_galleries(rng, gt, test_names, sizes)
        gt.pool = [test_names[i] for i in rng.permutation(len(test_names))]
        _write_cuhk_annotations(folder, gt)
    return gt


def _prw_frame_names(rng, count: int, cameras: int) -> list:
    """`c<cam>s<seq>_<frame6>` names, cameras in turn, frame numbers rising per sequence."""
    names = []
    next_frame = {}
    for index in rng.permutation(count):
        cam, seq = int(index % cameras) + 1, int(rng.integers(1, 3))
        frame = next_frame.get((cam, seq), 0) + int(rng.integers(20, 200))
        next_frame[(cam, seq)] = frame
        names.append(f"c{cam}s{seq}_{frame:06d}")
    return names


def _prw_annotation(rng, box: tuple) -> list:
    """An integer drawn box as PRW writes it: fractional [x, y, w, h] (2 decimals) on the person."""
    x, y, w, h = box
    return [round(float(v + rng.uniform(-0.45, 0.45)), 2) for v in (x, y, w, h)]


def _prw_queries(rng, gt: GroundTruth) -> None:
    """One query per test identity per camera it appears in, box jittered a little (into `gt`)."""
    for identity in gt.test_ids:
        by_camera = {}
        for name in sorted(gt.images):
            image = gt.images[name]
            for pid, box in image["persons"]:
                if pid == identity and image["split"] == "test":
                    by_camera.setdefault(image["cam"], []).append((name, box))
        for cam in sorted(by_camera):
            name, box = by_camera[cam][rng.integers(len(by_camera[cam]))]
            jittered = [round(float(v + rng.uniform(-2, 2)), 2) for v in box]
            gt.queries.append((identity, name, jittered))


def _write_prw_files(root: str, gt: GroundTruth) -> None:
    """Frame lists, id lists, query_info.txt (CRLF) and query crops from the ground truth."""
    for split, file, variable in (("train", "frame_train.mat", "img_index_train"),
                                  ("test", "frame_test.mat", "img_index_test")):
        frames = [n[:-4] for n in sorted(gt.images) if gt.images[n]["split"] == split]
        _save_mat(os.path.join(root, file), {variable: _cell_column(frames)})
    _save_mat(os.path.join(root, "ID_train.mat"), {"ID_train": np.array([gt.train_ids], float)})
    _save_mat(os.path.join(root, "ID_test.mat"), {"ID_test2": np.array([gt.test_ids], float)})
    with open(os.path.join(root, "query_info.txt"), "wb") as f:
        for pid, name, (x, y, w, h) in gt.queries:
            f.write(f"{pid} {x:.2f} {y:.2f} {w:.2f} {h:.2f} {name[:-4]}\r\n".encode())
    for pid, name, (x, y, w, h) in gt.queries:
        frame = read_image(os.path.join(root, "frames", name))
        x1, y1 = max(int(x), 0), max(int(y), 0)
        crop = frame[y1 : max(int(y + h), y1 + 1), x1 : max(int(x + w), x1 + 1)]
        _write_jpeg(os.path.join(root, "query_box", f"{pid}_{name}"), crop)


def write_prw(
    root: str,
    num_train_frames: int = 200,
    num_test_frames: int = 150,
    num_train_ids: int = 40,
    num_test_ids: int = 40,
    persons_per_image: tuple = (1, 3),
    unlabeled_per_image: tuple = (0, 2),
    camera_sizes: tuple = PRW_CAMERA_SIZES,
    seed: int = 0,
    progress: bool = False,
) -> GroundTruth:
    """Write a synthetic PRW tree into the dataset folder `root`; return its ground truth.

    `camera_sizes`: (height, width) of each camera's frames (their number = cameras, at most 9);
    the other options as for `write_cuhk_sysu`.
    """
    options = _options(locals(), "prw")
    _check_person_counts(persons_per_image, unlabeled_per_image)
    if not 1 <= len(camera_sizes) <= 9:
        raise PsdiffError(f"synthetic PRW: {len(camera_sizes)} cameras; PRW names allow 1 to 9")
    with _staged(root, options) as folder:
        rng = np.random.default_rng(seed)
        total_ids = num_train_ids + num_test_ids
        raw_ids = rng.choice(np.arange(1, 3 * total_ids + 1), total_ids, False)
        raw_ids = [int(i) for i in raw_ids]
        train_ids, test_ids = sorted(raw_ids[:num_train_ids]), sorted(raw_ids[num_train_ids:])
        gt = GroundTruth(root, train_ids=train_ids, test_ids=test_ids)
        looks = {identity: random_appearance(rng) for identity in raw_ids}
        names = _prw_frame_names(rng, num_train_frames + num_test_frames, len(camera_sizes))
        plan = _plan(rng, names, num_train_frames, gt, persons_per_image)
        backgrounds = [
            render_background(np.random.default_rng([seed, 1 << 30, cam]), height, width)
            for cam, (height, width) in enumerate(camera_sizes)
        ]
        variables = ("box_new",) * 17 + ("anno_file",) * 2 + ("anno_previous",)  # mostly new
        progress_bar = tqdm(plan, desc="PRW", disable=not progress)
        for index, (split, frame, labeled) in enumerate(progress_bar):
            image_rng = np.random.default_rng([seed, index])
            cam = int(frame[1])
            identities = _with_unlabeled(image_rng, labeled, unlabeled_per_image, -2)
            image, boxes = _render(image_rng, backgrounds[cam - 1], identities, looks,
                                   outside=True)
            name = frame + ".jpg"
            _write_jpeg(os.path.join(folder, "frames", name), image)
            persons = [(pid, _prw_annotation(image_rng, box))
                       for pid, box in zip(identities, boxes)]
            variable = variables[image_rng.integers(len(variables))]
            rows = np.array([[pid] + box for pid, box in persons], dtype=np.float64)
            rows = rows.reshape(-1, 5)
            _save_mat(os.path.join(folder, "annotations", name + ".mat"), {variable: rows})
            gt.images[name] = {
                "height": image.shape[0], "width": image.shape[1], "split": split, "cam": cam,
                "variable": variable, "persons": persons,
            }
        _prw_queries(rng, gt)
        _write_prw_files(folder, gt)
    return gt
