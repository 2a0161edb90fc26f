"""tools/make_synthetic.py and tools/visualize_data.py, run in-process on small trees."""

import os

import pytest
from tools_loader import load_tool

from psdiff.data import get_search_split, get_train_dicts


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A datasets root whose synthetic/ trees the command-line tool wrote."""
    root = tmp_path_factory.mktemp("root")
    argv = ["--output-dir", str(root / "synthetic"), "--train-images", "6", "--test-images", "8",
            "--train-ids", "2", "--test-ids", "3", "--image-size", "60", "80",
            "--gallery-sizes", "6", "7", "--camera-scale", "0.3", "--seed", "1"]
    assert load_tool("make_synthetic").run(argv) == 0
    return str(root)


def test_make_synthetic_writes_loadable_trees(written):
    assert len(get_train_dicts("synthetic_cuhk_sysu_train", written)) == 6
    split = get_search_split("synthetic_cuhk_sysu_test", written, gallery_size=7)
    assert len(split.gallery) == 8 and len(split.queries) == 3
    prw = get_search_split("synthetic_prw_test", written)
    assert {(d["height"], d["width"]) for d in prw.gallery} <= {(54, 96), (58, 72)}


def test_make_synthetic_bad_option_is_one_line(tmp_path, capsys):
    argv = ["--output-dir", str(tmp_path), "--format", "cuhk_sysu", "--gallery-sizes", "500"]
    assert load_tool("make_synthetic").run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: synthetic CUHK-SYSU") and err.count("\n") == 1


def test_visualize_data(written, tmp_path):
    tool = load_tool("visualize_data")
    out = tmp_path / "vis"
    assert tool.run(["--dataset", "synthetic_prw_test", "--num", "2", "--output-dir", str(out),
                     "DATASETS.ROOT", written]) == 0
    names = sorted(os.listdir(out))
    assert len(names) == 4 and sum(n.startswith("query_") for n in names) == 2
    assert tool.run(["--source", "dataloader", "--num", "3", "--output-dir", str(tmp_path / "dl"),
                     "DATASETS.ROOT", written, "DATASETS.TRAIN", "('synthetic_cuhk_sysu_train',)",
                     "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2",
                     "INPUT.MIN_SIZE_TRAIN", "(48,)"]) == 0
    assert len(os.listdir(tmp_path / "dl")) == 3
