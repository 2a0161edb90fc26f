"""The config tree: defaults documented, _BASE_ inheritance, one-line errors for bad keys."""

import re
from pathlib import Path

import pytest

from psdiff.config import get_cfg
from psdiff.utils.errors import PsdiffError

REPO = Path(__file__).resolve().parents[2]


def test_every_default_key_has_a_comment():
    source = (REPO / "psdiff/config/defaults.py").read_text().splitlines()
    assignments = [line for line in source if re.match(r"_C(\.\w+)+ = ", line)]
    undocumented = [
        line for line in assignments if "#" not in line and not line.rstrip().endswith("CN()")
    ]
    assert len(assignments) > 80
    assert undocumented == []


def test_paper_config_inherits_base_and_holds_paper_values():
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / "configs/psdiff_r50.yaml"))
    assert cfg.MODEL.RESNETS.DEPTH == 50
    assert cfg.SOLVER.BASE_LR == pytest.approx(2.5e-5)
    assert cfg.SOLVER.WEIGHT_DECAY == pytest.approx(1e-4)
    assert tuple(cfg.SOLVER.STEPS) == (70000, 84000) and cfg.SOLVER.MAX_ITER == 90000
    assert cfg.SOLVER.IMS_PER_BATCH == 32
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (800, 1333)
    p = cfg.MODEL.PSDIFF
    assert (p.NUM_PROPOSALS_TRAIN, p.NUM_PROPOSALS_TEST) == (300, 300)
    assert (p.SNR_BOX, p.SNR_EMB) == (2.0, 3.0)
    assert (p.CLASS_WEIGHT, p.L1_WEIGHT, p.GIOU_WEIGHT, p.REID_WEIGHT) == (2.0, 5.0, 2.0, 5.0)
    assert (p.SAMPLER, p.SAMPLE_STEPS) == ("DDIM", 8)
    assert cfg.OUTPUT_DIR == "./output/psdiff_r50_cuhk"  # the child's value wins


def test_base_chain_child_overrides_parent(tmp_path):
    (tmp_path / "a.yaml").write_text("SOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 7\n")
    (tmp_path / "b.yaml").write_text('_BASE_: "a.yaml"\nSOLVER:\n  MAX_ITER: 9\n')
    cfg = get_cfg()
    cfg.merge_from_file(str(tmp_path / "b.yaml"))
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER) == (0.5, 9)


def test_unknown_yaml_key_names_key_file_and_closest(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("MODEL:\n  PSDIFF:\n    SNR_EMBB: 2.0\n")
    with pytest.raises(PsdiffError) as err:
        get_cfg().merge_from_file(str(path))
    message = str(err.value)
    assert "\n" not in message
    assert "MODEL.PSDIFF.SNR_EMBB" in message and str(path) in message
    assert "MODEL.PSDIFF.SNR_EMB'" in message


def test_unknown_command_line_key_and_missing_file(tmp_path):
    with pytest.raises(PsdiffError, match=r"SOLVER\.BASE_LR'\?$"):
        get_cfg().merge_from_list(["SOLVER.BASE_RL", "0.1"])
    with pytest.raises(PsdiffError, match="config file not found: .*nope.yaml"):
        get_cfg().merge_from_file(str(tmp_path / "nope.yaml"))


def test_type_mismatch_is_one_line():
    with pytest.raises(PsdiffError) as err:
        get_cfg().merge_from_list(["SOLVER.MAX_ITER", "'many'"])
    assert "\n" not in str(err.value) and "SOLVER.MAX_ITER" in str(err.value)


def test_an_int_for_a_float_key_is_taken_as_float(tmp_path):
    path = tmp_path / "ints.yaml"
    path.write_text("MODEL:\n  PSDIFF:\n    SNR_BOX: 1\nSOLVER:\n  MAX_ITER: 10\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(["MODEL.PSDIFF.REID_WEIGHT", "80", "SOLVER.BASE_LR", 1])
    assert type(cfg.MODEL.PSDIFF.SNR_BOX) is float and cfg.MODEL.PSDIFF.SNR_BOX == 1.0
    assert type(cfg.MODEL.PSDIFF.REID_WEIGHT) is float and cfg.MODEL.PSDIFF.REID_WEIGHT == 80.0
    assert type(cfg.SOLVER.BASE_LR) is float
    assert type(cfg.SOLVER.MAX_ITER) is int  # int keys stay ints
    with pytest.raises(PsdiffError, match="SOLVER.MAX_ITER"):
        get_cfg().merge_from_list(["SOLVER.MAX_ITER", "1.5"])  # a float is no int
