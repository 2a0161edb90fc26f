"""tools/benchmark.py `model` and `train` on the tiny config at 64x96, and `roi_align` on a small
map (speed is never asserted)."""

import json
import time

import pytest
from tiny_config import TINY_OVERRIDES
from tools_loader import load_tool
from torch import nn

from psdiff.utils.benchmark import module_table

benchmark = load_tool("benchmark")
TINY = ["--size", "64", "96", "--repeats", "1", "--warmup", "0"]
KEYS = ["MODEL.DEVICE", "cpu", *TINY_OVERRIDES]


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_step_ratios_by_hand():
    ratios = benchmark.step_ratios({1: 100.0, 4: 130.0, 8: 170.0}, baseline_ms=125.0)
    assert ratios == pytest.approx({"step-1 / Faster R-CNN": 0.8, "step-4 / Faster R-CNN": 1.04,
                                    "step-8 / Faster R-CNN": 1.36,
                                    "one extra step / step-1": 0.1})  # (170 - 100) / 7 / 100
    assert benchmark.step_ratios({2: 1.0, 4: 2.0}) == {}  # no step 1, no baseline


def test_model_times_each_step_the_backbone_and_the_baseline(tmp_path, capsys):
    record = tmp_path / "record.txt"
    argv = ["model", *TINY, "--steps", "2", "1", "--baseline", "--profile", "--record",
            str(record), *KEYS]
    assert benchmark.main(argv) == 0
    result = last_json(capsys)
    assert list(result["latency_ms"]) == ["backbone (build_resnet_fpn_backbone)",
                                          "PSDiff 1 step", "PSDiff 2 steps",
                                          "Faster R-CNN R50-FPN"]
    assert all(ms > 0 for ms in result["latency_ms"].values())
    ms = result["latency_ms"]
    assert result["ratios"]["step-1 / Faster R-CNN"] == pytest.approx(
        ms["PSDiff 1 step"] / ms["Faster R-CNN R50-FPN"], rel=1e-3)
    text = record.read_text()
    assert text.startswith("## model: defaults, cpu")
    for expected in ("torch ", "commit ", "python tools/benchmark.py model --size 64 96",
                     "| PSDiff 2 steps |", "| one extra step / step-1 |",
                     "One backbone call (build_resnet_fpn_backbone, TEST.FUSE_BN True)",
                     "One CDL call, 16 boxes", "| `self_attn` |",
                     "| rest (CollaborativeDenoisingLayer's own code) |", "| all ops |"):
        assert expected in text


class Sleeper(nn.Module):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self):
        time.sleep(self.seconds)


class Parent(nn.Module):
    """Two children (30 ms, then 0 ms) and 10 ms of its own between them."""

    def __init__(self):
        super().__init__()
        self.slow, self.quick = Sleeper(0.03), Sleeper(0.0)

    def forward(self):
        self.slow()
        time.sleep(0.01)
        self.quick()


def test_module_table_splits_the_time_among_children():
    parent = Parent()
    lines = module_table(parent, parent, "cpu", calls=2).splitlines()[2:]
    names = [line.split(" | ")[0].strip("| ") for line in lines]
    assert names == ["`slow`", "`quick`", "rest (Parent's own code)", "all"]
    ms = [float(line.split(" | ")[1]) for line in lines]
    assert ms[0] >= 30 and ms[2] >= 10 and ms[1] < ms[2]  # per call; sleeps only overshoot
    assert ms[3] == pytest.approx(sum(ms[:3]), abs=0.05)
    assert not parent.slow._forward_hooks  # the hooks are removed
    lines = module_table(parent, parent, "cpu", top=1).splitlines()[2:]
    assert [line.split(" | ")[0].strip("| ") for line in lines] == [
        "`slow`", "other parts (1)", "rest (Parent's own code)", "all"]


def test_train_reports_iteration_time_and_peak_memory(tmp_path, capsys):
    argv = ["train", *TINY, "--batch", "2", "--record", "", *KEYS, "SOLVER.AMP.ENABLED", "True"]
    assert benchmark.main(argv) == 0
    result = last_json(capsys)
    assert result["batch"] == 2 and result["ms_per_iter"] > 0 and result["peak_memory_gib"] > 0
    assert not list(tmp_path.iterdir())  # --record '': nothing written


@pytest.mark.parametrize("flags, timed", [([], "forward + backward"),
                                          (["--forward-only", "--images", "1"], "forward")])
def test_roi_align_times_both_kernels_and_records_them(tmp_path, capsys, flags, timed):
    record = tmp_path / "roi_align_timings.txt"
    argv = ["roi_align", "--size", "12", "16", "--boxes", "20", "--repeats", "2", "--record",
            str(record), *flags]
    assert benchmark.main(argv) == 0
    result = last_json(capsys)
    assert set(result["ms"]) == {"torchvision roi_align", "roi_align_gather"}
    assert all(ms > 0 for ms in result["ms"].values()) and result["speedup"] > 0
    images = 1 if flags else 4
    assert f", {timed} of 20 boxes on a {images} x 128 x 12 x 16 map" in record.read_text()


def test_counts_below_their_floor_are_refused():
    with pytest.raises(SystemExit) as error:
        benchmark.main(["model", "--steps", "0"])
    assert error.value.code == 2
