"""Catalog, samplers and loaders: sharding, grouping, ordering and bit-identical resume."""

import itertools

import numpy as np
import pytest
import torch

from psdiff.config import get_cfg
from psdiff.data import (
    build_test_loader,
    build_train_loader,
    get_search_split,
    resolve_root,
)
from psdiff.data.build import load_train_dicts
from psdiff.data.samplers import BatchesFrom, BatchSampler, TrainingSampler, inference_shard


@pytest.fixture
def cfg(datasets_root, cuhk_tree, prw_tree):
    cfg = get_cfg()
    cfg.DATASETS.ROOT = datasets_root
    cfg.DATASETS.TRAIN = ("synthetic_cuhk_sysu_train", "synthetic_prw_train")
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.INPUT.MIN_SIZE_TRAIN = (40, 56)
    cfg.INPUT.MAX_SIZE_TRAIN = 100
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 48, 100
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SEED = 11
    return cfg


def _fingerprint(batch):
    """Everything a training step sees of a batch."""
    return [
        (d["image_id"], d["image"].numpy().tobytes(), d["instances"]["boxes"].numpy().tobytes(),
         d["instances"]["pids"].tolist())
        for d in batch
    ]


def test_resume_is_bit_identical_and_workers_do_not_matter(cfg):
    full = [_fingerprint(b) for b in itertools.islice(build_train_loader(cfg), 6)]
    resumed = [_fingerprint(b) for b in itertools.islice(build_train_loader(cfg, start_iter=4), 2)]
    assert resumed == full[4:]
    cfg.DATALOADER.NUM_WORKERS = 2
    with_workers = [_fingerprint(b) for b in itertools.islice(build_train_loader(cfg), 6)]
    assert with_workers == full
    assert all(len(b) == 2 for b in full)
    cfg.SEED = 12
    assert [_fingerprint(b) for b in itertools.islice(build_train_loader(cfg), 6)] != full


def test_train_dicts_from_catalog(cfg, cuhk_tree, prw_tree):
    dicts = load_train_dicts(cfg)
    images = [image for gt in (cuhk_tree[1], prw_tree[1]) for image in gt.images.values()]
    expected = sum(image["split"] == "train" for image in images)
    assert len(dicts) == expected
    dicts[0]["annotations"] = []
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True
    assert len(load_train_dicts(cfg)) == expected  # every image on disk has persons
    batch = next(iter(build_train_loader(cfg, dataset_dicts=dicts[:1] * 2)))
    assert batch[0]["instances"]["boxes"].shape == (0, 4)  # an image without persons still loads


def test_training_sampler_shards_one_global_stream():
    size, world = 7, 3
    streams = [list(itertools.islice(TrainingSampler(size, 5, r, world), 10)) for r in range(world)]
    merged = [streams[p % world][p // world] for p in range(30)]
    assert merged == list(itertools.islice(TrainingSampler(size, 5), 30))
    indices = [i for i, _ in merged]
    assert sorted(indices[:size]) == list(range(size))  # every epoch visits each image once
    assert sorted(indices[size : 2 * size]) == list(range(size))
    assert indices[:size] != indices[size : 2 * size]  # reshuffled per epoch
    assert [p for _, p in merged] == list(range(30))  # each item knows its stream position


def test_batch_sampler_groups_by_aspect_ratio():
    groups = [i % 2 for i in range(10)]
    stream = list(itertools.islice(TrainingSampler(10, 3), 40))
    batches = list(BatchSampler(stream, 3, groups))  # a finite stream: every full batch
    for batch in batches:
        assert len({groups[i] for i, _ in batch}) == 1
    # Each group's items come out in stream order, none lost or repeated.
    for g in (0, 1):
        emitted = [item for b in batches if groups[b[0][0]] == g for item in b]
        in_stream = [item for item in stream if groups[item[0]] == g]
        assert emitted == in_stream[: len(emitted)] and len(in_stream) - len(emitted) < 3
    skipped = list(BatchesFrom(BatchSampler(stream, 3, groups), 4))
    assert skipped == batches[4:]


@pytest.mark.parametrize("total,world", [(10, 3), (2, 4), (0, 2), (9, 1)])
def test_inference_shards_concatenate_in_order(total, world):
    shards = [list(inference_shard(total, r, world)) for r in range(world)]
    assert sum(shards, []) == list(range(total))


def test_test_loader_is_ordered(cfg, prw_tree):
    split = get_search_split("synthetic_prw_test", cfg.DATASETS.ROOT)
    assert split.protocol == "prw" and len(split.queries) == len(prw_tree[1].queries)
    cfg.TEST.IMS_PER_BATCH = 3
    batches = list(build_test_loader(cfg, split.gallery))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    outputs = [d for b in batches for d in b]
    assert [d["image_id"] for d in outputs] == [d["image_id"] for d in split.gallery]
    for d in outputs:
        assert "instances" not in d and min(d["image"].shape[1:]) == 48
        assert d["image"].dtype == torch.uint8 and "cam_id" in d


def test_resolve_root(monkeypatch):
    monkeypatch.setenv("PSDIFF_DATASETS", "/data/ps")
    assert resolve_root("/cfg/root") == "/cfg/root"
    assert resolve_root("") == "/data/ps"
    monkeypatch.delenv("PSDIFF_DATASETS")
    assert resolve_root("") == "./datasets"


def test_cuhk_search_split(cfg, cuhk_tree):
    split = get_search_split("synthetic_cuhk_sysu_test", cfg.DATASETS.ROOT, gallery_size=9)
    assert split.protocol == "cuhk_sysu"
    assert [d["image_id"] for d in split.gallery] == cuhk_tree[1].pool
    assert all(len(q["gallery_ids"]) == 9 for q in split.queries)
    assert np.isnan(split.queries[0]["gallery_boxes"]).any()

