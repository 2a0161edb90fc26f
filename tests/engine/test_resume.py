"""Stopping and resuming gives the weights of an uninterrupted run, bit for bit."""

import json
import os
import signal
import time

import pytest
import torch
from engine_toys import ToyTrainer, toy_cfg

from psdiff.engine import HookBase
from psdiff.utils.env import seed_all_rng
from psdiff.utils.errors import exit_status


class _SignalAt(HookBase):
    """Sends this process a real SIGINT (Ctrl-C) after iteration `at`."""

    def __init__(self, at):
        self.at = at

    def after_step(self):
        if self.trainer.iter == self.at:
            os.kill(os.getpid(), signal.SIGINT)


class _SignalTwiceAt(HookBase):
    """Sends two real SIGINTs after iteration `at`: the second one acts at once."""

    def __init__(self, at):
        self.at = at

    def after_step(self):
        if self.trainer.iter == self.at:
            deferring = signal.getsignal(signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            # a second signal sent before the first is handled merges with it (the kernel keeps
            # one pending SIGINT): wait until the first one restored the previous handler
            deadline = time.monotonic() + 5
            while signal.getsignal(signal.SIGINT) is deferring and time.monotonic() < deadline:
                time.sleep(0.001)
            os.kill(os.getpid(), signal.SIGINT)


class _CrashAt(HookBase):
    """Raises in the middle of training, as a crash would."""

    def __init__(self, at):
        self.at = at

    def before_step(self):
        if self.trainer.iter == self.at:
            raise RuntimeError("simulated crash")


def _run(cfg, resume=False, extra_hook=None):
    seed_all_rng(cfg.SEED)
    trainer = ToyTrainer(cfg)
    if extra_hook is not None:
        trainer.register_hooks([extra_hook])
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def _logged_iterations(output_dir) -> list:
    """The iteration of every line of OUTPUT_DIR/metrics.json, in file order."""
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line)["iteration"] for line in f]


def _assert_same_state(a, b):
    for (name, pa), (_, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(pa, pb), name
    state_a, state_b = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for index in state_a:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state_a[index][key], state_b[index][key]), (index, key)
    assert a.scheduler.get_last_lr() == b.scheduler.get_last_lr()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return _run(toy_cfg(tmp_path_factory.mktemp("straight")))


def test_ctrl_c_then_resume_is_bit_identical(tmp_path, uninterrupted):
    cfg = toy_cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, extra_hook=_SignalAt(4))
    # the interrupted run saved the iteration it finished, and pointed last_checkpoint at it
    assert open(tmp_path / "last_checkpoint").read() == "model_0000004.pth"
    resumed = _run(cfg, resume=True)
    assert resumed.start_iter == 5
    _assert_same_state(uninterrupted, resumed)


@pytest.fixture
def interactive_ctrl_c():
    """Python's own SIGINT handler (KeyboardInterrupt), as in a terminal: a process started in
    the background by a script (`cmd &`) inherits SIGINT ignored, and keeps it ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_second_ctrl_c_says_why_it_stopped_and_resume_continues(tmp_path, capsys,
                                                               uninterrupted,
                                                               interactive_ctrl_c):
    cfg = toy_cfg(tmp_path)
    status = exit_status(_run, cfg, None, _SignalTwiceAt(3), resumable=True)
    assert status == 130
    assert capsys.readouterr().err == ("interrupted: stopped at once, without saving this "
                                       "iteration; continue with --resume\n")
    # nothing was saved for iteration 3: the periodic checkpoint of iteration 2 is the last
    assert open(tmp_path / "last_checkpoint").read() == "model_0000002.pth"
    resumed = _run(cfg, resume=True)
    assert resumed.start_iter == 3
    _assert_same_state(uninterrupted, resumed)


def test_crash_then_resume_from_periodic_checkpoint_is_bit_identical(tmp_path, uninterrupted):
    cfg = toy_cfg(tmp_path)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(cfg, extra_hook=_CrashAt(7))
    # period 3: iterations 2 and 5 were saved; the crash at 7 saved nothing
    assert open(tmp_path / "last_checkpoint").read() == "model_0000005.pth"
    assert not (tmp_path / "model_final.pth").exists()
    crashed_log = _logged_iterations(tmp_path)
    assert crashed_log[-1] == 6  # logged past the checkpoint when the crash stopped the writers
    resumed = _run(cfg, resume=True)
    assert resumed.start_iter == 6
    _assert_same_state(uninterrupted, resumed)
    # metrics.json reads as one run: the lines of iteration 6 on come from the resumed run
    assert _logged_iterations(tmp_path) == _logged_iterations(uninterrupted.cfg.OUTPUT_DIR)


def test_resume_differs_without_rng_restore(tmp_path, uninterrupted):
    """The check above can fail: skipping the RNG restore changes the weights."""
    cfg = toy_cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, extra_hook=_SignalAt(4))
    checkpoint = torch.load(tmp_path / "model_0000004.pth", weights_only=True)
    checkpoint["trainer"]["rng_states"] = []
    torch.save(checkpoint, tmp_path / "model_0000004.pth")
    resumed = _run(cfg, resume=True)
    final = resumed.model.state_dict()["head.weight"]
    assert not torch.equal(final, uninterrupted.model.state_dict()["head.weight"])
