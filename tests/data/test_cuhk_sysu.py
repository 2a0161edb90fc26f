"""The CUHK-SYSU loader reads back exactly what the generator wrote in the published format."""

import logging
import os
import shutil

import numpy as np
import pytest
import scipy.io

from psdiff.data import get_search_split
from psdiff.data.datasets import available_gallery_sizes, load_cuhk_sysu
from psdiff.data.datasets.common import SYNTHETIC_MARKER
from psdiff.utils.errors import PsdiffError


def _xyxy(box):
    """Hand conversion of an integer [x, y, w, h] box."""
    x, y, w, h = box
    return [float(x), float(y), float(x + w), float(y + h)]


def _expected_images(gt, names, pid_of):
    """What a dataset dict of each image must hold, from the generator's ground truth."""
    expected = []
    for name in names:
        image = gt.images[name]
        persons = [(_xyxy(box), pid_of.get(identity, -1)) for identity, box in image["persons"]]
        expected.append((name, image["height"], image["width"], persons))
    return expected


def _as_tuples(dicts):
    return [
        (d["image_id"], d["height"], d["width"], [(a["bbox"], a["pid"]) for a in d["annotations"]])
        for d in dicts
    ]


def test_train_split_matches_generator(cuhk_tree):
    root, gt = cuhk_tree
    dicts = load_cuhk_sysu(root, "train")
    train_names = [n for n in gt.images if gt.images[n]["split"] == "train"]
    # Reference order: image names sorted as strings; pid = Train.mat index + 1, others -1.
    pid_of = {identity: i + 1 for i, identity in enumerate(gt.train_ids)}
    assert _as_tuples(dicts) == _expected_images(gt, sorted(train_names), pid_of)
    assert all(os.path.isfile(d["file_name"]) for d in dicts)
    pids = [a["pid"] for d in dicts for a in d["annotations"]]
    assert -1 in pids and set(pids) - {-1} == set(range(1, len(gt.train_ids) + 1))


def test_gallery_split_matches_generator(cuhk_tree):
    root, gt = cuhk_tree
    dicts = load_cuhk_sysu(root, "gallery")
    pid_of = {identity: i + 1 for i, (identity, _, _) in enumerate(gt.queries)}
    assert _as_tuples(dicts) == _expected_images(gt, gt.pool, pid_of)
    assert any(a["pid"] == -1 for d in dicts for a in d["annotations"])


@pytest.mark.parametrize("size", [6, 9])
def test_queries_and_their_galleries(cuhk_tree, size):
    root, gt = cuhk_tree
    queries = load_cuhk_sysu(root, "query", gallery_size=size)
    assert len(queries) == len(gt.queries) == len(gt.test_ids)
    for index, (query, (identity, name, box)) in enumerate(zip(queries, gt.queries)):
        assert (query["image_id"], query["bbox"], query["pid"]) == (name, _xyxy(box), index + 1)
        gallery = gt.galleries[size][index]
        assert query["gallery_ids"] == [n for n, _ in gallery]
        assert len(query["gallery_ids"]) == size and name not in query["gallery_ids"]
        expected = [_xyxy(b) if b is not None else [np.nan] * 4 for _, b in gallery]
        np.testing.assert_array_equal(query["gallery_boxes"], np.array(expected, np.float32))
        # The positives are exactly the other pool images that show the person.
        shown = {n for n in gt.pool for i, _ in gt.images[n]["persons"] if i == identity}
        listed = {n for n, b in zip(query["gallery_ids"], query["gallery_boxes"]) if b[0] == b[0]}
        assert listed == shown - {name}


def test_whole_pool_gallery(cuhk_tree):
    root, gt = cuhk_tree
    queries = load_cuhk_sysu(root, "query", gallery_size=-1)
    for index, query in enumerate(queries):
        # No TestG50 in the mini tree: the query list comes from the smallest file, TestG6.
        listed = [n for n, _ in gt.galleries[6][index]]
        rest = [n for n in gt.pool if n not in listed and n != query["image_id"]]
        assert query["gallery_ids"] == listed + rest
        assert len(query["gallery_ids"]) == len(gt.pool) - 1
        assert np.isnan(query["gallery_boxes"][len(listed) :]).all()


def test_sizes_and_missing_size(cuhk_tree):
    root, _ = cuhk_tree
    assert available_gallery_sizes(root) == [6, 9]
    with pytest.raises(PsdiffError, match=r"TestG100\.mat.*sizes in this tree: 6, 9"):
        load_cuhk_sysu(root, "query", gallery_size=100)


def test_split_without_the_headline_size_is_ranked_against_the_whole_pool(cuhk_tree,
                                                                          datasets_root, caplog):
    """A tree without TestG<TEST.GALLERY_SIZE>.mat is still evaluated: at -1, with a warning."""
    root, _ = cuhk_tree
    with caplog.at_level(logging.WARNING):
        split = get_search_split("synthetic_cuhk_sysu_test", datasets_root, gallery_size=100)
    assert split.gallery_size == -1 and "no TestG100.mat" in caplog.text
    whole_pool = load_cuhk_sysu(root, "query", gallery_size=-1)
    assert [q["gallery_ids"] for q in split.queries] == [q["gallery_ids"] for q in whole_pool]
    assert get_search_split("synthetic_cuhk_sysu_test", datasets_root, 9).gallery_size == 9


def test_one_element_struct_arrays(cuhk_tree, tmp_path):
    """A protocol with a single query (a 1x1 struct) must not collapse to a 0-d array."""
    root, gt = cuhk_tree
    copy = str(tmp_path / "CUHK-SYSU")
    shutil.copytree(root, copy)
    path = os.path.join(copy, "annotation", "test", "train_test", "TestG6.mat")
    protocol = scipy.io.loadmat(path)["TestG6"][:, :1]
    scipy.io.savemat(path, {"TestG6": protocol})
    os.remove(path.replace("TestG6", "TestG9"))
    queries = load_cuhk_sysu(copy, "query", gallery_size=6)
    assert [q["image_id"] for q in queries] == [gt.queries[0][1]]
    assert queries[0]["gallery_ids"] == [n for n, _ in gt.galleries[6][0]]


def test_published_counts_checked_only_on_real_trees(cuhk_tree, tmp_path, caplog):
    root, _ = cuhk_tree
    with caplog.at_level(logging.WARNING):
        load_cuhk_sysu(root, "gallery")
    assert "published" not in caplog.text
    copy = str(tmp_path / "CUHK-SYSU")
    shutil.copytree(root, copy)
    os.remove(os.path.join(copy, SYNTHETIC_MARKER))
    with caplog.at_level(logging.WARNING):
        load_cuhk_sysu(copy, "gallery")
    assert "has 10 images, the published dataset has 6978" in caplog.text
