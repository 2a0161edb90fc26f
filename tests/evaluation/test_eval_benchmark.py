"""tools/benchmark.py eval runs end to end on small generated inputs (speed is never asserted)."""

import json

import numpy as np
from eval_tools import load_tool

benchmark = load_tool("benchmark")


def test_eval_benchmark_small(capsys):
    assert benchmark.main(["eval", "--images", "40", "--queries", "12", "--gallery-size", "6",
                           "--dets", "20", "--dim", "8"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["benchmark"] == "eval" and result["queries"] == 12
    assert 0.0 <= result["search/mAP"] <= 1.0 and result["seconds"] >= 0.0


def test_generated_queries_follow_the_protocol_shape():
    gallery, queries, predictions = benchmark.generate_cuhk_like(30, 5, -1, 4, 8, seed=3)
    for query in queries:
        # whole pool: every image but the query's, positives (finite boxes) first
        assert len(query["gallery_ids"]) == 29 and query["image_id"] not in query["gallery_ids"]
        found = ~np.isnan(query["gallery_boxes"]).any(axis=1)
        assert found[0] and not found[found.sum():].any()
    assert predictions.gallery_offsets[-1] == 30 * 4
    assert benchmark.main(["eval", "--images", "30", "--gallery-size", "30"]) == 2
