"""tools/train_net.py on a tiny synthetic CUHK-SYSU run: a diverging learning rate and a NaN
teacher target each stop the run with one line, and what was saved stays loadable."""

import re

import numpy as np
import pytest
import torch
from tiny_config import train_net_argv, write_e0_cache
from tools_loader import load_tool

from psdiff.data.synthetic import write_cuhk_sysu
from psdiff.engine import load_checkpoint_file

MAX_ITER = 6  # train_net_argv's schedule; a checkpoint after every iteration
NON_FINITE_LINE = re.compile(r"error: non-finite loss at iteration (\d+): (.+); training stopped,"
                             r" the last checkpoint is intact \(resume with --resume\)")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(datasets root, e0 cache) of a mini synthetic CUHK-SYSU tree."""
    root = tmp_path_factory.mktemp("datasets")
    write_cuhk_sysu(str(root / "synthetic" / "CUHK-SYSU"), num_train_images=6,
                    num_test_images=8, num_train_ids=2, num_test_ids=3, image_size=(64, 80),
                    gallery_sizes=(6,), seed=1)
    cache = str(root / "e0.npz")
    write_e0_cache(str(root), cache)
    return str(root), cache


def _train(capsys, *argv) -> tuple:
    """(exit status, the `error:` lines, all of stderr) of tools/train_net.py run in-process."""
    status = load_tool("train_net").run(list(argv))
    err = capsys.readouterr().err
    return status, [line for line in err.splitlines() if line.startswith("error:")], err


def test_a_sane_lr_trains_to_the_end(data, tmp_path, capsys):
    status, errors, _ = _train(capsys, *train_net_argv(*data, str(tmp_path),
                                                       "SOLVER.MAX_ITER", "2"))
    assert status == 0 and errors == []
    assert open(tmp_path / "last_checkpoint").read() == "model_final.pth"


def test_a_diverging_run_stops_with_the_non_finite_line(data, tmp_path, capsys):
    status, errors, err = _train(capsys, *train_net_argv(*data, str(tmp_path),
                                                         "SOLVER.BASE_LR", "1e6"))
    assert status == 2 and len(errors) == 1 and "Traceback" not in err
    match = NON_FINITE_LINE.fullmatch(errors[0])
    assert match, errors[0]
    iteration = int(match.group(1))
    assert 1 <= iteration < MAX_ITER
    # the checkpoint of the iteration before is the last one, complete and finite
    last = f"model_{iteration - 1:07d}.pth"
    assert open(tmp_path / "last_checkpoint").read() == last
    checkpoint = load_checkpoint_file(str(tmp_path / last))
    assert checkpoint["trainer"]["iteration"] == iteration - 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert not (tmp_path / f"model_{iteration:07d}.pth").exists()
    assert not list(tmp_path.glob("*.tmp.*"))


def test_a_nan_teacher_target_stops_the_run_at_start(data, tmp_path, capsys):
    root, cache = data
    with np.load(cache) as stored:
        arrays = {k: stored[k] for k in stored.files}
    arrays["embeddings_flip"] = arrays["embeddings_flip"].copy()
    arrays["embeddings_flip"][0] = np.nan
    bad = str(tmp_path / "e0_nan.npz")
    np.savez(bad, **arrays)
    status, errors, _ = _train(capsys, *train_net_argv(root, bad, str(tmp_path / "run")))
    assert status == 2
    assert errors == [
        f"error: TEACHER.CACHE {bad}: embeddings_flip of image {arrays['image_ids'][0]} (box 0) "
        "holds nan; rebuild it with tools/build_targets.py from a teacher that did not diverge"]
    assert not (tmp_path / "run" / "last_checkpoint").exists()
