"""Teacher retrieval metrics on hand-worked rankings (CUHK-style and PRW-style galleries)."""

import numpy as np

from psdiff.teacher.retrieval import average_precision, retrieval_metrics


def test_average_precision_by_hand():
    # ranking: pos, neg, pos, neg, pos -> precisions 1/1, 2/3, 3/5
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    positive = np.array([1, 0, 1, 0, 1], dtype=bool)
    assert np.isclose(average_precision(scores, positive), (1 + 2 / 3 + 3 / 5) / 3)
    assert average_precision(scores[::-1], positive) == average_precision(scores, positive)


def _dict(image_id, boxes, pids):
    return {"image_id": image_id, "file_name": image_id, "height": 100, "width": 100,
            "annotations": [{"bbox": b, "pid": p} for b, p in zip(boxes, pids)]}


def test_cuhk_gallery_uses_listed_images_and_gt_boxes():
    gallery = [_dict("g0", [[0, 0, 10, 20], [20, 0, 30, 20]], [-1, -1]),
               _dict("g1", [[0, 0, 10, 20]], [-1]),
               _dict("g2", [[5, 5, 15, 25]], [-1])]
    e = np.eye(3, dtype=np.float32)
    gallery_embs = [np.stack([e[1], e[0]]), e[2][None], e[0][None] * 0.5]
    query = {"image_id": "q", "pid": 1, "bbox": [0, 0, 1, 1], "gallery_ids": ["g0", "g1"],
             "gallery_boxes": np.array([[20, 0, 30, 20], [np.nan] * 4], dtype=np.float32)}
    # g2 is not in this query's gallery; scores: g0 box0 0, g0 box1 (positive) 1, g1 0 -> AP 1
    m = retrieval_metrics([e[0]], [query], gallery_embs, gallery)
    assert m["teacher/mAP"] == 1.0 and m["teacher/top1"] == 1.0
    query2 = dict(query, gallery_boxes=np.array([[0, 0, 10, 20], [np.nan] * 4], dtype=np.float32))
    m = retrieval_metrics([e[0]], [query2], gallery_embs, gallery)  # positive ranked 2nd of 3
    assert np.isclose(m["teacher/mAP"], 0.5) and m["teacher/top1"] == 0.0


def test_prw_gallery_is_every_other_image_by_pid():
    gallery = [_dict("f0", [[0, 0, 1, 1]], [4]), _dict("f1", [[0, 0, 1, 1], [1, 1, 2, 2]], [-1, 4]),
               _dict("f2", [[0, 0, 1, 1]], [3])]
    gallery_embs = [np.array([[1.0, 0]]), np.array([[0.9, 0.1], [0.5, 0.5]]),
                    np.array([[0.8, 0.2]])]
    query = {"image_id": "f0", "pid": 4, "bbox": [0, 0, 1, 1]}  # its own frame f0 is excluded
    m = retrieval_metrics([np.array([1.0, 0.0])], [query], gallery_embs, gallery)
    # ranking over f1, f2: 0.9 (neg), 0.8 (neg), 0.5 (pos) -> AP 1/3
    assert np.isclose(m["teacher/mAP"], 1 / 3) and m["teacher/top1"] == 0.0
    lonely = {"image_id": "f2", "pid": 3, "bbox": [0, 0, 1, 1]}  # no positive elsewhere: skipped
    m = retrieval_metrics([np.array([1.0, 0.0])] * 2, [query, lonely], gallery_embs, gallery)
    assert m["teacher/num_queries"] == 1.0
