"""The synthetic generator: deterministic, and its benchmark has the structure the tests rely on."""

import os

import pytest

from psdiff.data.synthetic import write_cuhk_sysu, write_prw
from psdiff.utils.errors import PsdiffError

MAT_HEADER = 116  # scipy writes the creation time into the text header of a .mat file


def _tree_bytes(root):
    """Relative path -> content of every file under `root` (.mat files after their header)."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                content = f.read()
            if name.endswith(".mat"):
                content = content[MAT_HEADER:]
            files[os.path.relpath(path, root)] = content
    return files


def test_same_seed_same_bytes(prw_tree, prw_options, tmp_path):
    root, _ = prw_tree
    again = str(tmp_path / "PRW")
    write_prw(again, **prw_options)
    assert _tree_bytes(again) == _tree_bytes(root)
    write_prw(again, **dict(prw_options, seed=prw_options["seed"] + 1))  # replaces its own tree
    assert _tree_bytes(again) != _tree_bytes(root)


def _appearances(gt, split):
    counts = {}
    for image in gt.images.values():
        if image["split"] == split:
            for identity, _ in image["persons"]:
                counts[identity] = counts.get(identity, 0) + 1
    return counts


@pytest.mark.parametrize("tree", ["cuhk_tree", "prw_tree"])
def test_identities(tree, request):
    _, gt = request.getfixturevalue(tree)
    unlabeled = None if tree == "cuhk_tree" else -2
    train, test = _appearances(gt, "train"), _appearances(gt, "test")
    assert set(train) - {unlabeled} == set(gt.train_ids)
    assert set(test) - {unlabeled} == set(gt.test_ids)
    assert not set(gt.train_ids) & set(gt.test_ids)
    assert unlabeled in train and unlabeled in test
    assert min(n for i, n in {**train, **test}.items() if i != unlabeled) >= 2
    for image in gt.images.values():  # a person appears at most once per image
        labeled = [i for i, _ in image["persons"] if i != unlabeled]
        assert len(labeled) == len(set(labeled))


def test_prw_identities_cross_cameras(prw_tree):
    _, gt = prw_tree
    cameras = {}
    for image in gt.images.values():
        for pid, _ in image["persons"]:
            cameras.setdefault(pid, set()).add(image["cam"])
    assert any(len(cameras[pid]) > 1 for pid in gt.test_ids)
    assert any(len(cameras[pid]) > 1 for pid in gt.train_ids)


def test_cuhk_galleries_nest_and_list_positives_first(cuhk_tree):
    _, gt = cuhk_tree
    for index, (_, name, _) in enumerate(gt.queries):
        small, large = gt.galleries[6][index], gt.galleries[9][index]
        assert large[:6] == small and name not in [n for n, _ in large]
        has_box = [box is not None for _, box in large]
        assert has_box == sorted(has_box, reverse=True) and has_box[0]
        assert len({n for n, _ in large}) == 9


def test_refuses_foreign_folders_and_impossible_sizes(cuhk_options, prw_options, tmp_path):
    foreign = tmp_path / "CUHK-SYSU"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(PsdiffError, match="not written by the synthetic generator"):
        write_cuhk_sysu(str(foreign), **cuhk_options)
    assert (foreign / "mine.txt").read_text() == "keep me"
    with pytest.raises(PsdiffError, match="sizes in 2..9"):
        write_cuhk_sysu(str(tmp_path / "a"), **dict(cuhk_options, gallery_sizes=(6, 10)))
    with pytest.raises(PsdiffError, match="fewer than 2 times"):
        write_prw(str(tmp_path / "b"), **dict(prw_options, num_train_ids=30))
