"""Metrics reach metrics.json, TensorBoard (read back by tensorboard) and the console line."""

import json
import logging

import numpy as np
import pytest
from engine_toys import ToyTrainer, toy_cfg
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from psdiff.solver import warmup_multistep_factor
from psdiff.utils.env import seed_all_rng
from psdiff.utils.events import EventStorage, JSONWriter


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """10 toy iterations, written every 2, evaluated at 5 and at the end."""
    output = tmp_path_factory.mktemp("events")
    seed_all_rng(0)
    trainer = ToyTrainer(toy_cfg(output))
    results = trainer.train()
    return output, trainer, results


def _expected_lr(iteration):
    return 0.05 * warmup_multistep_factor(iteration, [6], 0.1, 3, 0.1, "linear")


def test_tensorboard_events_hold_the_logged_scalars(toy_run):
    output, _, results = toy_run
    events = EventAccumulator(str(output))
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ("total_loss", "loss_mse", "loss_l1", "mean_pred", "lr", "time", "data_time",
                "toy/mse"):
        assert tag in tags, tag
    lr = {e.step: e.value for e in events.Scalars("lr")}
    assert sorted(lr) == [1, 3, 5, 7, 9]  # LOG_PERIOD 2
    for step, value in lr.items():
        assert value == pytest.approx(_expected_lr(step), rel=1e-6)
    evals = {e.step: e.value for e in events.Scalars("toy/mse")}
    assert sorted(evals) == [4, 10]  # after 5 iterations, and the final one at MAX_ITER
    assert evals[10] == pytest.approx(results["toy/mse"], rel=1e-6)


def test_metrics_json_has_one_line_per_written_iteration(toy_run):
    output, _, results = toy_run
    lines = [json.loads(line) for line in open(output / "metrics.json")]
    assert [line["iteration"] for line in lines] == [1, 3, 4, 5, 7, 9, 10]
    assert set(lines[2]) == {"iteration", "toy/mse"}  # the evaluation after iteration 4
    assert lines[-1]["toy/mse"] == pytest.approx(results["toy/mse"])
    for line in lines:
        if "lr" in line:
            assert line["lr"] == pytest.approx(_expected_lr(line["iteration"]))


class _Keep(logging.Handler):
    """Keeps the messages of one logger (setup_logger stops propagation to pytest's caplog)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_console_line_names_losses_lr_time_and_eta(tmp_path):
    seed_all_rng(0)
    trainer = ToyTrainer(toy_cfg(tmp_path, SOLVER__MAX_ITER=4, TEST__EVAL_PERIOD=0))
    printer_logger = logging.getLogger("psdiff.utils.events")
    keep = _Keep()
    printer_logger.addHandler(keep)
    printer_logger.setLevel(logging.INFO)
    try:
        trainer.train()
    finally:
        printer_logger.removeHandler(keep)
    lines = keep.lines
    assert len(lines) == 2  # iterations 1 and 3
    for field in ("eta:", "iter: 3", "loss_mse:", "loss_l1:", "total_loss:", "time:", "data_time:",
                  "lr:", "max_"):
        assert field in lines[-1], field


def test_json_writer_smooths_losses_with_window_median(tmp_path):
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 100.0]
    with EventStorage() as storage:
        writer = JSONWriter(str(tmp_path / "metrics.json"), window_size=4)
        for i, value in enumerate(values):
            storage.iter = i
            storage.put_scalar("loss", value)
            storage.put_scalar("lr", value * 10, smoothing_hint=False)
        writer.write()
        writer.close()
    (line,) = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    assert line == {"iteration": 5, "loss": float(np.median(values[-4:])), "lr": 1000.0}


def test_json_writer_drops_lines_from_the_resumed_iteration_on(tmp_path):
    # a crashed run logged iterations 0..5 and was cut mid-line; the resume starts at 3
    path = tmp_path / "metrics.json"
    old = [json.dumps({"iteration": i, "loss": float(i)}) for i in range(6)]
    path.write_text("\n".join(old) + '\n{"iteration": 6, "lo')
    with EventStorage(start_iter=3) as storage:
        writer = JSONWriter(str(path))
        storage.put_scalar("loss", 30.0, smoothing_hint=False)
        writer.write()
        writer.close()
    lines = [json.loads(line) for line in open(path)]
    assert lines == [{"iteration": i, "loss": float(i)} for i in range(3)] + [
        {"iteration": 3, "loss": 30.0}]
