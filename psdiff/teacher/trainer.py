"""Training the ReID teacher on the engine: DefaultTrainer with the teacher's parts swapped in.

`TeacherTrainer(cfg)` adds only what differs from PSDiff's training: a `TeacherModel` over the
ground-truth crops of `DATASETS.TRAIN` (the dicts PSDiff trains on: `load_train_dicts`), the
P x K crop loader, and a hook that (re)builds the HHCL memory from eval-mode embeddings (at the
start and every TEACHER.MEMORY_REFRESH_PERIOD iterations, HHCL's per-epoch rhythm). HHCL's Adam
is the engine's SOLVER.OPTIMIZER "ADAM". Evaluation (`evaluate_dataset`) scores the teacher's
embeddings of the ground-truth boxes of each `DATASETS.TEST` set by the search protocol
(retrieval.py).
"""

import logging

import torch
from torch.utils.data import DataLoader

from psdiff.data.build import load_train_dicts
from psdiff.data.samplers import BatchesFrom
from psdiff.engine import DefaultTrainer, HookBase
from psdiff.engine.checkpoint import unwrap_model
from psdiff.utils import comm
from psdiff.utils.errors import PsdiffError

from .crops import CropDataset, PKBatchSampler, collate_crops
from .model import TeacherModel, initialize_memory
from .retrieval import evaluate_teacher

logger = logging.getLogger(__name__)


def build_crop_dataset(cfg, train: bool = True) -> CropDataset:
    """All ground-truth boxes of `DATASETS.TRAIN` as crops of TEACHER.INPUT_SIZE."""
    return CropDataset(load_train_dicts(cfg), cfg.TEACHER.INPUT_SIZE, train=train,
                       pad=cfg.TEACHER.PAD, erasing_prob=cfg.TEACHER.RANDOM_ERASING)


class MemoryRefresh(HookBase):
    """Rebuilds the HHCL memory from the current network (HHCL re-initializes every epoch).

    A fresh run fills it (and the unlabeled queue) before the first step; a resumed run keeps
    the memory restored from its checkpoint. Every `period` iterations the centroids and
    instances are rebuilt from eval-mode embeddings; the queue keeps running.
    """

    def __init__(self, cfg, crops: CropDataset):
        self.cfg = cfg
        self.crops = crops
        self.period = cfg.TEACHER.MEMORY_REFRESH_PERIOD

    def _refresh(self, iteration: int, with_queue: bool) -> None:
        t = self.cfg.TEACHER
        initialize_memory(unwrap_model(self.trainer.model), self.crops, t.INPUT_SIZE,
                          self.cfg.SEED + iteration,
                          with_queue=with_queue and t.USE_UNLABELED, queue_size=t.QUEUE_SIZE,
                          num_workers=self.cfg.DATALOADER.NUM_WORKERS)

    def before_train(self):
        if self.trainer.start_iter == 0:
            self._refresh(0, with_queue=True)

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if self.period > 0 and next_iter % self.period == 0 and next_iter < self.trainer.max_iter:
            self._refresh(next_iter, with_queue=False)


class TeacherTrainer(DefaultTrainer):
    """DefaultTrainer for the ReID teacher (tools/train_teacher.py)."""

    def build_model_hooks(self) -> list:
        """The HHCL memory refresh, over an unaugmented view of the training crops."""
        return [MemoryRefresh(self.cfg, build_crop_dataset(self.cfg, train=False))]

    @classmethod
    def build_model(cls, cfg) -> TeacherModel:
        num_classes = build_crop_dataset(cfg, train=False).num_classes
        model = TeacherModel.from_config(cfg, num_classes)
        logger.info(f"Teacher ({cfg.TEACHER.LOSS}, ResNet-{cfg.TEACHER.BACKBONE.DEPTH}) over "
                    f"{num_classes} training identities:\n{model}")
        return model.to(torch.device(cfg.MODEL.DEVICE))

    @classmethod
    def build_train_loader(cls, cfg, start_iter: int = 0):
        """P x K (+ unlabeled) crop batches for this rank, starting at batch `start_iter`."""
        t = cfg.TEACHER
        crops = build_crop_dataset(cfg, train=True)
        sampler = PKBatchSampler(crops.labels, crops.groups, t.P, t.K,
                                 t.NUM_UNLABELED if t.USE_UNLABELED else 0,
                                 seed=cfg.SEED, rank=comm.get_rank(),
                                 world_size=comm.get_world_size())
        batches = BatchesFrom(sampler, start_iter)
        return DataLoader(crops, batch_sampler=batches, num_workers=cfg.DATALOADER.NUM_WORKERS,
                          collate_fn=collate_crops, pin_memory=cfg.MODEL.DEVICE.startswith("cuda"))

    @classmethod
    def evaluate_dataset(cls, cfg, model, dataset_name: str) -> dict:
        """The search protocol on one test set with ground-truth boxes as detections and the
        teacher's embeddings (`teacher/mAP`, `teacher/top1`, ...)."""
        network = model.network if isinstance(model, TeacherModel) else model
        return evaluate_teacher(network, cfg, dataset_name)


def check_teacher_config(cfg) -> None:
    """Fail early, in one line, on settings the teacher cannot train with."""
    if not cfg.DATASETS.TRAIN:
        raise PsdiffError("DATASETS.TRAIN is empty: the teacher trains on its ground-truth crops")
    if cfg.TEACHER.LOSS == "HHCL" and cfg.TEACHER.HARD_K < 1:
        raise PsdiffError(f"TEACHER.HARD_K must be >= 1, got {cfg.TEACHER.HARD_K}")
