"""tools/train_net.py: one-line errors, the run record (config.yaml, log.txt), auto-scaling."""

import json
import os
import subprocess
import sys

import pytest
from engine_toys import ToyTrainer, toy_cfg
from tools_loader import load_tool

from psdiff.engine import auto_scale_workers, default_argument_parser, default_setup, setup_cfg
from psdiff.utils.errors import PsdiffError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")


def _error_line(capsys, argv):
    status = load_tool("train_net").run(argv)
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_missing_config_file_is_one_line_from_the_command_line(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, TRAIN_NET, "--config-file", missing],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr == f"error: config file not found: {missing}\n"


def test_unknown_key_in_overrides_or_file_is_one_line(tmp_path, capsys):
    err = _error_line(capsys, ["SOLVER.BASE_RL", "0.1"])
    assert "SOLVER.BASE_RL" in err and "SOLVER.BASE_LR" in err  # names it and suggests a fix
    config = tmp_path / "bad.yaml"
    config.write_text("SOLVER:\n  MAX_ITERS: 10\n")
    err = _error_line(capsys, ["--config-file", str(config)])
    assert "SOLVER.MAX_ITERS" in err and str(config) in err


def test_yaml_syntax_error_keeps_line_and_column(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text("SOLVER:\n  BASE_LR: 0.1\n   MAX_ITER: 3\n")  # one space too many
    err = _error_line(capsys, ["--config-file", str(base)])
    assert err == (f"error: cannot read config file {base}: {base} line 3, column 12: "
                   "mapping values are not allowed here\n")
    child = tmp_path / "child.yaml"  # the fault is in the file it inherits from
    child.write_text("_BASE_: base.yaml\n")
    err = _error_line(capsys, ["--config-file", str(child)])
    assert f"{child}: {base} line 3, column 12" in err


def test_unwritable_output_dir_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    output = str(blocker / "out")  # a folder cannot be made inside a file (even as root)
    err = _error_line(capsys, ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", output])
    assert f"OUTPUT_DIR '{output}' is not writable" in err


def test_saved_config_yaml_is_accepted_and_run_is_logged(tmp_path):
    args = default_argument_parser().parse_args(
        ["OUTPUT_DIR", str(tmp_path), "MODEL.DEVICE", "cpu", "SEED", "7",
         "SOLVER.IMS_PER_BATCH", "8",
         "SOLVER.BASE_LR", "0.05", "DATASETS.TEST", "('a', 'b')"])
    cfg = setup_cfg(args)
    default_setup(cfg, args)
    saved = str(tmp_path / "config.yaml")
    parser = default_argument_parser()
    reloaded = setup_cfg(parser.parse_args(["--config-file", saved, "--eval-only"]))
    assert reloaded.dump() == cfg.dump()
    log = open(tmp_path / "log.txt").read()
    for text in ("git commit:", "PyTorch", "World size: 1", "Seed of rank 0: 7",
                 "8 images per GPU, effective batch 8, base lr 0.05"):
        assert text in log, text


def test_auto_scale_workers_by_hand(tmp_path):
    cfg = toy_cfg(tmp_path, SOLVER__REFERENCE_WORLD_SIZE=8, SOLVER__IMS_PER_BATCH=16,
                  SOLVER__BASE_LR=0.02, SOLVER__MAX_ITER=1000, SOLVER__STEPS="(600, 800)",
                  SOLVER__WARMUP_ITERS=100, SOLVER__CHECKPOINT_PERIOD=200, TEST__EVAL_PERIOD=500)
    scaled = auto_scale_workers(cfg, 2)  # a quarter of the ranks, same images per rank
    assert scaled.SOLVER.IMS_PER_BATCH == 4
    assert scaled.SOLVER.BASE_LR == pytest.approx(0.005)
    assert scaled.SOLVER.MAX_ITER == 4000 and tuple(scaled.SOLVER.STEPS) == (2400, 3200)
    assert scaled.SOLVER.WARMUP_ITERS == 400 and scaled.SOLVER.CHECKPOINT_PERIOD == 800
    assert scaled.TEST.EVAL_PERIOD == 2000 and scaled.SOLVER.REFERENCE_WORLD_SIZE == 2
    assert auto_scale_workers(cfg, 8) is cfg
    with pytest.raises(PsdiffError, match="not divisible"):
        auto_scale_workers(toy_cfg(tmp_path, SOLVER__REFERENCE_WORLD_SIZE=3), 2)


def test_eval_only_accepts_the_config_yaml_a_run_saved(tmp_path, capsys):
    from psdiff.data.synthetic import write_cuhk_sysu
    from psdiff.engine import Checkpointer
    from psdiff.modeling import build_model

    write_cuhk_sysu(str(tmp_path / "CUHK-SYSU"), num_train_images=4, num_test_images=6,
                    num_train_ids=2, num_test_ids=3, image_size=(64, 80), gallery_sizes=(5,),
                    seed=1)
    output = tmp_path / "run"
    args = default_argument_parser().parse_args([
        "OUTPUT_DIR", str(output), "MODEL.DEVICE", "cpu", "DATASETS.ROOT", str(tmp_path),
        "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.NORM", "BN", "MODEL.FPN.OUT_CHANNELS", "16",
        "MODEL.PSDIFF.HIDDEN_DIM", "16", "MODEL.PSDIFF.EMB_DIM", "8", "MODEL.PSDIFF.NHEADS", "2",
        "MODEL.PSDIFF.DIM_FEEDFORWARD", "32", "MODEL.PSDIFF.DIM_DYNAMIC", "4",
        "MODEL.PSDIFF.NUM_PROPOSALS_TEST", "8", "MODEL.PSDIFF.SAMPLE_STEPS", "1",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "80", "DATALOADER.NUM_WORKERS", "0",
        "TEST.GALLERY_SIZES", "[5]", "TEST.GALLERY_SIZE", "5",
    ])
    cfg = setup_cfg(args)
    default_setup(cfg, args)  # what a training run does first: writes run/config.yaml
    Checkpointer(build_model(cfg), str(output)).save("model_final")
    status = load_tool("train_net").run([
        "--config-file", str(output / "config.yaml"), "--eval-only",
        "MODEL.WEIGHTS", str(output / "model_final.pth"),
    ])
    assert status == 0
    results = json.load(open(output / "eval_results.json"))
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == results
    for key in ("search/mAP", "search/top1", "det/AP", "det/recall"):
        assert 0.0 <= results[key] <= 1.0
    assert (output / "config_eval.yaml").exists()


def _setup_seed(tmp_path, *flags) -> int:
    """default_setup with SEED -1 (and `flags`); returns the SEED it settled in the config,
    after checking the log line and config.yaml hold the same value."""
    args = default_argument_parser().parse_args(
        [*flags, "OUTPUT_DIR", str(tmp_path), "MODEL.DEVICE", "cpu", "SEED", "-1"])
    cfg = setup_cfg(args)
    default_setup(cfg, args)
    log = open(tmp_path / "log.txt").read()
    line = [line for line in log.splitlines() if "Seed of rank 0:" in line][-1]
    assert int(line.split("Seed of rank 0: ")[1].split()[0]) == cfg.SEED
    assert "drawn at random" in line and cfg.is_frozen()
    assert setup_cfg(default_argument_parser().parse_args(
        ["--config-file", str(tmp_path / "config.yaml")])).SEED == cfg.SEED
    return cfg.SEED


def test_negative_seed_is_drawn_once_saved_and_reused_on_resume(tmp_path):
    seed = _setup_seed(tmp_path)
    assert 0 <= seed < 2**31
    assert _setup_seed(tmp_path, "--resume") == seed  # the resumed run keeps its streams
    # a trainer (and its loaders) never sees an unsettled seed
    with pytest.raises(PsdiffError, match="SEED -1: default_setup draws"):
        ToyTrainer(toy_cfg(tmp_path, SEED=-1))
