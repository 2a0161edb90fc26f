"""Figures (Fig. 4, Fig. 6), their Markdown tables, and the search-result picture."""

import json

import cv2
import numpy as np
from test_eval_hand_cases import DETS, GALLERY, cuhk_query, make_rows
from tools_loader import load_tool

from psdiff.evaluation.plots import plot_gallery_size, plot_sampling_steps
from psdiff.evaluation.predictions import Predictions
from psdiff.evaluation.visualize import GREEN, RED, draw_search_result, top_hits

plot_results = load_tool("plot_results")


def test_gallery_size_figure_and_table(tmp_path):
    runs = {"A": {"search@50/mAP": 0.9, "search@100/mAP": 0.85, "search@4000/mAP": 0.7},
            "B": {"search@50/mAP": 0.8, "search@100/mAP": 0.75, "search/mAP": 0.75}}
    figure = tmp_path / "fig4.png"
    table = plot_gallery_size(runs, str(figure))
    assert table.splitlines() == ["| run | 50 | 100 | 4000 |", "|---|---|---|---|",
                                  "| A | 90.0 | 85.0 | 70.0 |", "| B | 80.0 | 75.0 | - |"]
    assert figure.with_suffix(".md").read_text() == table  # the table beside the figure
    assert cv2.imread(str(figure)).shape[2] == 3


def test_steps_tool_reads_steps_from_the_evaluator_files(tmp_path, capsys):
    paths = []
    for steps, value in ((4, 0.5), (1, 0.25)):  # given out of order: the table sorts them
        path = tmp_path / f"s{steps}.json"
        path.write_text(json.dumps({"metrics": {"search/mAP": value, "search/top1": value,
                                                "det/AP": value / 2}, "meta": {"steps": steps}}))
        paths.append(str(path))
    out = str(tmp_path / "fig6.png")
    assert plot_results.main(["steps", "--run", *paths, "--out", out]) == 0
    assert capsys.readouterr().out.splitlines()[:4] == [
        "| steps | detection AP@0.5 | search mAP | search top-1 |", "|---|---|---|---|",
        "| 1 | 12.5 | 25.0 | 25.0 |", "| 4 | 25.0 | 50.0 | 50.0 |"]
    assert cv2.imread(out) is not None
    # the same from flat files needs --steps; without, one error line
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"search/mAP": 0.1, "search/top1": 0.2, "det/AP": 0.3}))
    assert plot_results.main(["steps", "--run", str(flat), "--out", out]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    table = plot_sampling_steps({"": {8: [json.loads(flat.read_text())]}}, out)
    assert table.splitlines()[2] == "| 8 | 30.0 | 10.0 | 20.0 |"


def test_steps_figure_draws_settings_and_seeds(tmp_path, capsys):
    """Files of one setting and step count are its seeds: the table gives their mean and
    range; several settings add a setting column."""
    paths = []
    for setting, steps, seed, value in (("A", 1, 0, 0.2), ("A", 1, 1, 0.4), ("A", 2, 0, 0.5),
                                        ("B", 2, 0, 0.1)):
        path = tmp_path / f"SAMPLE_STEPS={steps}" / f"{setting}{seed}.json"  # "=" in a path
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"det/AP": value, "det/recall": 1 - value,
                                    "search/mAP": value / 2, "search/top1": value}))
        paths.append(f"{setting}={path}")
    out = str(tmp_path / "fig6.png")
    assert plot_results.main(["steps", "--run", *paths, "--steps", "1", "1", "2", "2",
                              "--out", out]) == 0
    assert capsys.readouterr().out.splitlines()[:5] == [
        "| setting | steps | detection AP@0.5 | detection recall | search mAP | search top-1 |",
        "|---|---|---|---|---|---|",
        "| A | 1 | 30.0 (20.0-40.0) | 70.0 (60.0-80.0) | 15.0 (10.0-20.0) | 30.0 (20.0-40.0) |",
        "| A | 2 | 50.0 | 50.0 | 25.0 | 50.0 |",
        "| B | 2 | 10.0 | 90.0 | 5.0 | 10.0 |"]
    height, width = cv2.imread(out).shape[:2]
    assert width > 3 * height  # four panels side by side
    # an unlabelled file whose path holds "=" is read as a path: one setting, no setting column
    assert plot_results.main(["steps", "--run", *(p.partition("=")[2] for p in paths[:3]),
                              "--steps", "1", "1", "2", "--out", out]) == 0
    assert capsys.readouterr().out.splitlines()[2] == (
        "| 1 | 30.0 (20.0-40.0) | 70.0 (60.0-80.0) | 15.0 (10.0-20.0) | 30.0 (20.0-40.0) |")


def test_search_result_hits_and_picture(tmp_path):
    # the hand-worked query q1 of test_hand_cases: ranking d4 (B, positive), d2 (A), d3 (B),
    # d1 (A, positive), d5 (C).
    gallery = []
    for record in GALLERY:
        path = str(tmp_path / record["image_id"])
        cv2.imwrite(path, np.full((450, 450, 3), 128, np.uint8))
        gallery.append(dict(record, file_name=path))
    query = cuhk_query("q1.jpg", [0, 0, 5, 5], [("A.jpg", [0, 0, 10, 20]),
                                                ("B.jpg", [100, 100, 120, 140]), ("C.jpg", None)])
    query["file_name"] = str(tmp_path / "A.jpg")
    rows = make_rows()
    outputs = [{"boxes": rows.boxes[a:b], "scores": rows.scores[a:b],
                "embeddings": rows.embeddings[a:b]} for a, b in zip(rows.offsets, rows.offsets[1:])]
    predictions = Predictions.from_outputs(["A.jpg", "B.jpg", "C.jpg"], outputs, ["q1.jpg"],
                                           [[0, 0, 5, 5]], [[1, 0]])
    hits = top_hits(predictions, "cuhk_sysu", gallery, [query], 0, k=4)
    assert [(h["image_id"], h["correct"]) for h in hits] == [
        ("B.jpg", True), ("A.jpg", False), ("B.jpg", False), ("A.jpg", True)]
    assert [round(h["similarity"], 6) for h in hits] == [0.9, 0.8, 0.7, 0.6]
    assert hits[0]["box"] == DETS[3][1] and hits[0]["score"] == np.float32(0.7)

    picture = draw_search_result(query, hits[:2], gallery, height=450)  # scale 1: boxes as is
    tile, gap = 450, 6
    assert picture.shape == (450, 3 * tile + 2 * gap, 3)
    x1, y1, x2, y2 = DETS[3][1]  # hit 1 (correct): green box on the second tile
    assert tuple(picture[y1 + 10, tile + gap + x1]) == GREEN
    x1, y1, x2, y2 = DETS[1][1]  # hit 2 (wrong): red box on the third tile
    assert tuple(picture[y1 + 5, 2 * (tile + gap) + x1]) == RED
