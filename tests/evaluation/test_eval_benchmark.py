"""tools/benchmark.py eval runs end to end on small generated inputs (speed is never asserted)."""

import json

import numpy as np
import pytest
from eval_naive import naive_search_cuhk
from tools_loader import load_tool

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
