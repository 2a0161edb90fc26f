"""The PRW loader reads back exactly what the generator wrote in the published format."""

import os

from psdiff.data.datasets import load_prw


def _annotation_box(x, y, w, h):
    """The reference rule, written out by hand: clip x, y, w, h at 0, add, then truncate."""
    x, y, w, h = max(x, 0), max(y, 0), max(w, 0), max(h, 0)
    return [float(int(x)), float(int(y)), float(int(x + w)), float(int(y + h))]


def _query_box(x, y, w, h):
    """The reference rule for query boxes: truncate x1, y1, x2, y2 first, then clip at 0."""
    return [float(max(int(v), 0)) for v in (x, y, x + w, y + h)]


def _check_split(root, gt, split, pid_of):
    dicts = load_prw(root, split)
    on_disk = "train" if split == "train" else "test"
    names = sorted(n for n in gt.images if gt.images[n]["split"] == on_disk)
    assert [d["image_id"] for d in dicts] == names
    for d in dicts:
        image = gt.images[d["image_id"]]
        assert (d["height"], d["width"]) == (image["height"], image["width"])
        assert d["cam_id"] == image["cam"]
        assert d["file_name"] == os.path.join(root, "frames", d["image_id"])
        expected = [(_annotation_box(*box), pid_of(pid)) for pid, box in image["persons"]]
        assert [(a["bbox"], a["pid"]) for a in d["annotations"]] == expected
    return dicts


def test_train_split(prw_tree):
    root, gt = prw_tree
    rank = {raw: i + 1 for i, raw in enumerate(sorted(gt.train_ids))}
    dicts = _check_split(root, gt, "train", lambda pid: -1 if pid == -2 else rank[pid])
    pids = {a["pid"] for d in dicts for a in d["annotations"]}
    assert pids == {-1} | set(range(1, len(gt.train_ids) + 1))


def test_gallery_split(prw_tree):
    root, gt = prw_tree
    dicts = _check_split(root, gt, "gallery", lambda pid: -1 if pid == -2 else pid)
    assert {a["pid"] for d in dicts for a in d["annotations"]} == {-1} | set(gt.test_ids)


def test_tree_exercises_the_format_quirks(prw_tree):
    """The mini tree holds what the rules above must handle (else the tests prove nothing)."""
    root, gt = prw_tree
    boxes = [box for image in gt.images.values() for _, box in image["persons"]]
    assert any(box[0] < 0 for box in boxes)  # a person leaving the frame: shifted, not cropped
    assert any(b != int(b) for box in boxes for b in box)  # fractional coordinates
    variables = {image["variable"] for image in gt.images.values()}
    assert variables == {"box_new", "anno_file", "anno_previous"}
    assert len({image["cam"] for image in gt.images.values()}) == 3
    assert any(box[0] < 0 or box[1] < 0 for _, _, box in gt.queries)


def test_queries(prw_tree):
    root, gt = prw_tree
    queries = load_prw(root, "query")
    expected = [
        (pid, name, int(name[1]), _query_box(*box)) for pid, name, box in gt.queries
    ]
    assert [(q["pid"], q["image_id"], q["cam_id"], q["bbox"]) for q in queries] == expected
    # One query per identity per camera it appears in, and every query has another frame of it.
    for pid, name, _ in gt.queries:
        shown = {n for n, image in gt.images.items() if image["split"] == "test"
                 for p, _ in image["persons"] if p == pid}
        assert len(shown - {name}) >= 1
    assert len({(pid, name[:2]) for pid, name, _ in gt.queries}) == len(gt.queries)


def test_query_info_has_crlf_endings(prw_tree):
    root, gt = prw_tree
    with open(os.path.join(root, "query_info.txt"), "rb") as f:
        raw = f.read()
    lines = raw.split(b"\r\n")
    assert lines[-1] == b"" and len(lines) - 1 == len(gt.queries)
    assert b"\n" not in b"".join(lines)
    # The reference drops the last two characters of the frame field: it must stay correct.
    assert [line.decode().split(" ")[5] for line in raw.splitlines(keepends=True)] == [
        name[:-4] + "\r\n" for _, name, _ in gt.queries
    ]
