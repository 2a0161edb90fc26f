"""Data loaders: an endless, shuffled, rank-sharded training loader and an ordered test loader.

Both are `torch.utils.data.DataLoader`s over the dataset dicts with the `DatasetMapper` applied
in the workers; batches are `list[dict]` of model inputs.
"""

import logging

import torch.utils.data

from psdiff.utils import comm
from psdiff.utils.errors import PsdiffError

from .catalog import get_train_dicts, resolve_root
from .mapper import DatasetMapper
from .samplers import BatchesFrom, BatchSampler, TrainingSampler, augmentation_rng, inference_shard
from .teacher_targets import attach_targets_from_config

logger = logging.getLogger(__name__)


class _MappedDataset(torch.utils.data.Dataset):
    """Dataset dicts seen through a mapper; a key is a dataset index, or for training an
    `(index, stream position)` pair from `TrainingSampler`, whose augmentation is then drawn
    from `augmentation_rng(seed, position)`."""

    def __init__(self, dicts: list, mapper, seed: int = 0):
        self.dicts = dicts
        self.mapper = mapper
        self.seed = seed

    def __len__(self):
        return len(self.dicts)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, position = key
            return self.mapper(self.dicts[index], rng=augmentation_rng(self.seed, position))
        return self.mapper(self.dicts[key])


def _as_list(batch: list) -> list:
    """Collate: keep the batch as a list of dicts (images differ in size)."""
    return batch


def load_train_dicts(cfg) -> list:
    """The dataset dicts of every `DATASETS.TRAIN` name, concatenated; with
    `DATALOADER.FILTER_EMPTY_ANNOTATIONS`, images without persons are dropped."""
    root = resolve_root(cfg.DATASETS.ROOT)
    dicts = [d for name in cfg.DATASETS.TRAIN for d in get_train_dicts(name, root)]
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        kept = [d for d in dicts if d["annotations"]]
        logger.info(f"Dropped {len(dicts) - len(kept)} training images without persons")
        dicts = kept
    return dicts


def build_train_loader(cfg, dataset_dicts: list = None, mapper=None, start_iter: int = 0):
    """Endless loader of training batches for this rank; its first batch is iteration `start_iter`.

    `SOLVER.IMS_PER_BATCH` images per iteration over all ranks; the order and augmentation are a
    pure function of `SEED`, rank and iteration, so a run resumed at `start_iter` sees exactly the
    batches the uninterrupted run would have. `dataset_dicts` default to `load_train_dicts(cfg)`,
    carrying the teacher's targets e0 when `TEACHER.CACHE` names a cache (teacher_targets.py).
    `mapper(dict, rng)` defaults to `DatasetMapper`.
    """
    dicts = dataset_dicts
    if dicts is None:
        dicts = load_train_dicts(cfg)
        if cfg.TEACHER.CACHE:
            dicts = attach_targets_from_config(cfg, dicts)
    if not dicts:
        raise PsdiffError(f"DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)} holds no training images")
    world, rank = comm.get_world_size(), comm.get_rank()
    total = cfg.SOLVER.IMS_PER_BATCH
    if total % world:
        raise PsdiffError(f"SOLVER.IMS_PER_BATCH = {total} is not divisible by {world} ranks")
    seed = cfg.SEED  # default_setup has replaced SEED < 0 by the run's drawn seed
    groups = None
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:  # landscape and portrait images batch apart
        groups = [int(d["width"] > d["height"]) for d in dicts]
    sampler = TrainingSampler(len(dicts), seed, rank, world)
    batches = BatchesFrom(BatchSampler(sampler, total // world, groups), start_iter)
    mapper = DatasetMapper.from_config(cfg, is_train=True) if mapper is None else mapper
    return torch.utils.data.DataLoader(
        _MappedDataset(dicts, mapper, seed),
        batch_sampler=batches,
        collate_fn=_as_list,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )


def build_test_loader(cfg, dataset_dicts: list, mapper=None):
    """Loader of this rank's contiguous shard of `dataset_dicts`, in order, `TEST.IMS_PER_BATCH`
    per batch; gathering the ranks' outputs in rank order restores the dataset order. The default
    mapper resizes to the test size, does not flip and outputs no ground truth."""
    shard = inference_shard(len(dataset_dicts), comm.get_rank(), comm.get_world_size())
    mapper = DatasetMapper.from_config(cfg, is_train=False) if mapper is None else mapper
    return torch.utils.data.DataLoader(
        _MappedDataset(dataset_dicts, mapper),
        sampler=list(shard),
        batch_size=cfg.TEST.IMS_PER_BATCH,
        collate_fn=_as_list,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
