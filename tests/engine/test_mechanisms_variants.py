"""tools/mechanisms.py: every variant its tables train is a model the recipe can build, and the
variant's switches, not only SEED and the user's overrides, reach the training; an evaluation
that changes nothing in a run's config reuses the training's own (demo_synthetic's
`evaluation_dir`)."""

import os

import pytest
from tiny_config import TINY_OVERRIDES
from tools_loader import TOOLS, load_tool

from psdiff.config import get_cfg
from psdiff.modeling import build_model

RECIPE = "configs/synthetic/psdiff_r18_synthetic_cuhk.yaml"


@pytest.fixture
def mechanisms(monkeypatch):
    monkeypatch.syspath_prepend(TOOLS)  # the script imports its sibling demo_synthetic
    return load_tool("mechanisms")


def test_every_variant_builds_and_reaches_its_training(mechanisms):
    used = {variant for _, rows in mechanisms.TABLES.values() for _, variant, _ in rows}
    assert used == set(mechanisms.VARIANTS)
    recipe = get_cfg()
    recipe.merge_from_file(RECIPE)
    for variant in mechanisms.VARIANTS:
        overrides = mechanisms.training_overrides(variant, 2, ["SOLVER.MAX_ITER", "10"])
        cfg = get_cfg()
        cfg.merge_from_file(RECIPE)
        cfg.merge_from_list(overrides)
        assert cfg.SEED == 2 and cfg.SOLVER.MAX_ITER == 10
        pairs = mechanisms.VARIANTS[variant]
        switches = {key.removeprefix("MODEL.PSDIFF."): value
                    for key, value in zip(pairs[::2], pairs[1::2])}
        assert all(key.startswith("MODEL.PSDIFF.") for key in pairs[::2]), pairs
        for name, value in switches.items():
            assert str(cfg.MODEL.PSDIFF[name]) == value, (variant, name)
        # a variant changes the recipe (the first row of a table is the recipe itself)
        differs = [name for name in switches if cfg.MODEL.PSDIFF[name] != recipe.MODEL.PSDIFF[name]]
        assert differs or variant == "full CDL", variant
        cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.INIT_FROM_TEACHER", "False",
                             *TINY_OVERRIDES])
        build_model(cfg)  # raises, naming the key, for a combination the model does not support


def test_every_evaluation_override_is_a_key_of_the_recipe(mechanisms):
    recipe = get_cfg()
    recipe.merge_from_file(RECIPE)
    for table, (_, rows) in mechanisms.TABLES.items():
        for label, _, overrides in rows:
            cfg = recipe.clone()
            cfg.merge_from_list(list(overrides))  # raises on an unknown key or a wrong type
            pairs = dict(zip(overrides[::2], overrides[1::2]))
            steps = pairs.get("MODEL.PSDIFF.SAMPLE_STEPS")
            assert steps is None or steps in label, (table, label)
            assert cfg.MODEL.PSDIFF.SAMPLE_STEPS == int(steps or recipe.MODEL.PSDIFF.SAMPLE_STEPS)


def test_runs_and_evaluations_have_folders_of_their_own(mechanisms):
    """Variants never share a folder, nor do different evaluations of a run (DPM-Solver and
    DPM-Solver++ once did); rows that evaluate alike share one."""
    assert len({mechanisms.slug(v) for v in mechanisms.VARIANTS}) == len(mechanisms.VARIANTS)
    overrides = {tuple(o) for _, rows in mechanisms.TABLES.values() for _, _, o in rows}
    names = {mechanisms.evaluation_name(list(o)) for o in overrides}
    assert len(names) == len(overrides)
    assert all(os.sep not in name for name in names)
    table5 = [mechanisms.evaluation_name(o) for _, _, o in mechanisms.TABLES["table5"][1]]
    assert table5 == ["SAMPLER=DDIM", "SAMPLER=DPM_SOLVER", "SAMPLER=DPM_SOLVER_PP"]


def test_fig6_draws_one_line_per_renewal_rule_from_one_step_to_eight(mechanisms):
    rows = mechanisms.TABLES["fig6"][1]
    measured = [(label, overrides, [{"row": label}]) for label, _, overrides in rows]
    runs = mechanisms.fig6_runs(measured)
    assert list(runs) == [renewal for renewal, _ in mechanisms.RENEWALS]
    for renewal, points in runs.items():
        assert sorted(points) == [1, 2, 4, 8]
        assert points[1] == [{"row": "1 step"}]
        assert all(renewal in points[steps][0]["row"] for steps in (2, 4, 8)), renewal


def test_an_evaluation_that_changes_nothing_is_the_trainings_own(tmp_path):
    demo = load_tool("demo_synthetic")
    recipe = get_cfg()
    recipe.merge_from_file(RECIPE)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(recipe.dump())
    other = str(tmp_path / "eval")
    steps = str(recipe.MODEL.PSDIFF.SAMPLE_STEPS)
    assert demo.evaluation_dir(str(run_dir), other) == str(run_dir)
    assert demo.evaluation_dir(str(run_dir), other, "MODEL.PSDIFF.SAMPLE_STEPS", steps,
                               "MODEL.PSDIFF.SAMPLER", "DDIM") == str(run_dir)
    assert demo.evaluation_dir(str(run_dir), other, "MODEL.PSDIFF.SAMPLE_STEPS", "1") == other
    assert demo.evaluation_dir(str(run_dir), other, "MODEL.PSDIFF.SAMPLER", "DPM_SOLVER") == other
