"""The mapper keeps boxes on their persons under resize and flip, and follows the contract."""

import cv2
import numpy as np
import pytest
import torch

from psdiff.config import get_cfg
from psdiff.data import DatasetMapper
from psdiff.data.mapper import resized_shape
from psdiff.utils.errors import PsdiffError

GRAY, RED, GREEN = (100, 100, 100), (0, 0, 255), (0, 255, 0)


@pytest.fixture
def scene(tmp_path):
    """A 80x120 gray PNG with a red box (pid 7) and a green box (unlabeled), both off-centre."""
    image = np.full((80, 120, 3), GRAY, np.uint8)
    image[10:70, 20:50] = RED  # box [20, 10, 50, 70]
    image[30:60, 80:100] = GREEN  # box [80, 30, 100, 60]
    path = str(tmp_path / "scene.png")
    cv2.imwrite(path, image)
    return {
        "file_name": path, "image_id": "scene.png", "height": 80, "width": 120,
        "annotations": [
            {"bbox": [20.0, 10.0, 50.0, 70.0], "pid": 7, "embedding": [1.0, 0.0],
             "embedding_flip": [0.0, 1.0]},
            {"bbox": [80.0, 30.0, 100.0, 60.0], "pid": -1, "embedding": [0.5, 0.5],
             "embedding_flip": [0.25, 0.75]},
        ],
    }


def _inner_color(image: torch.Tensor, box, margin: int = 2):
    """Mean BGR color strictly inside a box (away from interpolated edges)."""
    x1, y1, x2, y2 = [int(round(float(v))) for v in box]
    patch = image[:, y1 + margin : y2 - margin, x1 + margin : x2 - margin]
    return patch.float().mean(dim=(1, 2)).tolist()


def _ring_color(image: torch.Tensor, box, margin: int = 2):
    """Mean color of a 1-pixel column just left and right of a box."""
    x1, y1, x2, y2 = [int(round(float(v))) for v in box]
    cols = torch.cat([image[:, y1:y2, x1 - margin], image[:, y1:y2, x2 + margin]], dim=1)
    return cols.float().mean(dim=1).tolist()


def test_resized_shape_by_hand():
    assert resized_shape(480, 640, 800, 1333) == (800, 1067)  # 640 * 800 / 480 = 1066.67
    assert resized_shape(1080, 1920, 800, 1333) == (750, 1333)  # long edge capped
    assert resized_shape(576, 720, 800, 1333) == (800, 1000)


def test_boxes_stay_on_persons_under_resize_and_flip(scene):
    mapper = DatasetMapper(is_train=True, min_sizes=(48, 96, 160), max_size=200)
    seen = set()
    for seed in range(12):
        out = mapper(scene, rng=np.random.default_rng(seed))
        image, inst = out["image"], out["instances"]
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        h, w = image.shape[1:]
        scale_x, scale_y = w / 120, h / 80
        x1, y1, x2, y2 = 20 * scale_x, 10 * scale_y, 50 * scale_x, 70 * scale_y  # the red box
        flipped = np.allclose(_inner_color(image, [w - x2, y1, w - x1, y2]), RED, atol=12)
        seen.add((h, flipped))
        expected = [w - x2, y1, w - x1, y2] if flipped else [x1, y1, x2, y2]
        np.testing.assert_allclose(inst["boxes"][0].numpy(), expected, rtol=1e-5)
        assert inst["pids"].tolist() == [7, -1] and inst["pids"].dtype == torch.int64
        np.testing.assert_allclose(_inner_color(image, inst["boxes"][0]), RED, atol=12)
        np.testing.assert_allclose(_inner_color(image, inst["boxes"][1]), GREEN, atol=12)
        np.testing.assert_allclose(_ring_color(image, inst["boxes"][0]), GRAY, atol=12)
        expected_embeddings = [[0.0, 1.0], [0.25, 0.75]] if flipped else [[1.0, 0.0], [0.5, 0.5]]
        assert inst["embeddings"].tolist() == expected_embeddings
        assert (out["height"], out["width"], out["image_id"]) == (80, 120, "scene.png")
    assert {h for h, _ in seen} == {48, 96, 133}  # 160 hits the 200 px cap: 80 * 200/120
    assert {f for _, f in seen} == {True, False}


def test_test_mode_and_config(scene):
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 40, 1000
    out = DatasetMapper.from_config(cfg, is_train=False)(scene)
    assert "instances" not in out and out["image"].shape == (3, 40, 60)
    np.testing.assert_allclose(_inner_color(out["image"], [10, 5, 25, 35], 1), RED, atol=12)
    with_gt = DatasetMapper.from_config(cfg, is_train=False, with_instances=True)(scene)
    np.testing.assert_allclose(with_gt["instances"]["boxes"][0].numpy(), [10, 5, 25, 35])


def test_boxes_clipped_and_dropped_without_teacher_targets(scene):
    scene["annotations"] = [
        {"bbox": [-10.0, 10.0, 30.0, 90.0], "pid": 3},  # leaves the image: clipped
        {"bbox": [130.0, 10.0, 150.0, 20.0], "pid": 4},  # wholly outside: dropped
    ]
    mapper = DatasetMapper(is_train=True, min_sizes=(80,), max_size=1000, flip="none")
    inst = mapper(scene, rng=np.random.default_rng(0))["instances"]
    assert inst["boxes"].tolist() == [[0.0, 10.0, 30.0, 80.0]] and inst["pids"].tolist() == [3]
    assert "embeddings" not in inst


def test_size_mismatch_is_reported(scene):
    scene["height"] = 81
    with pytest.raises(PsdiffError, match="scene.png is 80x120 but its annotation says 81x120"):
        DatasetMapper(is_train=False, min_sizes=(80,), max_size=1000)(scene)


def test_rgb_format_and_unreadable_images(scene, tmp_path):
    mapper = DatasetMapper(is_train=False, min_sizes=(80,), max_size=1000, image_format="RGB")
    image = mapper(scene)["image"]
    assert _inner_color(image, [20, 10, 50, 70]) == [255.0, 0.0, 0.0]  # red, now R first
    missing = str(tmp_path / "gone.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"no PNG inside")
    for path, message in ((missing, "image not found: "), (str(broken), "cannot read image ")):
        with pytest.raises(PsdiffError) as err:
            mapper(dict(scene, file_name=path))
        assert str(err.value).startswith(message + path) and "\n" not in str(err.value)


def test_partial_teacher_targets_are_reported(scene):
    del scene["annotations"][1]["embedding_flip"]
    mapper = DatasetMapper(is_train=True, min_sizes=(80,), max_size=1000)
    flips = set()
    for seed in range(8):
        rng = np.random.default_rng(seed)
        flipped = np.random.default_rng(seed).random() < 0.5  # the mapper's one draw: the flip
        flips.add(flipped)
        if flipped:
            message = "1 of 2 persons of .*scene.png lack .*'embedding_flip'"
            with pytest.raises(PsdiffError, match=message):
                mapper(scene, rng=rng)
        else:
            assert mapper(scene, rng=rng)["instances"]["embeddings"].shape == (2, 2)
    assert flips == {True, False}
