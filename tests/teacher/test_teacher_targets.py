"""The e0 cache: built by the tool, the embedding of exactly the right crop (flips included),
refused in one line when built for another dataset or another teacher."""

import math

import cv2
import numpy as np
import pytest
import torch
from teacher_helpers import CONFIG, tiny_cfg
from tools_loader import load_tool

from psdiff.data.build import build_train_loader, load_train_dicts
from psdiff.data.catalog import get_train_dicts
from psdiff.data.teacher_targets import attach_targets_from_config, load_targets
from psdiff.teacher.model import TeacherModel
from psdiff.teacher.network import load_teacher
from psdiff.utils.errors import PsdiffError

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _save_teacher(cfg, path, seed):
    torch.manual_seed(seed)
    model = TeacherModel.from_config(cfg, num_classes=20)
    model.network.neck.running_mean.normal_()  # eval-mode BN must matter, not be identity
    torch.save({"model": model.state_dict()}, path)


def _hand_embedding(teacher, image_bgr, box, size):
    """Crop by hand (floor/ceil, bicubic), normalize by hand, run the teacher."""
    x1, y1, x2, y2 = math.floor(box[0]), math.floor(box[1]), math.ceil(box[2]), math.ceil(box[3])
    crop = cv2.resize(image_bgr[y1:y2, x1:x2], (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    rgb = (crop[:, :, ::-1] / 255.0 - MEAN) / STD
    tensor = torch.tensor(rgb.transpose(2, 0, 1)[None].copy(), dtype=torch.float32)
    with torch.no_grad():
        return teacher(tensor)["embedding"][0].numpy()


@pytest.fixture(scope="module")
def built(teacher_datasets_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("targets")
    weights, cache = str(out / "teacher.pth"), str(out / "e0.npz")
    cfg = tiny_cfg(teacher_datasets_root, out, "TEACHER.WEIGHTS", weights, "TEACHER.CACHE", cache)
    _save_teacher(cfg, weights, seed=0)
    argv = ["--config-file", CONFIG, "DATASETS.ROOT", teacher_datasets_root,
            "MODEL.PSDIFF.EMB_DIM", "32", "TEACHER.WEIGHTS", weights, "TEACHER.CACHE", cache]
    assert load_tool("build_targets").run(argv) == 0
    return cfg, out


def test_e0_is_the_embedding_of_the_right_crop_and_its_flip(built):
    cfg, _ = built
    dicts = get_train_dicts("synthetic_cuhk_sysu_train", cfg.DATASETS.ROOT)
    with_e0 = attach_targets_from_config(cfg, dicts)
    teacher = load_teacher(cfg)
    size = cfg.TEACHER.INPUT_SIZE
    checked = 0
    for record in with_e0[:6]:
        image = cv2.imread(record["file_name"])
        flipped = cv2.flip(image, 1)
        width = image.shape[1]
        cached = np.stack([a["embedding"] for a in record["annotations"]])
        cached_flip = np.stack([a["embedding_flip"] for a in record["annotations"]])
        for j, ann in enumerate(record["annotations"]):
            x1, y1, x2, y2 = ann["bbox"]
            hand = _hand_embedding(teacher, image, ann["bbox"], size)
            hand_flip = _hand_embedding(teacher, flipped, [width - x2, y1, width - x1, y2], size)
            assert np.allclose(cached[j], hand, atol=1e-5)
            assert np.allclose(cached_flip[j], hand_flip, atol=1e-5)
            assert int(np.argmax(cached @ hand)) == j  # not a neighbour's crop
            assert not np.allclose(hand, hand_flip, atol=1e-3)  # the flip is a different crop
            checked += 1
    assert checked >= 6
    assert "embedding" not in dicts[0]["annotations"][0]  # the input dicts are left untouched


def test_train_loader_carries_e0_exactly_when_teacher_cache_is_set(built):
    cfg, _ = built
    cfg = cfg.clone()
    cfg.merge_from_list(["SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
                         "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96"])
    cached = {d["image_id"]: d for d in attach_targets_from_config(cfg, load_train_dicts(cfg))}
    for x in next(iter(build_train_loader(cfg))):
        annotations = cached[x["image_id"]]["annotations"]
        e0 = x["instances"]["embeddings"].numpy()
        assert any(np.array_equal(e0, np.stack([a[key] for a in annotations]))
                   for key in ("embedding", "embedding_flip"))
    cfg.merge_from_list(["TEACHER.CACHE", ""])
    assert all("embeddings" not in x["instances"] for x in next(iter(build_train_loader(cfg))))


def test_cache_of_other_dataset_or_teacher_is_refused(built, teacher_datasets_root):
    cfg, out = built
    dicts = get_train_dicts("synthetic_cuhk_sysu_train", cfg.DATASETS.ROOT)
    with pytest.raises(PsdiffError, match="built for dataset 'synthetic_cuhk_sysu_train', not "
                                          "'prw_train'") as err:
        load_targets(cfg.TEACHER.CACHE, "prw_train")
    assert "\n" not in str(err.value)
    other = str(out / "other_teacher.pth")
    _save_teacher(cfg, other, seed=1)
    cfg_other = tiny_cfg(teacher_datasets_root, out, "TEACHER.WEIGHTS", other, "TEACHER.CACHE",
                         cfg.TEACHER.CACHE)
    with pytest.raises(PsdiffError, match="was built by teacher") as err:
        attach_targets_from_config(cfg_other, dicts)
    assert "\n" not in str(err.value)
    moved = [dict(d) for d in dicts]
    moved[3] = dict(moved[3], annotations=[dict(a, bbox=[v + 2 for v in a["bbox"]])
                                           for a in moved[3]["annotations"]])
    with pytest.raises(PsdiffError, match=f"boxes of image {moved[3]['image_id']} differ"):
        attach_targets_from_config(cfg, moved)
    assert len(attach_targets_from_config(cfg, dicts[::2])) == len(dicts[::2])  # a subset is fine


def test_corrupt_or_truncated_cache_is_one_line(built, tmp_path):
    cfg, _ = built
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"these bytes are no npz archive")
    with open(cfg.TEACHER.CACHE, "rb") as f:
        data = f.read()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    for path in (garbage, truncated):
        with pytest.raises(PsdiffError) as err:
            load_targets(str(path))
        message = str(err.value)
        assert message.startswith(f"TEACHER.CACHE {path} is not an intact e0 cache (")
        assert "\n" not in message


def _nan_copy(source, target, rows):
    """A copy of an e0 cache whose `embeddings` rows `rows` are NaN."""
    with np.load(source) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["embeddings"] = arrays["embeddings"].copy()
    arrays["embeddings"][rows] = np.nan
    np.savez(target, **arrays)
    return arrays


def test_non_finite_e0_is_refused_when_read_naming_the_image(built, tmp_path):
    cfg, _ = built
    one_row = str(tmp_path / "one_row.npz")
    arrays = _nan_copy(cfg.TEACHER.CACHE, one_row, 7)
    # the image owning row 7, found by hand from the offsets
    image = [i for i in range(len(arrays["image_ids"]))
             if arrays["offsets"][i] <= 7 < arrays["offsets"][i + 1]][0]
    box = 7 - arrays["offsets"][image]
    with pytest.raises(PsdiffError) as err:
        load_targets(one_row)
    assert str(err.value) == (
        f"TEACHER.CACHE {one_row}: embeddings of image {arrays['image_ids'][image]} (box {box}) "
        "holds nan; rebuild it with tools/build_targets.py from a teacher that did not diverge")
    all_rows = str(tmp_path / "all_rows.npz")
    _nan_copy(cfg.TEACHER.CACHE, all_rows, slice(None))
    cfg_nan = cfg.clone()
    cfg_nan.TEACHER.CACHE = all_rows
    dicts = get_train_dicts("synthetic_cuhk_sysu_train", cfg.DATASETS.ROOT)
    with pytest.raises(PsdiffError, match=f"embeddings of image {arrays['image_ids'][0]} "
                                          r"\(box 0\) holds nan"):
        attach_targets_from_config(cfg_nan, dicts)
