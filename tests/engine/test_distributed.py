"""Two gloo processes on CPU train in lockstep: identical weights, equal to one big batch;
an interrupt on one rank stops both at the same iteration, and resuming matches."""

import os
import subprocess
import sys

import pytest
import torch
from engine_toys import distributed_main

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
