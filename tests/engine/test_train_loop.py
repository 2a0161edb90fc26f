"""The loop trains, logs extra scalars without backpropagating them, and stops on NaN."""

import math

import pytest
import torch
from engine_toys import ToyModel, ToyTrainer, toy_batch, toy_cfg

from psdiff.engine import (
    AMPTrainer,
    HookBase,
    NonFiniteLossError,
    SimpleTrainer,
    load_checkpoint_file,
)
from psdiff.utils.env import seed_all_rng


class _Record(HookBase):
    """Keeps the storage's latest value of some scalars after each step."""

    def __init__(self, *names):
        self.names = names
        self.values = {name: [] for name in names}

    def after_step(self):
        for name in self.names:
            self.values[name].append(self.trainer.storage.history(name).latest())


def _fixed_batches(n=16):
    batch = toy_batch(seed=3, iteration=0, size=n)
    while True:
        yield batch


def test_loss_falls_on_a_fixed_batch():
    seed_all_rng(0)
    model = ToyModel(noise=False)
    trainer = SimpleTrainer(model, _fixed_batches(), torch.optim.Adam(model.parameters(), lr=0.02))
    record = _Record("loss_mse", "total_loss", "loss_l1", "mean_pred", "data_time")
    trainer.register_hooks([record])
    trainer.train(0, 40)
    mse = record.values["loss_mse"]
    assert mse[-1] < 0.2 * mse[0]
    # total_loss is the sum of the loss terms only; the extra scalar is logged beside them
    for total, a, b in zip(record.values["total_loss"], mse, record.values["loss_l1"]):
        assert total == pytest.approx(a + b, rel=1e-6)
    assert len(record.values["mean_pred"]) == 40
    assert trainer.completed and trainer.iter == 40


class _ExtraOnly(torch.nn.Module):
    """A loss that is constant in the weight, and an extra scalar that depends on it."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def forward(self, batch):
        return {"loss_const": self.w.sum() * 0.0, "weight_norm": self.w.norm() * 100}


def test_extra_scalars_are_not_backpropagated():
    model = _ExtraOnly()
    trainer = SimpleTrainer(model, _fixed_batches(2), torch.optim.SGD(model.parameters(), lr=1.0))
    trainer.train(0, 3)
    assert torch.equal(model.w.detach(), torch.ones(3))  # a backpropagated extra would move w


def test_bf16_autocast_step_trains_on_cpu():
    seed_all_rng(0)
    model = ToyModel(noise=False)
    trainer = AMPTrainer(model, _fixed_batches(), torch.optim.Adam(model.parameters(), lr=0.02),
                         dtype=torch.bfloat16)
    record = _Record("loss_mse")
    trainer.register_hooks([record])
    trainer.train(0, 30)
    assert trainer.grad_scaler is None  # bfloat16 needs no loss scaling
    assert record.values["loss_mse"][-1] < 0.5 * record.values["loss_mse"][0]


class _NanAt(HookBase):
    """Poisons the model's head after iteration `at`, so the next loss is NaN."""

    def __init__(self, at):
        self.at = at

    def after_step(self):
        if self.trainer.iter == self.at:
            with torch.no_grad():
                self.trainer.model.head.bias.fill_(float("nan"))


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    cfg = toy_cfg(tmp_path)
    trainer = ToyTrainer(cfg)
    # registered after the checkpointer: iteration 5 is saved before the weights are poisoned
    trainer.register_hooks([_NanAt(5)])
    with pytest.raises(NonFiniteLossError) as error:
        trainer.train()
    message = str(error.value)
    assert "iteration 6" in message and "\n" not in message
    assert "loss_mse=nan" in message and "loss_l1=nan" in message
    assert open(tmp_path / "last_checkpoint").read() == "model_0000005.pth"
    checkpoint = load_checkpoint_file(str(tmp_path / "model_0000005.pth"))
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert checkpoint["trainer"]["iteration"] == 5
    assert not (tmp_path / "model_final.pth").exists()


def test_float16_amp_checkpoints_its_grad_scaler(tmp_path):
    cfg = toy_cfg(tmp_path, SOLVER__AMP__ENABLED=True, SOLVER__AMP__DTYPE="float16",
                  SOLVER__MAX_ITER=4, TEST__EVAL_PERIOD=0)
    seed_all_rng(0)
    trainer = ToyTrainer(cfg)
    record = _Record("loss_mse")
    trainer.register_hooks([record])
    trainer.train()
    assert isinstance(trainer._trainer, AMPTrainer)
    assert all(math.isfinite(v) for v in record.values["loss_mse"])
    saved = load_checkpoint_file(str(tmp_path / "model_final.pth"))["grad_scaler"]
    assert saved["_growth_tracker"] == 4  # four steps without overflow
    resumed = ToyTrainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed._trainer.grad_scaler.state_dict() == trainer._trainer.grad_scaler.state_dict()
