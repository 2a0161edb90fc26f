"""Hungarian matcher against brute force over all assignments, with naive per-pair costs;
the dynamic-k matcher on hand-made cases."""

import itertools
import math

import pytest
import torch
from torchvision.ops import box_iou

from psdiff.config import get_cfg
from psdiff.modeling.matcher import DynamicKMatcher, HungarianMatcher, IoUMatcher, build_matcher
from psdiff.utils.errors import PsdiffError


def naive_giou(a, b):
    """GIoU of two xyxy boxes from the definition (Rezatofighi et al.)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (hull - union) / hull


def naive_cost(logit, pbox, gbox, size, pemb, gemb, weights, alpha=0.25, gamma=2.0):
    """One prediction-GT pair's matching cost written out by hand; weights: cls, L1, GIoU, reid."""
    p = 1 / (1 + math.exp(-logit))
    focal_pos = alpha * (1 - p) ** gamma * -math.log(p + 1e-8)
    focal_neg = (1 - alpha) * p**gamma * -math.log(1 - p + 1e-8)
    l1 = sum(abs(pbox[i] / size[i] - gbox[i] / size[i]) for i in range(4))
    reid = math.sqrt(sum((x - y) ** 2 for x, y in zip(pemb, gemb)))
    terms = (focal_pos - focal_neg, l1, -naive_giou(pbox, gbox), reid)
    return sum(w * term for w, term in zip(weights, terms))


def random_boxes(n, g, size=(64.0, 48.0)):
    xy = torch.rand(n, 2, generator=g) * torch.tensor(size) * 0.7
    wh = torch.rand(n, 2, generator=g) * torch.tensor(size) * 0.3 + 2
    return torch.cat([xy, xy + wh], dim=1)


def make_case(seed, num_pred, num_gt, dim=3):
    g = torch.Generator().manual_seed(seed)
    outputs = {"pred_logits": torch.randn(1, num_pred, 1, generator=g),
               "pred_boxes": random_boxes(num_pred, g)[None],
               "pred_embeddings": torch.randn(1, num_pred, dim, generator=g)}
    target = {"boxes": random_boxes(num_gt, g),
              "image_size": torch.tensor([64.0, 48.0, 64.0, 48.0]),
              "embeddings": torch.randn(num_gt, dim, generator=g)}
    return outputs, target


def naive_matrix(outputs, target, weights):
    n, m = outputs["pred_boxes"].shape[1], len(target["boxes"])
    logits, boxes, embs = (outputs[k][0].tolist() for k in
                           ("pred_logits", "pred_boxes", "pred_embeddings"))
    size = target["image_size"].tolist()
    return [[naive_cost(logits[q][0], boxes[q], target["boxes"][g].tolist(), size, embs[q],
                        target["embeddings"][g].tolist(), weights) for g in range(m)]
            for q in range(n)]


@pytest.mark.parametrize("seed,num_pred,num_gt,k,w_reid", [
    (0, 5, 1, 1, 0.0), (1, 5, 3, 1, 0.0), (2, 6, 4, 1, 0.0), (3, 4, 4, 1, 0.0),
    (4, 6, 2, 2, 0.0), (5, 5, 3, 2, 0.0), (6, 6, 3, 1, 5.0),
])
def test_matches_brute_force(seed, num_pred, num_gt, k, w_reid):
    """The matcher's total cost equals the minimum over every injective assignment."""
    outputs, target = make_case(seed, num_pred, num_gt)
    weights = (2.0, 5.0, 2.0, w_reid)
    matcher = HungarianMatcher(*weights[:3], match_k=k, cost_reid=w_reid)
    (pred_idx, gt_idx), = matcher(outputs, [target])
    cost = naive_matrix(outputs, target, weights)
    slots = [g for _ in range(k) for g in range(num_gt)]  # GT columns repeated k times
    num_matches = min(num_pred, len(slots))
    if len(slots) <= num_pred:  # every slot gets a distinct prediction
        best = min(sum(cost[q][g] for q, g in zip(preds, slots))
                   for preds in itertools.permutations(range(num_pred), len(slots)))
    else:  # every prediction gets a distinct slot
        best = min(sum(cost[q][slots[s]] for q, s in enumerate(cols))
                   for cols in itertools.permutations(range(len(slots)), num_pred))
    got = sum(cost[q][g] for q, g in zip(pred_idx.tolist(), gt_idx.tolist()))
    assert got == pytest.approx(best, rel=1e-5, abs=1e-5)
    assert len(pred_idx) == num_matches and len(set(pred_idx.tolist())) == num_matches
    counts = torch.bincount(gt_idx, minlength=num_gt)
    if num_matches == len(slots):
        assert torch.all(counts == k)


def test_zero_ground_truth_and_mixed_batch():
    outputs, target = make_case(0, 5, 2)
    empty = {"boxes": torch.zeros(0, 4), "image_size": target["image_size"],
             "embeddings": torch.zeros(0, 3)}
    batch = {k: v.repeat(2, 1, 1) for k, v in outputs.items()}
    indices = HungarianMatcher()(batch, [empty, target])
    assert indices[0][0].numel() == 0 and indices[0][1].numel() == 0
    assert indices[0][0].dtype == torch.long
    assert len(indices[1][0]) == 2 and sorted(indices[1][1].tolist()) == [0, 1]


def test_non_finite_predictions_are_named():
    outputs, target = make_case(0, 4, 2)
    outputs["pred_boxes"][0, 1, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite"):
        HungarianMatcher()(outputs, [target])


def test_from_config():
    cfg = get_cfg()
    cfg.MODEL.PSDIFF.MATCH_K = 3
    cfg.MODEL.PSDIFF.CLASS_WEIGHT = 1.5
    m = HungarianMatcher.from_config(cfg)
    costs = (m.match_k, m.cost_class, m.cost_bbox, m.cost_giou, m.cost_reid)
    assert costs == (3, 1.5, 5.0, 2.0, 0.0)
    cfg.MODEL.PSDIFF.MATCH_K = 0
    with pytest.raises(PsdiffError, match=r"^MODEL.PSDIFF.MATCH_K must be >= 1, got 0$"):
        HungarianMatcher.from_config(cfg)


def test_dynamic_k_gives_each_person_its_cheapest_inside_predictions():
    size = torch.tensor([100.0, 100.0, 100.0, 100.0])
    gt = torch.tensor([[10.0, 10.0, 40.0, 90.0], [60.0, 10.0, 90.0, 90.0]])
    shift = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0], [0.0, 2.0, 0.0, 2.0]])
    boxes = torch.cat([
        gt[0] + shift,  # three near-copies of person 0: IoUs 1, 0.94, 0.95, so k = 2
        gt[1:] + shift[:1],  # one copy of person 1, the rest far from it: k = 1
        torch.tensor([[0.0, 0.0, 8.0, 8.0], [45.0, 0.0, 55.0, 20.0]]),  # centres in no person
    ])
    outputs = {"pred_logits": torch.zeros(1, 6, 1), "pred_boxes": boxes[None],
               "pred_embeddings": torch.zeros(1, 6, 4)}
    target = {"boxes": gt, "image_size": size, "embeddings": torch.zeros(2, 4)}
    matcher = DynamicKMatcher()
    ious = box_iou(boxes, gt)
    k = ious.topk(5, dim=0).values.sum(0).floor()
    assert k.tolist() == [2.0, 1.0]
    (pred, gt_idx), = matcher(outputs, [target])
    # person 0 takes its two cheapest copies (the exact one, then the 1-pixel shift)
    assert sorted(zip(pred.tolist(), gt_idx.tolist())) == [(0, 0), (1, 0), (3, 1)]


def test_dynamic_k_assigns_each_prediction_once_and_every_person():
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        outputs, target = make_case(int(torch.randint(0, 1000, (1,), generator=g)), 12, 4)
        (pred, gt_idx), = DynamicKMatcher()(outputs, [target])
        assert len(set(pred.tolist())) == len(pred)  # a prediction serves one person
        assert set(gt_idx.tolist()) == set(range(4))  # every person has a prediction


def test_build_matcher_by_name():
    cfg = get_cfg()
    assert type(build_matcher(cfg)) is HungarianMatcher
    cfg.MODEL.PSDIFF.MATCHER = "dynamic_k"
    assert type(build_matcher(cfg)) is DynamicKMatcher
    cfg.MODEL.PSDIFF.MATCHER = "iou"
    assert type(build_matcher(cfg)) is IoUMatcher
    cfg.MODEL.PSDIFF.MATCHER = "greedy"
    with pytest.raises(PsdiffError, match="MODEL.PSDIFF.MATCHER = 'greedy'"):
        build_matcher(cfg)


def test_iou_matcher_makes_every_box_on_a_person_positive():
    size = torch.tensor([100.0, 100.0, 100.0, 100.0])
    gt = torch.tensor([[10.0, 10.0, 40.0, 90.0], [60.0, 10.0, 90.0, 90.0]])
    target = {"boxes": gt, "image_size": size, "embeddings": torch.zeros(2, 4)}

    def match(boxes):
        outputs = {"pred_logits": torch.zeros(1, len(boxes), 1), "pred_boxes": boxes[None],
                   "pred_embeddings": torch.zeros(1, len(boxes), 4)}
        (pred, gt_idx), = IoUMatcher()(outputs, [target])
        return sorted(zip(pred.tolist(), gt_idx.tolist()))

    # two boxes on person 0, one on person 1, two on nobody: three positives
    on = torch.tensor([[10.0, 10.0, 40.0, 90.0], [11.0, 10.0, 41.0, 90.0], [0.0, 0.0, 8.0, 8.0],
                       [45.0, 0.0, 55.0, 20.0], [62.0, 12.0, 88.0, 88.0]])
    assert match(on) == [(0, 0), (1, 0), (4, 1)]
    # no box reaches a person: each person takes its cheapest prediction, once
    off = torch.tensor([[0.0, 0.0, 8.0, 8.0], [45.0, 0.0, 55.0, 20.0], [20.0, 20.0, 30.0, 30.0]])
    assert match(off) == [(1, 1), (2, 0)]


def test_iou_matcher_threshold_is_the_config_key():
    size = torch.tensor([100.0, 100.0, 100.0, 100.0])
    target = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 90.0]]), "image_size": size,
              "embeddings": torch.zeros(1, 4)}
    # the person itself, and its upper 45 of 80 rows: IoU 1350 / 2400 = 0.5625
    boxes = torch.tensor([[10.0, 10.0, 40.0, 90.0], [10.0, 10.0, 40.0, 55.0]])
    outputs = {"pred_logits": torch.zeros(1, 2, 1), "pred_boxes": boxes[None],
               "pred_embeddings": torch.zeros(1, 2, 4)}
    cfg = get_cfg()
    cfg.MODEL.PSDIFF.MATCHER = "iou"
    positives = {}
    for thresh in (0.5, 0.6):
        cfg.MODEL.PSDIFF.MATCH_IOU_THRESH = thresh
        (pred, _), = build_matcher(cfg)(outputs, [target])
        positives[thresh] = sorted(pred.tolist())
    assert positives == {0.5: [0, 1], 0.6: [0]}
    cfg.MODEL.PSDIFF.MATCH_IOU_THRESH = 1.5
    with pytest.raises(PsdiffError, match="MATCH_IOU_THRESH must be in \\(0, 1\\], got 1.5"):
        build_matcher(cfg)
