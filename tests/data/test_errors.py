"""A broken dataset tree fails at start-up with one line naming the path at fault."""

import os
import shutil

import numpy as np
import pytest
import scipy.io

from psdiff.data import get_search_split, get_train_dicts
from psdiff.data.datasets import load_cuhk_sysu, load_prw
from psdiff.utils.errors import PsdiffError


def _copy(tree, tmp_path):
    root, gt = tree
    copy = str(tmp_path / os.path.basename(root))
    shutil.copytree(root, copy)
    return copy, gt


def _error(load, *args) -> str:
    with pytest.raises(PsdiffError) as info:
        load(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_root(tmp_path):
    missing = str(tmp_path / "nowhere" / "CUHK-SYSU")
    message = _error(load_cuhk_sysu, missing, "train")
    assert missing in message and "datasets/README.md" in message


def test_missing_mat(cuhk_tree, tmp_path):
    root, _ = _copy(cuhk_tree, tmp_path)
    path = os.path.join(root, "annotation", "pool.mat")
    os.remove(path)
    message = _error(load_cuhk_sysu, root, "gallery")
    assert path in message and "datasets/README.md" in message


def test_corrupt_mat(prw_tree, tmp_path):
    root, _ = _copy(prw_tree, tmp_path)
    path = os.path.join(root, "frame_test.mat")
    with open(path, "r+b") as f:
        f.seek(20)
        f.write(b"\x00" * 200)
        f.truncate(220)
    message = _error(load_prw, root, "gallery")
    assert message.startswith(f"cannot read MATLAB file {path}")


def test_wrong_variable_name(prw_tree, tmp_path):
    root, _ = _copy(prw_tree, tmp_path)
    path = os.path.join(root, "ID_train.mat")
    scipy.io.savemat(path, {"ID_test2": np.arange(3.0)[None]})
    message = _error(load_prw, root, "train")
    assert message.startswith(f"{path} has no variable 'ID_train' (found: ID_test2)")


def test_annotation_names_missing_image(cuhk_tree, tmp_path):
    root, gt = _copy(cuhk_tree, tmp_path)
    image = os.path.join(root, "Image", "SSM", gt.pool[3])
    os.remove(image)
    message = _error(load_cuhk_sysu, root, "gallery")
    assert image in message and "pool.mat" not in message and "Images.mat" in message


def test_missing_frame_annotation(prw_tree, tmp_path):
    root, gt = _copy(prw_tree, tmp_path)
    name = sorted(n for n in gt.images if gt.images[n]["split"] == "train")[0]
    path = os.path.join(root, "annotations", name + ".mat")
    os.remove(path)
    assert path in _error(load_prw, root, "train")


def test_bad_query_line(prw_tree, tmp_path):
    root, _ = _copy(prw_tree, tmp_path)
    with open(os.path.join(root, "query_info.txt"), "ab") as f:
        f.write(b"12 3.0 oops\r\n")
    message = _error(load_prw, root, "query")
    assert "query_info.txt line" in message and "oops" in message


def test_catalog_names_and_roots(tmp_path):
    message = _error(get_train_dicts, "cuhk_sysu", str(tmp_path))
    assert "unknown dataset 'cuhk_sysu'" in message and "synthetic_prw_train" in message
    message = _error(get_train_dicts, "prw_test", str(tmp_path))
    assert "test set" in message and "prw_train" in message
    message = _error(get_search_split, "prw_test", str(tmp_path))
    assert os.path.join(str(tmp_path), "PRW") in message
    message = _error(get_search_split, "synthetic_cuhk_sysu_test", str(tmp_path))
    assert "tools/make_synthetic.py" in message
