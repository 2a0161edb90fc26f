"""A toy regression model, loader and DefaultTrainer subclass for the engine tests.

The batch of iteration i is a pure function of (seed, i) (Detectron2's way of making a loader
resumable), and each rank takes its slice of the global batch. The model draws noise from
torch, numpy and python's global generators in training, so a resume that forgot any RNG
state would not be bit-identical.
"""

import itertools
import os
import random
import signal

import numpy as np
import torch
from torch import nn

from psdiff.config import get_cfg
from psdiff.engine import DefaultTrainer, HookBase
from psdiff.utils import comm

IN_DIM, OUT_DIM = 6, 2
TRUE_W = torch.linspace(-1, 1, IN_DIM * OUT_DIM).reshape(OUT_DIM, IN_DIM)


class ToyModel(nn.Module):
    """`backbone` + `head` MLP; returns {"loss_mse", "loss_l1", "mean_pred"} in training.
    With `strict`, non-finite predictions raise FloatingPointError in training, as PSDiff's
    matcher does before any loss exists."""

    def __init__(self, noise: bool = True, strict: bool = False):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(IN_DIM, 16), nn.Tanh())
        self.head = nn.Linear(16, OUT_DIM)
        self.noise = noise
        self.strict = strict

    def forward(self, batch):
        x = torch.stack([d["x"] for d in batch])
        y = torch.stack([d["y"] for d in batch])
        if self.training and self.noise:  # touches all three global generators
            scale = 0.01 * (1 + random.random() + float(np.random.rand()))
            x = x + scale * torch.randn_like(x)
        pred = self.head(self.backbone(x))
        if not self.training:
            return pred
        if self.strict and not torch.isfinite(pred).all():
            raise FloatingPointError("predictions are not finite")
        return {
            "loss_mse": ((pred - y) ** 2).mean(),
            "loss_l1": 0.1 * (pred - y).abs().mean(),
            "mean_pred": pred.mean(),  # an extra scalar: logged, never backpropagated
        }


def toy_batch(seed: int, iteration: int, size: int) -> list:
    """The global batch of `iteration`: `size` samples of y = TRUE_W x."""
    generator = torch.Generator().manual_seed(seed * 100003 + iteration)
    x = torch.randn(size, IN_DIM, generator=generator)
    y = x @ TRUE_W.T
    return [{"x": x[i], "y": y[i]} for i in range(size)]


class _ToySamples(torch.utils.data.Dataset):
    """Sample `index` of the global batch of `iteration`, keyed by (iteration, index)."""

    def __init__(self, seed: int, global_batch: int):
        self.seed, self.global_batch = seed, global_batch

    def __len__(self):
        return self.global_batch

    def __getitem__(self, key):
        iteration, index = key
        return toy_batch(self.seed, iteration, self.global_batch)[index]


class _ToyBatches(torch.utils.data.Sampler):
    """Endless keys from `start_iter` on; each rank takes its slice of the global batch."""

    def __init__(self, global_batch: int, start_iter: int):
        self.per_rank = global_batch // comm.get_world_size()
        self.offset = comm.get_rank() * self.per_rank
        self.start_iter = start_iter

    def __iter__(self):
        for iteration in itertools.count(self.start_iter):
            yield [(iteration, self.offset + i) for i in range(self.per_rank)]


def toy_loader(seed: int, global_batch: int, start_iter: int = 0):
    """A real DataLoader (it draws a base seed from torch's RNG when iterated, as ours do)."""
    return torch.utils.data.DataLoader(
        _ToySamples(seed, global_batch), batch_sampler=_ToyBatches(global_batch, start_iter),
        collate_fn=lambda batch: batch,
    )


class ToyTrainer(DefaultTrainer):
    """DefaultTrainer with the toy model and loader; `test` returns the toy's validation MSE
    (and draws from the global RNG, as a sampler would, to check the EvalHook restores it)."""

    noise = True

    @classmethod
    def build_model(cls, cfg):
        return ToyModel(noise=cls.noise)

    @classmethod
    def build_train_loader(cls, cfg, start_iter: int = 0):
        return toy_loader(cfg.SEED, cfg.SOLVER.IMS_PER_BATCH, start_iter)

    @classmethod
    def test(cls, cfg, model):
        torch.randn(100)
        np.random.rand(10)
        batch = toy_batch(seed=12345, iteration=0, size=32)
        model.eval()
        with torch.no_grad():
            pred = model(batch)
        model.train()
        target = torch.stack([d["y"] for d in batch])
        return {"toy/mse": float(((pred - target) ** 2).mean())}


class QuietToyTrainer(ToyTrainer):
    """Without input noise: used where ranks must see the same random stream (DDP check)."""

    noise = False


class StrictToyTrainer(QuietToyTrainer):
    """The quiet toy that raises FloatingPointError on non-finite predictions."""

    @classmethod
    def build_model(cls, cfg):
        return ToyModel(noise=False, strict=True)


def toy_cfg(output_dir: str, **overrides):
    """A frozen config for 10 CPU iterations of the toy; `overrides` as KEY=VALUE (dots as __)."""
    cfg = get_cfg()
    cfg.merge_from_list([
        "OUTPUT_DIR", str(output_dir), "MODEL.DEVICE", "cpu", "SEED", "7",
        "SOLVER.MAX_ITER", "10", "SOLVER.BASE_LR", "0.05", "SOLVER.STEPS", "(6,)",
        "SOLVER.WARMUP_ITERS", "3", "SOLVER.WARMUP_FACTOR", "0.1", "SOLVER.IMS_PER_BATCH", "8",
        "SOLVER.CHECKPOINT_PERIOD", "3", "SOLVER.LOG_PERIOD", "2", "TEST.EVAL_PERIOD", "5",
        "DATASETS.TEST", "('toy',)", "SOLVER.BACKBONE_MULTIPLIER", "0.5",
    ])
    for key, value in overrides.items():
        cfg.merge_from_list([key.replace("__", "."), str(value)])
    cfg.freeze()
    return cfg


class InterruptRank(HookBase):
    """Sends a real SIGINT to this process after iteration `at`, on rank `rank` only."""

    def __init__(self, at: int, rank: int):
        self.at, self.rank = at, rank

    def after_step(self):
        if self.trainer.iter == self.at and comm.get_rank() == self.rank:
            os.kill(os.getpid(), signal.SIGINT)


class PoisonRank(HookBase):
    """Sets the head bias to NaN after iteration `at`, on rank `rank` only: its next loss is
    NaN while the other ranks' are finite."""

    def __init__(self, at: int, rank: int):
        self.at, self.rank = at, rank

    def after_step(self):
        if self.trainer.iter == self.at and comm.get_rank() == self.rank:
            with torch.no_grad():
                self.trainer.model.module.head.bias.fill_(float("nan"))


def distributed_main(output_dir: str, max_iter: int, resume: bool = False, interrupt_at=None):
    """One rank of the DDP checks: set up the run, train the quiet toy (optionally resuming,
    or interrupting rank 1 after iteration `interrupt_at`), save the weights it ends with."""
    from psdiff.engine import default_argument_parser, default_setup

    args = default_argument_parser().parse_args([])
    cfg = toy_cfg(output_dir, SOLVER__MAX_ITER=max_iter)
    default_setup(cfg, args)
    trainer = QuietToyTrainer(cfg)
    if interrupt_at is not None:
        trainer.register_hooks([InterruptRank(interrupt_at, rank=1)])
    trainer.resume_or_load(resume=resume)
    trainer.train()
    module = trainer.model.module if comm.get_world_size() > 1 else trainer.model
    torch.save(module.state_dict(), f"{output_dir}/weights_rank{comm.get_rank()}.pt")


def nan_on_rank_1(output_dir: str, strict: bool = False) -> None:
    """One rank of the NaN check: train the quiet toy (no run setup, only the loop matters);
    rank 1's loss turns NaN at iteration 3 (with `strict`, its forward raises instead)."""
    trainer_class = StrictToyTrainer if strict else QuietToyTrainer
    trainer = trainer_class(toy_cfg(output_dir, SOLVER__MAX_ITER=6))
    trainer.register_hooks([PoisonRank(2, rank=1)])
    trainer.train()


def save_then_synchronize(save_dir: str) -> None:
    """One rank of the rank-0-failure check: save a checkpoint (rank 0 writes it), then meet
    at a barrier, as the training loop's hooks do."""
    from psdiff.engine import Checkpointer

    Checkpointer(ToyModel(), save_dir).save("toy")
    comm.synchronize()


if __name__ == "__main__":  # under torchrun: launch() joins the group torchrun set up
    import sys

    from psdiff.engine import launch

    launch(distributed_main, 1, args=(sys.argv[1], int(sys.argv[2])), backend="gloo")
