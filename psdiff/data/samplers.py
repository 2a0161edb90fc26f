"""Samplers: which dataset items each rank loads, in which order, with which augmentation seed.

The training stream is a pure function of (seed, rank, position): the global stream is one
seeded permutation of the dataset per epoch, rank r takes positions r, r + W, r + 2W, ..., and
each position has its own augmentation random stream (`augmentation_rng`). Aspect-ratio
grouping is done here, on indices (a dict's height and width are known before its image is
read), so a resumed run replays the batches it already consumed without loading a single image
and continues bit-identically.
"""

import itertools

import numpy as np


def augmentation_rng(seed: int, position: int) -> np.random.Generator:
    """The random stream that augments the sample at global stream position `position`."""
    return np.random.default_rng([seed, 1, position])


class TrainingSampler:
    """Endless `(dataset index, global position)` pairs of one rank (Detectron2's
    TrainingSampler, made a pure function of the position)."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle=True):
        if size <= 0:
            raise ValueError("the training set is empty")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size = rank, world_size

    def _order(self, epoch: int) -> np.ndarray:
        """The global order of epoch `epoch`."""
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng([self.seed, 0, epoch]).permutation(self.size)

    def __iter__(self):
        epoch, order = -1, None
        for position in itertools.count(self.rank, self.world_size):
            if position // self.size != epoch:
                epoch = position // self.size
                order = self._order(epoch)
            yield int(order[position % self.size]), position


class BatchSampler:
    """Batches of `batch_size` items from an endless sampler; with `group_ids` (one per dataset
    index), each batch holds one group only, emitted as soon as that group's bucket is full
    (Detectron2's AspectRatioGroupedDataset)."""

    def __init__(self, sampler, batch_size: int, group_ids=None):
        self.sampler = sampler
        self.batch_size = batch_size
        self.group_ids = group_ids

    def __iter__(self):
        buckets = {}
        for item in self.sampler:
            group = 0 if self.group_ids is None else self.group_ids[item[0]]
            bucket = buckets.setdefault(group, [])
            bucket.append(item)
            if len(bucket) == self.batch_size:
                yield list(bucket)
                bucket.clear()


class BatchesFrom:
    """The batches of a batch sampler from batch `start` on: the ones before are replayed as
    indices (no image is loaded), so a run resumed at iteration `start` continues its stream.
    Serves PSDiff's loader and the teacher's P x K crop loader alike."""

    def __init__(self, batch_sampler, start: int):
        self.batch_sampler, self.start = batch_sampler, start

    def __iter__(self):
        return itertools.islice(iter(self.batch_sampler), self.start, None)


def inference_shard(total: int, rank: int = 0, world_size: int = 1) -> range:
    """The contiguous slice of `range(total)` rank `rank` infers (Detectron2's InferenceSampler):
    concatenating the shards in rank order gives back the dataset order."""
    shard = (total - 1) // world_size + 1 if total else 0
    return range(min(rank * shard, total), min((rank + 1) * shard, total))
