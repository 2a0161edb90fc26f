"""tools/demo.py and SearchPredictor on generated images with a tiny untrained PSDiff.

The ranking is checked against an independent path to the same numbers: the test-time
DatasetMapper reading the files, a separately loaded model, `model(...)` one image at a time
and `model.embed_queries`, with similarities as plain dot products. An untrained model ranks
arbitrarily, so no test asserts which detection wins.
"""

import json
import logging
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from tiny_config import tiny_cfg
from tools_loader import load_tool

from psdiff.data import DatasetMapper
from psdiff.engine import Checkpointer
from psdiff.engine.predictor import SearchPredictor, list_gallery
from psdiff.evaluation.visualize import (
    ORANGE,
    draw_detections,
    draw_search_result,
    similarity_color,
)
from psdiff.modeling import build_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "tools", "demo.py")


demo = load_tool("demo")

QUERY_BOX = [20.0, 30.0, 60.0, 110.0]
GALLERY_SHAPES = {"a.png": (96, 128), "b.png": (192, 256), "c.jpg": (96, 128)}  # (h, w)
TILE = 341  # width of each summary tile: every image here is 3:4, scaled to height 256


def _scene(path, height, width, seed):
    """Dark noise with three colored rectangles ("persons"), written to `path`."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
    for _ in range(3):
        x1, y1 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height // 2))
        image[y1: y1 + height // 2, x1: x1 + width // 6] = rng.integers(60, 255, 3)
    assert cv2.imwrite(str(path), image)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A saved tiny model (config.yaml + model_final.pth), a query image and a gallery folder."""
    root = tmp_path_factory.mktemp("demo")
    cfg = tiny_cfg("INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "256",
                   "TEST.IMS_PER_BATCH", "2")
    torch.manual_seed(0)
    Checkpointer(build_model(cfg), str(root), save_to_disk=True).save("model_final")
    (root / "config.yaml").write_text(cfg.dump())
    gallery = root / "gallery"
    gallery.mkdir()
    for seed, (name, (height, width)) in enumerate(GALLERY_SHAPES.items()):
        _scene(gallery / name, height, width, seed)
    (gallery / "notes.txt").write_text("not an image")
    _scene(root / "query.png", 120, 160, 9)
    cfg.MODEL.WEIGHTS = str(root / "model_final.pth")
    return {"root": root, "cfg": cfg, "gallery": gallery, "query": str(root / "query.png")}


def _argv(run, *extra, gallery=None, query=None, box=QUERY_BOX):
    return ["--config-file", str(run["root"] / "config.yaml"),
            "--query-image", query or run["query"],
            "--query-box", *[str(v) for v in box],
            "--gallery", str(gallery or run["gallery"]),
            *extra, "MODEL.WEIGHTS", str(run["root"] / "model_final.pth")]


def _independent_detections(run, cws=False):
    """Every gallery detection as (similarity, file, box, score), best first, computed
    without the predictor: mapper -> separately loaded model -> dot products."""
    cfg = run["cfg"]
    model = build_model(cfg).eval()
    Checkpointer(model).load(cfg.MODEL.WEIGHTS)
    mapper = DatasetMapper.from_config(cfg, is_train=False)

    def model_input(path):
        height, width = cv2.imread(path).shape[:2]
        return mapper({"file_name": path, "image_id": os.path.basename(path), "height": height,
                       "width": width})

    query = model.embed_queries([model_input(run["query"])], [torch.tensor([QUERY_BOX])])[0][0]
    rows = []
    for name in sorted(GALLERY_SHAPES):
        path = str(run["gallery"] / name)
        with torch.no_grad():
            out = model([model_input(path)])[0]
        for box, score, emb in zip(out["boxes"], out["scores"], out["embeddings"]):
            sim = float(emb @ query) * (float(score) if cws else 1.0)
            rows.append((sim, path, box.tolist(), float(score)))
    return sorted(rows, key=lambda r: -r[0])


def _assert_same_ranking(hits, expected):
    """`hits` are the top len(hits) of `expected` up to the order of near-ties: the same
    similarities in order, and each hit is a distinct independent detection with its
    similarity and score."""
    np.testing.assert_allclose([h["similarity"] for h in hits],
                               [r[0] for r in expected[: len(hits)]], atol=1e-4)
    matched = set()
    for hit in hits:
        (index,) = [i for i, r in enumerate(expected)
                    if r[1] == hit["file_name"] and np.allclose(r[2], hit["box"], atol=1e-3)]
        np.testing.assert_allclose(hit["similarity"], expected[index][0], atol=1e-4)
        np.testing.assert_allclose(hit["score"], expected[index][3], atol=1e-5)
        matched.add(index)
    assert len(matched) == len(hits)


def test_demo_ranks_every_detection_and_writes_pictures(run, tmp_path, capsys):
    out = tmp_path / "out"
    assert demo.main(_argv(run, "--top-k", "1000", "--output-dir", str(out))
                     + ["TEST.DET_THRESH_SEARCH", "0"]) == 0
    expected = _independent_detections(run)
    ranking = json.loads((out / "ranking.json").read_text())
    hits = ranking["hits"]
    assert len(hits) == len(expected) > 3  # top-k above the total: every detection is listed
    assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    sims = [h["similarity"] for h in hits]
    assert sims == sorted(sims, reverse=True)
    _assert_same_ranking(hits, expected)
    assert ranking["query"] == {"file_name": run["query"], "box": QUERY_BOX}

    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["rank", "similarity", "score"]
    assert table[1].split()[0] == "1" and table[1].split()[-1] == hits[0]["file_name"]
    assert len(table) == len(hits) + 2  # header, one row per hit, summary line

    summary = cv2.imread(str(out / "summary.jpg"))
    assert summary.shape == (256, TILE * (1 + len(hits)) + 6 * len(hits), 3)
    pictures = sorted(os.listdir(out / "detections"))
    assert pictures == ["0_a.jpg", "1_b.jpg", "2_c.jpg"]
    for picture, (height, width) in zip(pictures, GALLERY_SHAPES.values()):
        assert cv2.imread(str(out / "detections" / picture)).shape == (height, width, 3)


def test_demo_top_k_and_cws_match_the_independent_ranking(run, tmp_path):
    out = tmp_path / "out"
    assert demo.main(_argv(run, "--top-k", "3", "--output-dir", str(out))
                     + ["TEST.DET_THRESH_SEARCH", "0", "TEST.CWS", "True"]) == 0
    ranking = json.loads((out / "ranking.json").read_text())
    assert ranking["cws"] is True
    _assert_same_ranking(ranking["hits"], _independent_detections(run, cws=True)[:3])
    assert cv2.imread(str(out / "summary.jpg")).shape == (256, TILE * 4 + 6 * 3, 3)


def test_demo_takes_cws_and_threshold_from_the_config(run, tmp_path):
    assert not {"cws", "det_thresh"} & set(vars(demo.parse_args(_argv(run))))  # no flags
    out = tmp_path / "out"
    argv = _argv(run, "--top-k", "2", "--output-dir", str(out)) + [
        "TEST.CWS", "True", "TEST.DET_THRESH_SEARCH", "1.01"]
    assert demo.main(argv) == 0
    ranking = json.loads((out / "ranking.json").read_text())
    assert ranking["cws"] is True and ranking["det_thresh"] == 1.01 and ranking["hits"] == []


def test_predictor_search_agrees_with_its_own_detect_and_embed_query(run):
    predictor = SearchPredictor(run["cfg"])
    query = cv2.imread(run["query"])
    paths = list_gallery(str(run["gallery"] / "*.png"))
    assert [os.path.basename(p) for p in paths] == ["a.png", "b.png"]
    result = predictor.search(query, QUERY_BOX, paths, top_k=4, det_thresh=0.0, cws=False)
    query_emb = predictor.embed_query(query, QUERY_BOX)
    np.testing.assert_allclose(np.linalg.norm(query_emb), 1.0, atol=1e-5)
    for hit in result.hits:
        path = hit["file_name"]
        found = predictor.detect(cv2.imread(path), os.path.basename(path))
        j = hit["detection_index"]
        np.testing.assert_allclose(hit["box"], found["boxes"][j], atol=1e-3)
        np.testing.assert_allclose(hit["similarity"], found["embeddings"][j] @ query_emb,
                                   atol=1e-4)
    # a threshold above every score ranks nothing; the detections are still reported
    empty = predictor.search(query, QUERY_BOX, paths, top_k=4, det_thresh=1.01)
    assert empty.hits == [] and sum(len(i["boxes"]) for i in empty.images) > 0


def test_summary_marks_hits_without_ground_truth_orange(tmp_path):
    path = str(tmp_path / "p.png")
    cv2.imwrite(path, np.zeros((64, 48, 3), np.uint8))
    hit = {"image_id": path, "box": [8, 8, 40, 56], "similarity": 0.5, "score": 0.9,
           "correct": None}
    picture = draw_search_result({"file_name": path, "bbox": [0, 0, 10, 10]}, [hit],
                                 [{"image_id": path, "file_name": path}], height=64)
    assert picture.shape == (64, 48 + 6 + 48, 3)  # scale 1: the hit tile starts at x = 54
    assert tuple(picture[50, 54 + 8]) == ORANGE  # left edge, below the text lines


def test_draw_detections_colors_and_order():
    image = np.zeros((40, 60, 3), np.uint8)
    low, high = similarity_color(0.1), similarity_color(0.9)
    assert low[0] > low[2] and high[2] > high[0]  # JET: blue for low, red for high
    assert similarity_color(-3) == similarity_color(0)
    assert similarity_color(5) == similarity_color(1)
    drawn = draw_detections(image, [[10, 15, 30, 35], [10, 15, 50, 35]], [low, high], ["", ""])
    assert tuple(drawn[25, 10]) == high  # the shared left edge: the later box lies on top
    assert tuple(drawn[25, 30]) == low and tuple(drawn[25, 50]) == high  # right edges
    assert tuple(drawn[25, 40]) == (0, 0, 0) and image.max() == 0  # the input is not changed


def _error(capsys, argv):
    assert demo.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_bad_input_is_one_error_line(run, tmp_path, capsys):
    missing = str(tmp_path / "nope.jpg")
    assert missing in _error(capsys, _argv(run, query=missing))
    err = _error(capsys, _argv(run, box=[20, 30, 500, 110]))
    assert "500.0" in err and "160x120" in err
    assert "[60.0, 30.0, 20.0, 110.0]" in _error(capsys, _argv(run, box=[60, 30, 20, 110]))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"gallery {empty} has no image files" in _error(capsys, _argv(run, gallery=empty))
    pattern = str(run["gallery"] / "*.gif")
    assert f"gallery {pattern} has no image files" in _error(capsys, _argv(run, gallery=pattern))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "y.png").write_bytes(b"")
    (broken / "z.jpg").write_bytes(b"not a jpeg")
    assert _error(capsys, _argv(run, "--output-dir", str(tmp_path / "out"), gallery=broken)) == (
        f"error: none of the 2 gallery images is readable, e.g. {broken / 'y.png'}\n")
    assert "top-k" in _error(capsys, _argv(run, "--top-k", "0"))


def test_unreadable_gallery_images_are_skipped_and_counted(run, tmp_path, capsys, caplog):
    gallery = tmp_path / "gallery"
    shutil.copytree(run["gallery"], gallery)
    (gallery / "0_broken.jpg").write_bytes(b"not a jpeg")  # first: reading goes on after it
    (gallery / "bb_half.png").write_bytes(open(gallery / "b.png", "rb").read()[:40])
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert demo.main(_argv(run, "--top-k", "1000", "--output-dir", str(out),
                               gallery=gallery) + ["TEST.DET_THRESH_SEARCH", "0"]) == 0
    for name in ("0_broken.jpg", "bb_half.png"):
        assert f"skipped gallery image: cannot read image {gallery / name}" in caplog.text
    summary = capsys.readouterr().out.splitlines()[-1]
    assert summary.endswith(f"detections in 3 images (2 unreadable, skipped); results in {out}")
    # the readable images give exactly the ranking of a gallery without the broken files
    hits = json.loads((out / "ranking.json").read_text())["hits"]
    expected = _independent_detections(run)
    np.testing.assert_allclose([h["similarity"] for h in hits], [r[0] for r in expected],
                               atol=1e-4)
    assert {os.path.basename(h["file_name"]) for h in hits} <= set(GALLERY_SHAPES)
    assert sorted(os.listdir(out / "detections")) == ["0_a.jpg", "1_b.jpg", "2_c.jpg"]


def test_empty_weights_from_the_command_line(run):
    argv = _argv(run)[:-2] + ["MODEL.WEIGHTS", ""]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, DEMO, *argv], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: MODEL.WEIGHTS is empty")
    assert result.stderr.count("\n") == 1
