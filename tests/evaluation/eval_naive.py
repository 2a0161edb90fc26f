"""A deliberately naive second implementation of the protocol, to check psdiff.evaluation against.

It follows SeqNet's `eval_func.py` loop by loop (scalar IoU, per-image Python loops, AP from an
explicit precision-recall curve), shares no code with psdiff.evaluation, and fixes the two places
where the reference is undefined: top-k ties are broken by gallery order (stable sort), and a
query without ground truth gets AP 0.
"""

import numpy as np


def naive_ap(y_true, y_score):
    """AP as sklearn defines it: walk the distinct thresholds from high to low, sum dR x P."""
    y_true = [bool(t) for t in y_true]
    total_pos = sum(y_true)
    if total_pos == 0:
        return 0.0
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(np.asarray(y_score).tolist()), reverse=True):
        t = np.asarray(y_score).dtype.type(t)
        above = [i for i, s in enumerate(y_score) if s >= t]
        tp = sum(y_true[i] for i in above)
        recall = tp / total_pos
        ap += (recall - prev_recall) * (tp / len(above))
        prev_recall = recall
    return ap


def naive_iou(a, b):
    """SeqNet's `_compute_iou`."""
    a = [float(v) for v in a]
    b = [float(v) for v in b]
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def naive_detection(gallery, dets, det_thresh, labeled_only=False, iou_thresh=0.5):
    """SeqNet's `eval_detection`; `dets[i]` is an (n,5) float32 array of image i."""
    y_true, y_score, count_gt, count_tp = [], [], 0, 0
    for record, det in zip(gallery, dets):
        gt_boxes = [a["bbox"] for a in record["annotations"]
                    if not labeled_only or a["pid"] != -1]
        if labeled_only and not gt_boxes:
            continue
        gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4).astype(np.int32)
        det = det[det[:, 4] >= det_thresh]
        if len(det) == 0:
            count_gt += len(gt_boxes)
            continue
        ious = np.zeros((len(gt_boxes), len(det)), dtype=np.float32)
        for i in range(len(gt_boxes)):
            for j in range(len(det)):
                ious[i, j] = naive_iou(gt_boxes[i], det[j, :4])
        tfmat = ious >= iou_thresh
        for j in range(len(det)):
            if len(gt_boxes):
                best = np.argmax(ious[:, j])
                for i in range(len(gt_boxes)):
                    if i != best:
                        tfmat[i, j] = False
        for i in range(len(gt_boxes)):
            best = np.argmax(ious[i, :])
            for j in range(len(det)):
                if j != best:
                    tfmat[i, j] = False
        for j in range(len(det)):
            y_score.append(det[j, 4])
            y_true.append(tfmat[:, j].any())
        count_tp += int(tfmat.sum())
        count_gt += len(gt_boxes)
    recall = count_tp / count_gt if count_gt else 0.0
    return naive_ap(y_true, np.asarray(y_score, np.float32)) * recall, recall


def naive_rank_query(names, dets, feats, query_feat, gallery_entries, det_thresh, cws=False):
    """One query, SeqNet style. `gallery_entries`: [(image name, int32 gt xyxy or None)] in
    protocol order. Returns (AP, [top1, top5, top10])."""
    index = {n: i for i, n in enumerate(names)}
    y_true, y_score, count_gt, count_tp, tested = [], [], 0, 0, set()
    for name, gt in gallery_entries:
        count_gt += gt is not None
        det, feat = dets[index[name]], feats[index[name]]
        keep = det[:, 4] >= det_thresh
        det, feat = det[keep], feat[keep]
        if len(det) == 0 or name in tested:
            continue
        tested.add(name)
        if cws:
            feat = feat * det[:, 4:5]
        # float32 similarity from an exact float64 dot product (psdiff's rule, order-free)
        sim = feat.astype(np.float64).dot(query_feat.astype(np.float64)).astype(np.float32)
        label = np.zeros(len(sim), dtype=np.int32)
        if gt is not None:
            w, h = gt[2] - gt[0], gt[3] - gt[1]
            iou_thresh = min(0.5, (w * h * 1.0) / ((w + 10) * (h + 10)))
            for j in np.argsort(-sim, kind="stable"):
                if naive_iou(det[j, :4], gt) >= iou_thresh:
                    label[j] = 1
                    count_tp += 1
                    break
        y_true.extend(label)
        y_score.extend(sim)
    y_score = np.asarray(y_score, np.float32)
    y_true = np.asarray(y_true)
    ap = 0.0 if count_tp == 0 else naive_ap(y_true, y_score) * count_tp / count_gt
    ranked = y_true[np.argsort(-y_score, kind="stable")]
    return ap, [min(1, int(ranked[:k].sum())) for k in (1, 5, 10)]


def naive_search_cuhk(names, dets, feats, queries, query_feats, det_thresh, cws=False):
    """Mean AP and top-k over CUHK-style queries (`gallery_ids` / `gallery_boxes`)."""
    aps, accs = [], []
    for query, qfeat in zip(queries, query_feats):
        entries = [(n, None if np.isnan(b).any() else np.asarray(b).astype(np.int32))
                   for n, b in zip(query["gallery_ids"], query["gallery_boxes"])]
        ap, acc = naive_rank_query(names, dets, feats, qfeat, entries, det_thresh, cws)
        aps.append(ap)
        accs.append(acc)
    return np.mean(aps), np.mean(accs, axis=0)


def naive_search_prw(gallery, dets, feats, queries, query_feats, det_thresh, ignore_cam_id=True):
    """Mean AP and top-k over PRW queries, SeqNet's `eval_search_prw` loops."""
    names = [r["image_id"] for r in gallery]
    aps, accs = [], []
    for query, qfeat in zip(queries, query_feats):
        entries = []
        for record in gallery:
            if record["image_id"] == query["image_id"]:
                continue
            if not ignore_cam_id and record["cam_id"] == query["cam_id"]:
                continue
            boxes = [a["bbox"] for a in record["annotations"] if a["pid"] == query["pid"]]
            gt = np.asarray(boxes[0], np.float64).astype(np.int32) if boxes else None
            entries.append((record["image_id"], gt))
        ap, acc = naive_rank_query(names, dets, feats, qfeat, entries, det_thresh)
        aps.append(ap)
        accs.append(acc)
    return np.mean(aps), np.mean(accs, axis=0)
