"""tools/benchmark.py eval and inference run end to end on small generated inputs (speed is
never asserted)."""

import json

import numpy as np
import pytest
from eval_naive import naive_search_cuhk
from tiny_config import TINY_OVERRIDES
from tools_loader import load_tool

from psdiff.data import get_search_split
from psdiff.data.synthetic import write_cuhk_sysu

benchmark = load_tool("benchmark")


def test_eval_benchmark_small_agrees_with_naive(capsys):
    """The printed mAP is the naive protocol's on the same generated inputs (same seed)."""
    assert benchmark.main(["eval", "--images", "40", "--queries", "12", "--gallery-size", "6",
                           "--dets", "20", "--dim", "8", "--seed", "4"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["benchmark"] == "eval" and result["queries"] == 12

    gallery, queries, predictions = benchmark.generate_cuhk_like(40, 12, 6, 20, 8, seed=4)
    rows = predictions.gallery
    cuts = rows.offsets[1:-1]
    dets = np.split(np.concatenate([rows.boxes, rows.scores[:, None]], axis=1), cuts)
    feats = np.split(rows.embeddings, cuts)
    names = [record["image_id"] for record in gallery]
    mean_ap, _ = naive_search_cuhk(names, dets, feats, queries, predictions.query_embeddings,
                                   det_thresh=0.5)
    assert 0 < mean_ap < 1
    assert result["search/mAP"] == pytest.approx(mean_ap, abs=1e-9)


def test_generated_queries_follow_the_protocol_shape():
    gallery, queries, predictions = benchmark.generate_cuhk_like(30, 5, -1, 4, 8, seed=3)
    for query in queries:
        # whole pool: every image but the query's, positives (finite boxes) first
        assert len(query["gallery_ids"]) == 29 and query["image_id"] not in query["gallery_ids"]
        found = ~np.isnan(query["gallery_boxes"]).any(axis=1)
        assert found[0] and not found[found.sum():].any()
    assert predictions.gallery_offsets[-1] == 30 * 4
    assert benchmark.main(["eval", "--images", "30", "--gallery-size", "30"]) == 2


def test_inference_times_the_evaluator_on_a_split_with_and_without_feature_reuse(tmp_path,
                                                                                  capsys):
    root = str(tmp_path / "datasets")
    write_cuhk_sysu(f"{root}/synthetic/CUHK-SYSU", num_train_images=4, num_test_images=10,
                    num_train_ids=2, num_test_ids=4, image_size=(48, 64), gallery_sizes=(6,),
                    seed=1)
    record = tmp_path / "record.txt"
    keys = ["MODEL.DEVICE", "cpu", *TINY_OVERRIDES, "DATASETS.ROOT", root,
            "DATALOADER.NUM_WORKERS", "0", "INPUT.MIN_SIZE_TEST", "48",
            "INPUT.MAX_SIZE_TEST", "80", "TEST.IMS_PER_BATCH", "2", "TEST.GALLERY_SIZE", "6"]
    assert benchmark.main(["inference", "--dataset", "synthetic_cuhk_sysu_test",
                           "--repeats", "2", "--record", str(record), *keys]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # every CUHK-SYSU query image is a gallery image: no query pass, so no query images/s
    assert result["images"] == {"gallery": 10, "query images": 0}
    assert list(result["images_per_s"]) == ["reused", "two-pass"]
    assert all(rate["gallery"] > 0 and rate["query images"] is None
               for rate in result["images_per_s"].values())
    split = get_search_split("synthetic_cuhk_sysu_test", root, 6)
    holding = len({q["image_id"] for q in split.queries})
    text = record.read_text()
    assert text.startswith("## inference: defaults, synthetic_cuhk_sysu_test, cpu")
    for expected in (f"10 gallery images ({holding} hold the {len(split.queries)} queries), "
                     "0 query images outside the gallery; batch 2", "median of 2 rounds",
                     "| reused | ", "| two-pass | "):
        assert expected in text

    # each path with each query mode, labelled by both
    assert benchmark.main(["inference", "--dataset", "synthetic_cuhk_sysu_test", "--paths",
                           "reused", "--query-modes", "denoise", "alone", "--record", "",
                           *keys]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(result["images_per_s"]) == ["reused, denoise", "reused, alone"]
    assert all(rate["gallery"] > 0 for rate in result["images_per_s"].values())

    assert benchmark.main(["inference", "--paths", "reused", "--record", "", *keys,
                           "DATASETS.TEST", "()"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: benchmark inference: give --dataset or a DATASETS.TEST name")


def test_throughput_rows_by_hand():
    rate = {"reused": {"gallery": 10.0, "query images": 4.0},
            "two-pass": {"gallery": 5.0, "query images": None}}
    seconds = {"reused": {"gallery": [1.0, 3.0, 2.0], "query images": [0.5, 0.5, 0.25]},
               "two-pass": {"gallery": [4.0], "query images": [0.0]}}
    assert benchmark.throughput_rows(rate, seconds) == [
        ["reused", "10.00", "4.00", "2.25 (1.50-3.50)"],  # medians of the per-round sums
        ["two-pass", "5.00", "-", "4.00 (4.00-4.00)"]]
