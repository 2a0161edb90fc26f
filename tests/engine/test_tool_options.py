"""One command-line vocabulary: every tool's --help shows that tool's own examples and only the
flags it honors; settings a config key names are given as that key, never as a flag."""

import re

import pytest
from tools_loader import load_tool

from psdiff.config import get_cfg
from psdiff.engine import default_argument_parser, setup_cfg
from psdiff.utils.errors import PsdiffError

# tool -> its in-process entry point taking argv
ENTRIES = {
    "train_net": "run", "train_teacher": "run", "build_targets": "run", "evaluate": "main",
    "demo": "main", "analyze_model": "parse_args", "teacher_cost": "parse_args",
    "visualize_data": "parse_args", "make_synthetic": "parse_args", "plot_results": "main",
    "benchmark": "main",
}
# flags that duplicate a config key (or a tool's other spelling): none may come back
DUPLICATES = ("--root", "--device", "--det-thresh", "--cws", "--k ")
WITH_CONFIG = {"train_net", "train_teacher", "build_targets", "evaluate", "demo",
               "analyze_model", "teacher_cost", "visualize_data"}
TRAINING = {"train_net", "train_teacher"}
LAUNCHED = {"train_net", "train_teacher", "build_targets"}


def _help(capsys, tool: str, *argv) -> str:
    """The tool's --help text."""
    entry = getattr(load_tool(tool), ENTRIES[tool])
    with pytest.raises(SystemExit) as exit_:
        entry([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def _flags(text: str) -> str:
    """The option list of a --help text (after the description and its examples)."""
    return re.split(r"\n(?:options|optional arguments):\n", text)[-1]


@pytest.mark.parametrize("tool", sorted(ENTRIES))
def test_help_shows_own_examples_and_only_honored_flags(tool, capsys):
    text = _help(capsys, tool)
    assert f"tools/{tool}.py" in text  # the examples are this tool's
    assert not [flag for flag in DUPLICATES if flag in text]
    flags = _flags(text)
    assert ("--config-file" in flags) == (tool in WITH_CONFIG)
    assert ("--resume" in flags) == ("--eval-only" in flags) == (tool in TRAINING)
    assert ("--num-gpus" in flags) == (tool in LAUNCHED)


def test_each_eval_only_names_the_weights_it_evaluates(capsys):
    assert "only evaluate the checkpoint MODEL.WEIGHTS" in _help(capsys, "train_net")
    assert "only evaluate the checkpoint TEACHER.WEIGHTS" in _help(capsys, "train_teacher")


def test_search_result_takes_config_overrides_and_top_k(capsys):
    text = _help(capsys, "plot_results", "search-result")
    assert "--top-k" in text and "--config-file" in text and "KEY VALUE" in text
    assert not [flag for flag in DUPLICATES if flag in text]


def test_a_runs_saved_config_comes_before_the_file_and_the_overrides():
    saved = get_cfg()
    saved.merge_from_list(["TEST.CWS", "True", "TEST.GALLERY_SIZE", "500"])
    args = default_argument_parser(train=False).parse_args(["TEST.GALLERY_SIZE", "50"])
    cfg = setup_cfg(args, run_config=saved.dump())
    assert cfg.TEST.CWS and cfg.TEST.GALLERY_SIZE == 50  # kept from the run, then overridden
    with pytest.raises(PsdiffError, match="unknown config key 'TEST.CWZ' in the run's saved"):
        setup_cfg(args, run_config=saved.dump().replace("CWS:", "CWZ:"))
