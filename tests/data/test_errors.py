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


def _rewrite_mat(path, variable, edit):
    """Load one variable of a MATLAB file, let `edit` change it (or return a new one), save."""
    value = scipy.io.loadmat(path)[variable]
    edited = edit(value)
    scipy.io.savemat(path, {variable: value if edited is None else edited})


def test_protocol_file_without_query_field(cuhk_tree, tmp_path):
    root, _ = _copy(cuhk_tree, tmp_path)
    path = os.path.join(root, "annotation", "test", "train_test", "TestG6.mat")

    def rename_query(protocol):
        renamed = np.empty(protocol.shape, dtype=[("Gallery", object), ("Other", object)])
        for index in np.ndindex(protocol.shape):
            renamed[index] = (protocol[index]["Gallery"], protocol[index]["Query"])
        return renamed

    _rewrite_mat(path, "TestG6", rename_query)
    message = _error(load_cuhk_sysu, root, "query", 6)
    assert message == (f"{path}: record 1: expected a struct with fields (Query, Gallery), "
                       "found a struct with fields (Gallery, Other); see datasets/README.md "
                       "for the expected tree")


@pytest.mark.parametrize("box, found", [
    ("abc", "the text 'abc'"),
    (np.array([[3.0, 4.0, 20.0]]), "3 values [3.0, 4.0, 20.0]"),
    (np.array([[3.0, np.nan, 20.0, 30.0]]), "4 values [3.0, nan, 20.0, 30.0]"),
])
def test_malformed_box_in_images_mat(cuhk_tree, tmp_path, box, found):
    root, _ = _copy(cuhk_tree, tmp_path)
    path = os.path.join(root, "annotation", "Images.mat")
    names = []

    def break_second_image(images):
        names.append(str(images[0, 1]["imname"][0]))
        images[0, 1]["box"][0, 0]["idlocate"] = box

    _rewrite_mat(path, "Img", break_second_image)
    message = _error(load_cuhk_sysu, root, "train")
    assert message == (f"{path}: Img record 2 ({names[0]}) box 1 idlocate: expected a box "
                       f"[x, y, w, h] of 4 finite numbers, found {found}; see datasets/README.md "
                       "for the expected tree")


def test_malformed_train_scene_and_pool_entry(cuhk_tree, tmp_path):
    root, _ = _copy(cuhk_tree, tmp_path)
    train = os.path.join(root, "annotation", "test", "train_test", "Train.mat")

    def number_as_image_name(persons):
        persons[1, 0][0, 0]["scene"][0, 1]["imname"] = np.array([[7.0]])

    _rewrite_mat(train, "Train", number_as_image_name)
    message = _error(load_cuhk_sysu, root, "train")
    assert message.startswith(f"{train}: Train person 2 scene 2 imname: expected a name (text), "
                              "found 1 values [7.0];")
    pool = os.path.join(root, "annotation", "pool.mat")
    _rewrite_mat(pool, "pool", lambda cells: cells.__setitem__((2, 0), np.zeros((0, 0))))
    assert _error(load_cuhk_sysu, root, "gallery").startswith(
        f"{pool}: pool entry 3: expected a name (text), found an empty array;")


def test_malformed_prw_rows_and_ids(prw_tree, tmp_path):
    root, gt = _copy(prw_tree, tmp_path)
    name = sorted(n for n in gt.images if gt.images[n]["split"] == "test")[0]
    path = os.path.join(root, "annotations", name + ".mat")
    scipy.io.savemat(path, {"box_new": np.array(["1 2 3 4 5"])})
    assert _error(load_prw, root, "gallery") == (
        f"{path}: the boxes: expected rows [id, x, y, w, h] of finite numbers, found the text "
        "'1 2 3 4 5'; see datasets/README.md for the expected tree")
    ids = os.path.join(root, "ID_train.mat")
    scipy.io.savemat(ids, {"ID_train": np.array([[1.0, np.inf]])})
    assert _error(load_prw, root, "train").startswith(
        f"{ids}: ID_train: expected identity numbers, found 2 values [1.0, inf];")
