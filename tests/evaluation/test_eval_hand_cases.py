"""Metrics on a 3-image gallery worked out by hand, and the edge cases of the protocol."""

import numpy as np
import pytest

from psdiff.evaluation.detection import eval_detection
from psdiff.evaluation.metrics import compute_metrics
from psdiff.evaluation.predictions import GalleryRows, Predictions
from psdiff.evaluation.ranking import average_precision
from psdiff.evaluation.search import eval_search

NAN4 = [np.nan] * 4

# Gallery A, B, C. Ground truth: A holds pid 1 at [0,0,10,20] and pid 2 at [50,50,60,70];
# B holds pid 1 at [100,100,120,140] and an unlabeled person; C holds pid 2 at [200,200,230,260].
GALLERY = [
    {"image_id": "A.jpg", "cam_id": 1, "annotations": [
        {"bbox": [0, 0, 10, 20], "pid": 1}, {"bbox": [50, 50, 60, 70], "pid": 2}]},
    {"image_id": "B.jpg", "cam_id": 2, "annotations": [
        {"bbox": [100, 100, 120, 140], "pid": 1}, {"bbox": [300, 300, 320, 340], "pid": -1}]},
    {"image_id": "C.jpg", "cam_id": 1, "annotations": [{"bbox": [200, 200, 230, 260], "pid": 2}]},
]
# Detections d1..d5 (image, box, score, 2-d embedding).
DETS = [
    ("A", [0, 0, 10, 20], 0.9, [0.6, 0.8]),  # d1 on pid 1
    ("A", [50, 50, 60, 70], 0.6, [0.8, 0.6]),  # d2 on pid 2
    ("B", [100, 100, 120, 140], 0.8, [0.7, 1.0]),  # d3 on pid 1
    ("B", [100, 100, 120, 120], 0.7, [0.9, 0.4]),  # d4: upper half of pid 1, IoU 0.5
    ("C", [400, 400, 410, 420], 0.55, [0.5, 0.85]),  # d5 on nobody
]


def make_rows(dets=DETS, images="ABC"):
    """GalleryRows of `dets` for images in `images` order."""
    offsets = np.cumsum([0] + [sum(d[0] == im for d in dets) for im in images])
    return GalleryRows(
        offsets=offsets.astype(np.int64),
        boxes=np.asarray([d[1] for d in dets], np.float32).reshape(-1, 4),
        scores=np.asarray([d[2] for d in dets], np.float32),
        embeddings=np.asarray([d[3] for d in dets], np.float32).reshape(-1, 2),
    )


def cuhk_query(image_id, bbox, gallery):
    """A CUHK-style query whose gallery is [(image, gt box or None)]."""
    return {"image_id": image_id, "bbox": bbox, "pid": 0,
            "gallery_ids": [g for g, _ in gallery],
            "gallery_boxes": np.asarray([b if b is not None else NAN4 for _, b in gallery],
                                        np.float32)}


def test_detection_by_hand():
    rows = make_rows()
    # A: d1, d2 match their people. B: d3 matches pid 1; d4's best gt is pid 1 but pid 1's best
    # det is d3, so d4 is a false positive; the unlabeled person is missed. C: d5 is a false
    # positive. TP 3 of 5 GT -> recall 0.6. By score: d1 T, d3 T, d4 F, d2 T, d5 F: precision
    # at the positives 1, 1, 3/4 -> AP 0.91667, x recall 0.6 = 0.55.
    result = eval_detection(GALLERY, rows, det_thresh=0.01)
    assert result["recall"] == pytest.approx(0.6)
    assert result["AP"] == pytest.approx((1 + 1 + 0.75) / 3 * 0.6)
    # labeled only: 4 GT, 3 TP -> recall 0.75, AP 0.91667 x 0.75.
    labeled = eval_detection(GALLERY, rows, det_thresh=0.01, labeled_only=True)
    assert labeled["recall"] == pytest.approx(0.75)
    assert labeled["AP"] == pytest.approx((1 + 1 + 0.75) / 3 * 0.75)
    # det_thresh 0.65 keeps d1, d3, d4: TP d1, d3 of 5 GT (C has no det left, its GT still
    # counts) -> recall 0.4; precision at positives 1, 1 -> AP 1 x 0.4.
    high = eval_detection(GALLERY, rows, det_thresh=0.65)
    assert (high["recall"], high["AP"]) == (pytest.approx(0.4), pytest.approx(0.4))
    # all detections under the threshold: nothing found, AP 0, no crash.
    assert eval_detection(GALLERY, rows, det_thresh=0.95) == {
        "AP": 0.0, "recall": 0.0, "num_gt": 5, "num_tp": 0}


def test_search_by_hand():
    rows = make_rows()
    queries = [
        # q1 = [1, 0], pid 1 in A and B. Sims: d1 .6, d2 .8, d3 .7, d4 .9, d5 .5. In B, d4 (sim
        # .9) passes IoU 0.5 >= min(0.5, 800/1500) and beats d3: d4 is B's positive, d3 a
        # negative. Ranking d4 P, d2 N, d3 N, d1 P, d5 N: AP = (1/1 + 2/4) / 2 = 0.75; top1 hit.
        cuhk_query("q1.jpg", [0, 0, 5, 5], [("A.jpg", [0, 0, 10, 20]),
                                            ("B.jpg", [100, 100, 120, 140]), ("C.jpg", None)]),
        # q2 = [0, 1], pid 2 in A (found by d2) and C (missed: d5 is elsewhere). Sims: d1 .8,
        # d2 .6, d3 1.0, d4 .4, d5 .85. Ranking d3, d5, d1, d2 P, d4: precision 1/4 at the one
        # positive, recall 1/2 -> AP 0.125; rank 4 -> top1 miss, top5 and top10 hits.
        cuhk_query("q2.jpg", [0, 0, 5, 5], [("A.jpg", [50, 50, 60, 70]), ("B.jpg", None),
                                            ("C.jpg", [200, 200, 230, 260])]),
        # q3: the person is absent from the gallery: AP 0, no hit, counted.
        cuhk_query("q3.jpg", [0, 0, 5, 5], [("A.jpg", None), ("B.jpg", None)]),
    ]
    query_embeddings = np.asarray([[1, 0], [0, 1], [1, 1]], np.float32)
    result = eval_search(rows, query_embeddings, "cuhk_sysu", GALLERY, queries)
    np.testing.assert_allclose(result.ap, [0.75, 0.125, 0.0])
    np.testing.assert_array_equal(result.hits, [[1, 1, 1], [0, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(result.count_gt, [2, 2, 0])
    summary = result.summary("search")
    assert summary["search/mAP"] == pytest.approx(0.875 / 3)
    assert summary["search/top1"] == pytest.approx(1 / 3)
    assert summary["search/queries_without_gt"] == 1


def test_search_duplicates_and_images_without_detections():
    # q1 again, but B is listed twice (ranked once, counted twice in count_gt) and C has no
    # detection at all. Rows: d1 .6 P, d2 .8 N, d4 .9 P, d3 .7 N -> found 2 of 3 listed GT:
    # precision 1/1 and 2/4 -> AP (1 + 0.5) / 3 = 0.5.
    rows = make_rows(DETS[:4])
    query = cuhk_query("q1.jpg", [0, 0, 5, 5], [
        ("A.jpg", [0, 0, 10, 20]), ("B.jpg", [100, 100, 120, 140]),
        ("B.jpg", [100, 100, 120, 140]), ("C.jpg", None)])
    result = eval_search(rows, np.asarray([[1, 0]], np.float32), "cuhk_sysu", GALLERY, [query])
    assert result.ap[0] == pytest.approx(0.5)
    assert result.count_gt[0] == 3 and result.count_tp[0] == 2


def test_query_image_is_never_in_its_own_gallery():
    # a list that names the query image A: A is dropped, entry and ground truth alike. Left:
    # B (d3 .7, d4 .9 positive) and C (d5 .5) -> AP 1 with count_gt 1.
    query = cuhk_query("A.jpg", [0, 0, 10, 20], [("A.jpg", [0, 0, 10, 20]),
                                                 ("B.jpg", [100, 100, 120, 140]), ("C.jpg", None)])
    result = eval_search(make_rows(), np.asarray([[1, 0]], np.float32), "cuhk_sysu", GALLERY,
                         [query])
    assert result.ap[0] == 1.0 and result.count_gt[0] == 1


def test_ties():
    # AP groups tied scores into one threshold: [.5 T, .5 F, .4 T] -> at .5: P 1/2, R 1/2; at
    # .4: P 2/3, R 1 -> AP 0.25 + 1/3, whatever the order of the tie.
    expected = 0.5 * 0.5 + 0.5 * 2 / 3
    for y_true in ([1, 0, 1], [0, 1, 1]):
        score = np.asarray([0.5, 0.5, 0.4], np.float32)
        assert average_precision(y_true, score) == pytest.approx(expected)
    # top-k under a tie: ranks follow gallery order. A negative tied with the positive and
    # listed before it takes rank 1; listed after it, the positive keeps rank 1.
    dets = [("A", [0, 0, 10, 10], 0.9, [1.0, 0.0]), ("B", [0, 0, 10, 20], 0.9, [1.0, 0.0])]
    rows = make_rows(dets, images="AB")
    query_embeddings = np.asarray([[1, 0], [1, 0]], np.float32)
    negative_first = cuhk_query("q.jpg", [0, 0, 1, 1], [("A.jpg", None),
                                                        ("B.jpg", [0, 0, 10, 20])])
    positive_first = cuhk_query("q.jpg", [0, 0, 1, 1], [("B.jpg", [0, 0, 10, 20]),
                                                        ("A.jpg", None)])
    result = eval_search(rows, query_embeddings, "cuhk_sysu", GALLERY[:2],
                         [negative_first, positive_first])
    np.testing.assert_array_equal(result.hits[:, 0], [False, True])
    np.testing.assert_allclose(result.ap, [0.5, 0.5])  # one threshold holding 1 P of 2 rows


def test_float32_threshold():
    # a float32 score of 0.7 is below 0.7 in float64 but passes `>= 0.7` in float32 (protocol §3.6).
    dets = [("A", [0, 0, 10, 20], 0.7, [1.0, 0.0])]
    rows = make_rows(dets, images="A")
    gallery = [{"image_id": "A.jpg", "annotations": [{"bbox": [0, 0, 10, 20], "pid": 1}]}]
    assert eval_detection(gallery, rows, det_thresh=0.7)["recall"] == 1.0


def test_prw_camera_rule():
    rows = make_rows()
    q = np.asarray([[1, 0]], np.float32)  # sims: d1 .6, d2 .8, d3 .7, d4 .9, d5 .5
    # pid 1 queried from A (camera 1): A is the query frame, so its pid-1 box is no positive.
    # Gallery B, C: d4 .9 P (B's positive, as in the CUHK case), d3 .7, d5 .5 -> AP 1.
    query = {"image_id": "A.jpg", "bbox": [0, 0, 10, 20], "pid": 1, "cam_id": 1}
    result = eval_search(rows, q, "prw", GALLERY, [query], ignore_cam_id=True)
    assert result.ap[0] == pytest.approx(1.0) and result.count_gt[0] == 1
    # pid 2 queried from C (camera 1). ignore_cam_id: gallery A, B; A's positive is d2 (.8),
    # ranked after d4 (.9) -> AP 1/2, top1 miss, top5 hit. Cross-camera: the gallery is B alone
    # (A shares camera 1), which lacks pid 2 -> AP 0 and the query is counted, no crash.
    query = {"image_id": "C.jpg", "bbox": [200, 200, 230, 260], "pid": 2, "cam_id": 1}
    result = eval_search(rows, q, "prw", GALLERY, [query], ignore_cam_id=True)
    assert result.ap[0] == pytest.approx(0.5)
    np.testing.assert_array_equal(result.hits[0], [False, True, True])
    result = eval_search(rows, q, "prw", GALLERY, [query], ignore_cam_id=False)
    assert result.ap[0] == 0.0 and result.count_gt[0] == 0
    # pid 2 queried from B (camera 2), cross-camera: gallery A, C (both camera 1). Positives A
    # (d2 .8, found) and C (missed): d2 .8 P, d1 .6, d5 .5 -> precision 1, recall 1/2 -> AP 0.5.
    query = {"image_id": "B.jpg", "bbox": [0, 0, 1, 1], "pid": 2, "cam_id": 2}
    result = eval_search(rows, q, "prw", GALLERY, [query], ignore_cam_id=False)
    assert result.ap[0] == pytest.approx(0.5) and result.count_gt[0] == 2


def test_compute_metrics_flat_dict_and_reordered_file():
    rows = make_rows()
    queries = [cuhk_query("q1.jpg", [0, 0, 5, 5], [("A.jpg", [0, 0, 10, 20]),
                                                   ("B.jpg", [100, 100, 120, 140]),
                                                   ("C.jpg", None)])]
    outputs = [{"boxes": rows.boxes[a:b], "scores": rows.scores[a:b],
                "embeddings": rows.embeddings[a:b]} for a, b in zip(rows.offsets, rows.offsets[1:])]
    # the file lists the gallery as C, A, B: metrics must not depend on the file's order
    predictions = Predictions.from_outputs(["C.jpg", "A.jpg", "B.jpg"],
                                           [outputs[2], outputs[0], outputs[1]], ["q1.jpg"],
                                           [[0, 0, 5, 5]], [[1, 0]])
    metrics = compute_metrics(predictions, "cuhk_sysu", GALLERY, queries, gallery_sizes=(100,),
                              gallery_size=100, det_thresh_search=0.5)
    assert metrics["search/mAP"] == pytest.approx(0.75) == metrics["search@100/mAP"]
    assert metrics["det/AP"] == pytest.approx(0.55)
    assert metrics["det_labeled/recall"] == pytest.approx(0.75)
    # CWS: sim x score. d1 .54, d2 .48, d3 .56, d4 .63, d5 .275: d4 P, d3, d1 P, ... -> AP
    # (1/1 + 2/3) / 2.
    cws = compute_metrics(predictions, "cuhk_sysu", GALLERY, queries, gallery_size=100, cws=True)
    assert cws["search/mAP"] == pytest.approx((1 + 2 / 3) / 2)
