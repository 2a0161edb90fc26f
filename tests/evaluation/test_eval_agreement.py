"""psdiff.evaluation against the naive reference (tests/evaluation/eval_naive.py) on random inputs.

The inputs are built to hit the protocol's corners: grid-valued float32 scores (ties, scores
exactly at the thresholds), quantized embeddings (tied similarities), duplicate detections on one
person, images without detections, images listed twice, queries with missed or absent persons.
"""

import numpy as np
import pytest
from eval_naive import naive_detection, naive_search_cuhk, naive_search_prw

from psdiff.evaluation.metrics import compute_metrics
from psdiff.evaluation.predictions import Predictions

SCORES = np.asarray([0.3, 0.45, 0.5, 0.55, 0.7, 0.7, 0.9, 1.0], np.float32)


def random_split(rng, num_images=14, num_pids=6, dim=4):
    """Gallery dicts and per-image detections (n,5 float32) and embeddings (n,D float32)."""
    gallery, dets, feats = [], [], []
    for i in range(num_images):
        annotations = []
        for _ in range(rng.integers(1, 5)):
            x, y = rng.integers(0, 200, size=2)
            w, h = rng.integers(4, 60, size=2)
            pid = int(rng.integers(1, num_pids + 1)) if rng.random() < 0.7 else -1
            annotations.append({"bbox": [float(x), float(y), float(x + w), float(y + h)],
                                "pid": pid})
        gallery.append({"image_id": f"s{i}.jpg", "cam_id": int(rng.integers(1, 4)),
                        "annotations": annotations})
        boxes = []
        if i % 7 != 3:  # images 3 and 10 have no detection at all
            for a in annotations:
                for _ in range(rng.integers(0, 3)):  # 0-2 detections per person
                    boxes.append(np.asarray(a["bbox"]) + rng.normal(0, 3, size=4))
            for _ in range(rng.integers(0, 3)):  # background detections
                x, y = rng.uniform(0, 200, size=2)
                boxes.append([x, y, x + rng.uniform(5, 50), y + rng.uniform(5, 50)])
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = rng.choice(SCORES, size=len(boxes))
        dets.append(np.concatenate([boxes, scores[:, None]], axis=1).astype(np.float32))
        feat = np.round(rng.normal(size=(len(boxes), dim)) * 2) / 2  # quantized: tied sims
        feats.append(feat.astype(np.float32))
    return gallery, dets, feats


def person_boxes(gallery, pid):
    """{image index: first box of pid} over the gallery."""
    found = {}
    for i, record in enumerate(gallery):
        for a in record["annotations"]:
            if a["pid"] == pid and i not in found:
                found[i] = a["bbox"]
    return found


def cuhk_queries(rng, gallery, num_negatives):
    """One query per pid seen twice: its first image is the query image; the gallery lists the
    pid's other images (positives first, one listed twice) then `num_negatives` negatives."""
    queries = []
    for pid in range(1, 7):
        found = person_boxes(gallery, pid)
        if len(found) < 2:
            continue
        query_image, *positives = sorted(found)
        negatives = [i for i in rng.permutation(len(gallery))
                     if i not in found][:num_negatives]
        listed = positives + positives[:1] + negatives
        queries.append({
            "image_id": gallery[query_image]["image_id"], "bbox": found[query_image], "pid": pid,
            "gallery_ids": [gallery[i]["image_id"] for i in listed],
            "gallery_boxes": np.asarray([found.get(i, [np.nan] * 4) for i in listed], np.float32),
        })
    return queries


def prw_queries(gallery):
    """One query per labeled pid, from the last frame holding it."""
    queries = []
    for pid in range(1, 7):
        found = person_boxes(gallery, pid)
        if found:
            frame = max(found)
            queries.append({"image_id": gallery[frame]["image_id"], "bbox": found[frame],
                            "pid": pid, "cam_id": gallery[frame]["cam_id"]})
    return queries


def predictions_of(gallery, dets, feats, queries, query_feats):
    """A Predictions object holding these detections and query embeddings."""
    outputs = [{"boxes": d[:, :4], "scores": d[:, 4], "embeddings": f} for d, f in zip(dets, feats)]
    return Predictions.from_outputs([r["image_id"] for r in gallery], outputs,
                                    [q["image_id"] for q in queries],
                                    [q["bbox"] for q in queries], query_feats)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cws", [False, True])
def test_cuhk_agrees_with_naive(seed, cws):
    rng = np.random.default_rng(seed)
    gallery, dets, feats = random_split(rng)
    small, large = cuhk_queries(rng, gallery, 3), cuhk_queries(rng, gallery, 8)
    query_feats = (np.round(rng.normal(size=(len(small), 4)) * 2) / 2).astype(np.float32)
    det_thresh = float(rng.choice([0.5, 0.55, 0.7]))
    predictions = predictions_of(gallery, dets, feats, small, query_feats)
    metrics = compute_metrics(predictions, "cuhk_sysu", gallery, small,
                              load_queries=lambda size: {4: small, 9: large}[size],
                              gallery_sizes=(4, 9), gallery_size=4, cws=cws,
                              det_thresh_search=det_thresh, det_thresh_detection=0.5)
    names = [r["image_id"] for r in gallery]
    for key, queries in (("search@4", small), ("search@9", large)):
        mean_ap, accs = naive_search_cuhk(names, dets, feats, queries, query_feats, det_thresh,
                                          cws)
        assert metrics[f"{key}/mAP"] == pytest.approx(mean_ap, abs=1e-9)
        assert [metrics[f"{key}/top{k}"] for k in (1, 5, 10)] == pytest.approx(accs.tolist())
    assert metrics["search/mAP"] == metrics["search@4/mAP"]
    for prefix, labeled_only in (("det", False), ("det_labeled", True)):
        ap, recall = naive_detection(gallery, dets, 0.5, labeled_only)
        assert metrics[f"{prefix}/AP"] == pytest.approx(ap, abs=1e-9)
        assert metrics[f"{prefix}/recall"] == pytest.approx(recall, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ignore_cam_id", [True, False])
def test_prw_agrees_with_naive(seed, ignore_cam_id):
    rng = np.random.default_rng(100 + seed)
    gallery, dets, feats = random_split(rng)
    queries = prw_queries(gallery)
    query_feats = (np.round(rng.normal(size=(len(queries), 4)) * 2) / 2).astype(np.float32)
    predictions = predictions_of(gallery, dets, feats, queries, query_feats)
    metrics = compute_metrics(predictions, "prw", gallery, queries, ignore_cam_id=ignore_cam_id,
                              det_thresh_detection=0.01)
    mean_ap, accs = naive_search_prw(gallery, dets, feats, queries, query_feats, 0.5,
                                     ignore_cam_id)
    assert metrics["search/mAP"] == pytest.approx(mean_ap, abs=1e-9)
    assert [metrics[f"search/top{k}"] for k in (1, 5, 10)] == pytest.approx(accs.tolist())
    ap, recall = naive_detection(gallery, dets, 0.01)
    assert metrics["det/AP"] == pytest.approx(ap, abs=1e-9)
    assert metrics["det/recall"] == pytest.approx(recall, abs=1e-12)
