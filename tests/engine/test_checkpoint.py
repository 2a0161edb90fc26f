"""Checkpoints restore everything, are written atomically and refuse foreign content."""

import collections
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from engine_toys import ToyModel, ToyTrainer, toy_cfg

from psdiff.engine import Checkpointer, load_checkpoint_file
from psdiff.utils.env import seed_all_rng
from psdiff.utils.errors import PsdiffError


def _draws():
    return torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)]


def test_round_trip_restores_model_optimizer_scheduler_iteration_and_rng(tmp_path):
    cfg = toy_cfg(tmp_path, SOLVER__MAX_ITER=4, SOLVER__STEPS="(3,)", TEST__EVAL_PERIOD=0)
    seed_all_rng(1)
    trainer = ToyTrainer(cfg)
    trainer.train()  # 4 iterations: AdamW moments, warm-up and one lr step
    saved_model = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    saved_optimizer = trainer.optimizer.state_dict()
    trainer.checkpointer.save("again")
    expected = _draws()  # what the generators give right after the save

    seed_all_rng(99)
    fresh = ToyTrainer(cfg)
    extra = fresh.checkpointer.load(str(tmp_path / "again.pth"))
    assert extra == {}
    got = _draws()
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    for key, value in fresh.model.state_dict().items():
        assert torch.equal(value, saved_model[key]), key
    restored = fresh.optimizer.state_dict()
    for index, state in saved_optimizer["state"].items():
        for key, value in state.items():
            assert torch.equal(restored["state"][index][key], value), (index, key)
    lrs = [g["lr"] for g in saved_optimizer["param_groups"]]
    assert [g["lr"] for g in restored["param_groups"]] == lrs == [0.05 * 0.1 * 0.5, 0.05 * 0.1]
    assert fresh.scheduler.last_epoch == trainer.scheduler.last_epoch == 4
    assert fresh.iter == trainer.iter == 4  # saved after the loop ended
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert final["trainer"]["iteration"] == 3
    assert final["config"] == cfg.dump()  # the config the run trained with


def test_resume_or_load_takes_last_checkpoint_or_model_weights_only(tmp_path):
    cfg = toy_cfg(tmp_path, SOLVER__MAX_ITER=3, SOLVER__STEPS="(2,)", TEST__EVAL_PERIOD=0)
    trainer = ToyTrainer(cfg)
    trainer.train()
    weights = str(tmp_path / "model_final.pth")
    other = ToyTrainer(toy_cfg(tmp_path / "other", MODEL__WEIGHTS=weights))
    other.resume_or_load(resume=True)  # nothing to resume in its own OUTPUT_DIR: weights only
    assert other.start_iter == 0
    assert torch.equal(other.model.head.weight, trainer.model.head.weight)
    assert other.optimizer.state_dict()["state"] == {}  # optimizer not restored
    again = ToyTrainer(cfg)
    again.resume_or_load(resume=True)
    assert again.start_iter == 3 and again.optimizer.state_dict()["state"] != {}


def test_failed_write_leaves_previous_file_and_no_partial_file(tmp_path):
    model = ToyModel()
    checkpointer = Checkpointer(model, str(tmp_path))
    checkpointer.save("model_final")
    before = open(tmp_path / "model_final.pth", "rb").read()
    with torch.no_grad():
        model.head.weight.add_(1.0)
    # pickling stops half-way through the file on an object torch.save cannot store
    with pytest.raises((pickle.PicklingError, AttributeError)):  # an unpicklable local
        checkpointer.save("model_final", note=lambda: None)
    with pytest.raises((pickle.PicklingError, AttributeError)):  # an unpicklable local
        checkpointer.save("model_0000009", note=lambda: None)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]
    assert open(tmp_path / "model_final.pth", "rb").read() == before


def _python(code: str, *args: str, **popen) -> subprocess.Popen:
    """A Python process running `code` with psdiff and the engine toys importable."""
    path = os.pathsep.join([os.path.dirname(__file__), *sys.path])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, **popen)


# the toy trains with checkpoints every 3 iterations; after the one of iteration 2, no file of
# the process may grow past 100 bytes (EFBIG, as a full disk's ENOSPC): the next save fails,
# and so does metrics.json when the writers flush on the way out
_FULL_DISK_RUN = """
import resource, signal, sys
from engine_toys import ToyTrainer, toy_cfg
from psdiff.engine import HookBase
from psdiff.utils.errors import exit_status

class FillDisk(HookBase):
    def after_step(self):
        if self.trainer.iter == 2:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (100, resource.RLIM_INFINITY))

trainer = ToyTrainer(toy_cfg(sys.argv[1], SOLVER__LOG_PERIOD=100))
trainer.register_hooks([FillDisk()])
sys.exit(exit_status(trainer.train))
"""


def test_full_disk_during_a_save_says_so_and_keeps_the_previous_checkpoint(tmp_path):
    run = _python(_FULL_DISK_RUN, str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                  text=True)
    _, err = run.communicate(timeout=240)
    assert run.returncode == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.fullmatch(
        f"error: cannot write checkpoint {tmp_path}/model_0000005.pth: the disk is full or the "
        rf"write failed \(\d+ MiB free in {tmp_path}\); the previous checkpoint "
        f"{tmp_path}/model_0000002.pth is kept", errors[0]), errors
    assert open(tmp_path / "last_checkpoint").read() == "model_0000002.pth"
    assert load_checkpoint_file(str(tmp_path / "model_0000002.pth"))["trainer"]["iteration"] == 2
    assert not any(".pth.tmp." in name or name == "model_0000005.pth"
                   for name in os.listdir(tmp_path))
    # the writers failed too, after the save: logged, without hiding the line above
    assert "a hook's after_train failed too: [Errno 27] File too large" in err


_BIG_SAVE = """
import sys, torch
from psdiff.engine import Checkpointer
model = torch.nn.Linear(1, 1)
model.register_buffer("big", torch.ones(2**26))  # 256 MB: the save takes a while
Checkpointer(model, sys.argv[1]).save("model_0000002")
"""


def test_temporaries_of_a_killed_save_are_removed_when_a_run_starts(tmp_path):
    save = _python(_BIG_SAVE, str(tmp_path))
    temporary = f"model_0000002.pth.tmp.{save.pid}"
    deadline = time.monotonic() + 120
    while not (tmp_path / temporary).exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    save.send_signal(signal.SIGKILL)  # mid-write: atomic_write cannot clean up
    save.wait(timeout=60)
    assert save.returncode == -signal.SIGKILL
    assert (tmp_path / temporary).exists() and not (tmp_path / "model_0000002.pth").exists()
    running = tmp_path / f"model_0000009.pth.tmp.{os.getpid()}"  # a live process is writing it
    running.write_bytes(b"in progress")
    ToyTrainer(toy_cfg(tmp_path)).resume_or_load(resume=True)
    assert [name for name in os.listdir(tmp_path) if ".tmp." in name] == [running.name]


def test_other_architecture_gives_one_line_naming_keys(tmp_path):
    Checkpointer(ToyModel(), str(tmp_path)).save("toy")
    other = torch.nn.Sequential(collections.OrderedDict(
        backbone=torch.nn.Sequential(torch.nn.Linear(6, 8)), extra=torch.nn.Linear(2, 2)))
    with pytest.raises(PsdiffError) as error:
        Checkpointer(other, str(tmp_path)).load(str(tmp_path / "toy.pth"))
    message = str(error.value)
    assert "\n" not in message and "toy.pth" in message
    assert "missing keys: extra.bias, extra.weight" in message
    assert "unexpected keys: head.bias, head.weight" in message
    assert "backbone.0.weight (16, 6) vs (8, 6)" in message


class _Payload:
    """An arbitrary pickled object: loading it would run code, weights_only refuses it."""


def test_unsafe_or_missing_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": _Payload()}, path)
    with pytest.raises(PsdiffError, match="checkpoint: cannot read"):
        Checkpointer(ToyModel()).load(str(path))
    with pytest.raises(PsdiffError, match="checkpoint: no such file"):
        Checkpointer(ToyModel()).load(str(tmp_path / "absent.pth"))
