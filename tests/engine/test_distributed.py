"""Two gloo processes on CPU train in lockstep: identical weights, equal to one big batch;
an interrupt on one rank stops both at the same iteration, and resuming matches."""

import os
import subprocess
import sys

import pytest
import torch
from engine_toys import distributed_main, nan_on_rank_1, save_then_synchronize

from psdiff.engine import launch


def _weights(folder, rank):
    return torch.load(folder / f"weights_rank{rank}.pt", weights_only=True)


def _assert_equal(a, b):
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """6 iterations on 2 gloo workers, uninterrupted."""
    folder = tmp_path_factory.mktemp("ddp")
    launch(distributed_main, 2, args=(str(folder), 6), backend="gloo")
    return folder


def test_two_gloo_workers_end_with_identical_weights(tmp_path, ddp_run):
    rank0 = _weights(ddp_run, 0)
    _assert_equal(rank0, _weights(ddp_run, 1))

    # one process on the union of both ranks' batches: DDP averages the two half-batch
    # gradients, which is the gradient of the whole batch's mean loss
    distributed_main(str(tmp_path), 6)
    single = _weights(tmp_path, 0)
    for key in rank0:
        assert torch.allclose(rank0[key], single[key], rtol=1e-4, atol=1e-6), key

    # only rank 0 wrote logs and checkpoints
    files = set(os.listdir(ddp_run))
    assert {"log.txt", "config.yaml", "metrics.json", "model_final.pth", "last_checkpoint"} <= files
    assert not any(name.startswith("log.txt.rank") for name in files)
    log = open(ddp_run / "log.txt").read()
    assert "World size: 2" in log and "4 images per GPU, effective batch 8" in log


def test_interrupt_on_one_rank_saves_and_resumes_bit_identical(tmp_path, ddp_run):
    with pytest.raises(KeyboardInterrupt):
        launch(distributed_main, 2, args=(str(tmp_path), 6, False, 2), backend="gloo")
    assert open(tmp_path / "last_checkpoint").read() == "model_0000002.pth"
    checkpoint = torch.load(tmp_path / "model_0000002.pth", weights_only=True)
    assert len(checkpoint["trainer"]["rng_states"]) == 2  # one per rank
    launch(distributed_main, 2, args=(str(tmp_path), 6, True), backend="gloo")
    _assert_equal(_weights(tmp_path, 0), _weights(ddp_run, 0))


def test_torchrun_workers_join_one_group(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    script = os.path.join(os.path.dirname(__file__), "engine_toys.py")
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         script, str(tmp_path), "3"],
        check=True, env=env, timeout=240, capture_output=True,
    )
    _assert_equal(_weights(tmp_path, 0), _weights(tmp_path, 1))
    assert "World size: 2" in open(tmp_path / "log.txt").read()


def _error_lines(capfd) -> list:
    """The `error: ...` lines the workers printed."""
    return [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]


def test_nan_loss_on_one_rank_stops_every_rank_at_that_iteration(tmp_path, capfd):
    with pytest.raises(SystemExit) as exit_:
        launch(nan_on_rank_1, 2, args=(str(tmp_path),), backend="gloo")
    assert exit_.value.code == 2  # no second "worker exited" line from the launcher
    errors = _error_lines(capfd)
    # both ranks raised (rank 0's own loss was finite), naming the rank and every loss term
    assert len(errors) == 2 and errors[0] == errors[1]
    assert errors[0].startswith(
        "error: non-finite loss at iteration 3 on rank 1: loss_l1=nan, loss_mse=nan;")
    assert open(tmp_path / "last_checkpoint").read() == "model_0000002.pth"


def test_non_finite_predictions_on_one_rank_stop_every_rank_before_backward(tmp_path, capfd):
    # rank 1's forward raises FloatingPointError (as PSDiff's matcher does on NaN predictions)
    # while rank 0's loss is finite: no rank enters DDP's backward, both report the same line
    with pytest.raises(SystemExit) as exit_:
        launch(nan_on_rank_1, 2, args=(str(tmp_path), True), backend="gloo")
    assert exit_.value.code == 2
    errors = _error_lines(capfd)
    assert errors == [
        "error: non-finite loss at iteration 3 on rank 1: the forward pass found non-finite "
        "values (predictions are not finite); training stopped, the last checkpoint is intact "
        "(resume with --resume)"] * 2
    assert open(tmp_path / "last_checkpoint").read() == "model_0000002.pth"


def test_failed_write_on_rank_0_stops_every_rank_with_one_line(tmp_path, capfd):
    missing = tmp_path / "missing"
    with pytest.raises(SystemExit) as exit_:
        launch(save_then_synchronize, 2, args=(str(missing),), backend="gloo")
    assert exit_.value.code == 2
    # rank 0 reports its error; rank 1 raises it too (no wait at the barrier) but is silent
    assert _error_lines(capfd) == [
        f"error: cannot write checkpoint {missing}/toy.pth: No such file or directory"]
