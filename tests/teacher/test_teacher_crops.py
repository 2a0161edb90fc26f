"""Crop cutting (flip symmetry), the crop dataset and the P x K sampler."""

from collections import Counter

import cv2
import numpy as np

from psdiff.teacher.crops import CropDataset, PKBatchSampler, crop_box, flip_box, to_tensor


def test_crop_of_flipped_image_is_mirrored_crop():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 77, 3), dtype=np.uint8)
    box = [10.4, 5.0, 31.7, 44.2]
    crop = image[5:45, 10:32]  # floor/ceil of the box by hand
    assert np.array_equal(crop_box(image, box, (40, 22)), crop)  # same size: no resampling
    flipped = crop_box(np.ascontiguousarray(image[:, ::-1]), flip_box(box, 77), (40, 22))
    assert np.array_equal(flipped, crop[:, ::-1])


def test_to_tensor_is_rgb_imagenet_normalized():
    crop = np.zeros((2, 1, 3), dtype=np.uint8)
    crop[..., 2] = 255  # pure red in BGR
    t = to_tensor(crop)
    assert t.shape == (3, 2, 1)
    assert np.allclose(t[:, 0, 0].numpy(), [(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225],
                       atol=1e-5)


def test_crop_dataset_labels_and_items(tmp_path):
    path = str(tmp_path / "a.jpg")
    cv2.imwrite(path, np.full((60, 40, 3), 128, np.uint8))
    dicts = [{"file_name": path, "image_id": "a.jpg", "height": 60, "width": 40,
              "annotations": [{"bbox": [0, 0, 10, 20], "pid": 7},
                              {"bbox": [5, 5, 15, 25], "pid": -1},
                              {"bbox": [1, 1, 9, 9], "pid": 3}]}]
    ds = CropDataset(dicts, size=(32, 16))
    assert ds.class_pids == [3, 7] and ds.labels.tolist() == [1, -1, 0]
    item = ds[2]
    assert item["image"].shape == (3, 32, 16) and item["label"] == 0


def test_pk_sampler_shapes_groups_and_rank_shards():
    # 6 identities: id 0 has crops in 3 groups, id 5 has a single crop; 5 unlabeled crops
    labels = [0, 0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5, -1, -1, -1, -1, -1]
    groups = [0, 0, 1, 2, 0, 1, 0, 0, 0, 3, 4, 1, 1, 2, 0, 0, 1, 1, 2]
    full = iter(PKBatchSampler(labels, groups, p=2, k=3, num_unlabeled=2, seed=3))
    shards = [iter(PKBatchSampler(labels, groups, p=2, k=3, num_unlabeled=2, seed=3, rank=r,
                                  world_size=2)) for r in range(2)]
    seen = Counter()
    for _ in range(9):  # three epochs of 3 batches of 2 identities
        batch = next(full)
        parts = [next(s) for s in shards]
        assert len(batch) == 2 * 3 + 2
        ids = [labels[i] for i in batch[:6]]
        assert ids[0] == ids[1] == ids[2] and ids[3] == ids[4] == ids[5] and ids[0] != ids[3]
        assert all(labels[i] == -1 for i in batch[6:])
        # rank r holds identity r of the global batch and unlabeled crop r
        assert parts[0] == batch[:3] + batch[6:7] and parts[1] == batch[3:6] + batch[7:]
        for start in (0, 3):
            group = batch[start:start + 3]
            if labels[group[0]] == 0:  # id 0 has >= 2 crops outside any anchor's group
                assert groups[group[0]] not in [groups[i] for i in group[1:]]
        seen.update(ids[::3])
    assert set(seen) == {0, 1, 2, 3, 4, 5} and all(v == 3 for v in seen.values())
