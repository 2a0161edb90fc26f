"""tools/make_synthetic.py and tools/visualize_data.py, run in-process on small trees."""

import os
import shutil

import pytest
import scipy.io
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


def test_malformed_annotation_is_one_line_from_a_tool(written, tmp_path, capsys, monkeypatch):
    root = tmp_path / "root"
    shutil.copytree(written, root)
    path = root / "synthetic" / "CUHK-SYSU" / "annotation" / "Images.mat"
    images = scipy.io.loadmat(path)["Img"]
    images[0, 0]["box"][0, 0]["idlocate"] = "x=3"
    scipy.io.savemat(path, {"Img": images})
    monkeypatch.setenv("PSDIFF_DATASETS", str(root))
    status = load_tool("visualize_data").run(["--dataset", "synthetic_cuhk_sysu_train",
                                              "--output-dir", str(tmp_path / "vis")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {path}: Img record 1 (") and "found the text 'x=3'" in err


def _tree(folder) -> dict:
    """Every file under `folder` with its bytes."""
    return {os.path.relpath(os.path.join(d, n), folder): open(os.path.join(d, n), "rb").read()
            for d, _, names in os.walk(folder) for n in names}


def test_make_synthetic_failing_late_leaves_no_half_written_tree(written, tmp_path, capsys):
    # each of the 2 test identities shows in more images than a gallery of 2 can hold: the
    # generator fails after rendering every image
    argv = ["--output-dir", str(tmp_path), "--format", "cuhk_sysu", "--train-images", "6",
            "--test-images", "8", "--train-ids", "2", "--test-ids", "2", "--image-size", "60",
            "80", "--gallery-sizes", "2"]
    tool = load_tool("make_synthetic")
    assert tool.run(argv) == 2
    last_line = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert last_line.startswith("error: synthetic CUHK-SYSU: query ")
    assert os.listdir(tmp_path) == []
    # over an older tree, the same failure leaves that tree as it was
    shutil.copytree(os.path.join(written, "synthetic", "CUHK-SYSU"), tmp_path / "CUHK-SYSU")
    before = _tree(tmp_path / "CUHK-SYSU")
    assert tool.run(argv) == 2
    assert os.listdir(tmp_path) == ["CUHK-SYSU"] and _tree(tmp_path / "CUHK-SYSU") == before
