"""The teacher's metrics are the search protocol's, worked out by hand on cases where the old
retrieval rules (stable order on ties, queries without a positive skipped) gave other numbers."""

import numpy as np
import pytest

from psdiff.data import SearchSplit
from psdiff.evaluation import Predictions, compute_metrics
from psdiff.teacher import ground_truth_predictions, teacher_metrics

NAN4 = [np.nan] * 4
E0, E1 = [1.0, 0.0], [0.0, 1.0]


def _record(image_id, boxes, pids, cam_id=None):
    record = {"image_id": image_id, "file_name": image_id, "height": 100, "width": 100,
              "annotations": [{"bbox": box, "pid": pid} for box, pid in zip(boxes, pids)]}
    return record if cam_id is None else dict(record, cam_id=cam_id)


def _scored(split, query_embeddings, gallery_embeddings, **settings):
    """The teacher's metrics for hand-given embeddings (2-d) of the queries and gallery boxes."""
    gallery_embeddings = [np.asarray(e, np.float32).reshape(-1, 2) for e in gallery_embeddings]
    predictions = ground_truth_predictions(split, np.asarray(query_embeddings, np.float32),
                                           gallery_embeddings)
    return teacher_metrics(predictions, split, **settings)


# CUHK-style: q1 lists g0 (holding it at box A) and g1; q2 lists g1 and g2, none holding it.
A, B, C, D = [0, 0, 10, 20], [20, 0, 30, 20], [40, 0, 50, 20], [5, 5, 15, 25]
CUHK = SearchSplit("toy_cuhk_test", "cuhk_sysu", [
    _record("g0.jpg", [A, B], [-1, -1]), _record("g1.jpg", [C], [-1]),
    _record("g2.jpg", [D], [-1])], [
    {"image_id": "q1.jpg", "bbox": A, "pid": 1, "gallery_ids": ["g0.jpg", "g1.jpg"],
     "gallery_boxes": np.asarray([A, NAN4], np.float32)},
    {"image_id": "q2.jpg", "bbox": A, "pid": 2, "gallery_ids": ["g1.jpg", "g2.jpg"],
     "gallery_boxes": np.asarray([NAN4, NAN4], np.float32)}])
# A (the positive) and B tie at similarity 1 with q1; C scores 0; D is not in q1's gallery
CUHK_GALLERY = [[E0, E0], [E1], [E0]]


def test_cuhk_tied_positive_and_query_without_positive_by_hand():
    metrics = _scored(CUHK, [E0, E0], CUHK_GALLERY, gallery_size=2, ignore_cam_id=True)
    # q1: A and B form one threshold, 1 positive of 2 rows -> AP 0.5 (the old stable order put
    # A first: AP 1); its positive is the earliest of the tied best rows -> top-1 hit.
    # q2: no ground truth in its gallery -> AP 0, no hit (the old rule skipped it).
    assert metrics["teacher/mAP"] == pytest.approx((0.5 + 0.0) / 2)  # old rule: 1.0
    assert metrics["teacher/top1"] == pytest.approx(0.5)  # old rule: 1.0
    assert metrics["teacher/queries_without_gt"] == 1.0
    assert metrics["teacher/num_queries"] == 2.0


def test_the_teachers_metric_is_compute_metrics_on_the_same_embeddings():
    # the same gallery built by hand as a predictions file: ground-truth boxes scored 1
    outputs = [{"boxes": [A, B], "scores": [1.0, 1.0], "embeddings": [E0, E0]},
               {"boxes": [C], "scores": [1.0], "embeddings": [E1]},
               {"boxes": [D], "scores": [1.0], "embeddings": [E0]}]
    predictions = Predictions.from_outputs(["g0.jpg", "g1.jpg", "g2.jpg"], outputs,
                                           ["q1.jpg", "q2.jpg"], [A, A], [E0, E0])
    search = compute_metrics(predictions, "cuhk_sysu", CUHK.gallery, CUHK.queries,
                             gallery_size=2)
    teacher = _scored(CUHK, [E0, E0], CUHK_GALLERY, gallery_size=2, ignore_cam_id=True)
    for name in ("mAP", "top1", "top5", "top10", "queries_without_gt"):
        assert teacher[f"teacher/{name}"] == search[f"search/{name}"], name


# PRW-style: pid 4 is queried in f0 (camera 1) and also shows in f1 (camera 1) and f3
# (camera 2); pid 3 shows only in its query frame f2.
P4, P3, U = [0, 0, 10, 20], [30, 0, 40, 20], [60, 0, 70, 20]
PRW = SearchSplit("toy_prw_test", "prw", [
    _record("f0.jpg", [P4], [4], cam_id=1), _record("f1.jpg", [U, P4], [-1, 4], cam_id=1),
    _record("f2.jpg", [P3], [3], cam_id=2), _record("f3.jpg", [P4], [4], cam_id=2)], [
    {"image_id": "f0.jpg", "bbox": P4, "pid": 4, "cam_id": 1},
    {"image_id": "f2.jpg", "bbox": P3, "pid": 3, "cam_id": 2}])
# similarity to pid 4's query: f1 unlabeled 0.9, f1 pid 4 0.5, f2 pid 3 0.8, f3 pid 4 0.7
PRW_GALLERY = [[E0], [[0.9, 0.1], [0.5, 0.5]], [[0.8, 0.2]], [[0.7, 0.3]]]


@pytest.mark.parametrize("ignore_cam_id, query_ap", [
    (True, (1 / 3 + 2 / 4) / 2),  # f1, f2, f3: 0.9 -, 0.8 -, 0.7 +, 0.5 +; 2 frames hold pid 4
    (False, 1 / 2),  # other cameras only, f2 and f3: 0.8 -, 0.7 +; 1 frame holds pid 4
])
def test_prw_follows_the_camera_rule_and_scores_a_lonely_query_zero(ignore_cam_id, query_ap):
    metrics = _scored(PRW, [E0, E1], PRW_GALLERY, gallery_size=100,
                      ignore_cam_id=ignore_cam_id)
    # pid 3 has no other frame: AP 0 (the old rule skipped it and reported the first AP alone)
    assert metrics["teacher/mAP"] == pytest.approx((query_ap + 0.0) / 2)
    assert metrics["teacher/top1"] == 0.0
    assert metrics["teacher/queries_without_gt"] == 1.0
