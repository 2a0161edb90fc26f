"""Matching of predictions to ground truths (Sec. IV-C1, Eq. 13).

The cost of pairing prediction q with person g is the set-prediction cost of DETR / Sparse
R-CNN: λ_cls·focal + λ_L1·L1(normalized boxes) − λ_giou·GIoU (+ λ_reid·‖e0 − ê0‖ when
`cost_reid` > 0). `HungarianMatcher` (the paper's) solves it one-to-one with scipy's Hungarian
algorithm; `DynamicKMatcher` gives each person its k cheapest predictions, k from the IoUs
(DiffusionDet's SimOTA-style matcher), so near-duplicate proposals share the positive label;
`IoUMatcher` makes every prediction that lands on a person (IoU >= MATCH_IOU_THRESH) a
positive, so the score means "this box is on a person" and NMS removes the duplicates, as in
Faster R-CNN.
"""

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_iou, generalized_box_iou

from psdiff.utils.errors import PsdiffError

MATCHERS = ("hungarian", "dynamic_k", "iou")  # MODEL.PSDIFF.MATCHER choices


def focal_cost(logits: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Focal classification cost of calling each prediction a person (Deformable DETR form).

    cost = α(1−p)^γ·(−log p) − (1−α)p^γ·(−log(1−p)): the focal loss of the positive label
    minus that of the negative one, with p = sigmoid(logit).
    """
    p = logits.sigmoid()
    pos = alpha * (1 - p) ** gamma * -(p + 1e-8).log()
    neg = (1 - alpha) * p**gamma * -(1 - p + 1e-8).log()
    return pos - neg


class HungarianMatcher(nn.Module):
    """One-to-one (or one-to-k) assignment of N predictions to the M persons of each image."""

    def __init__(self, cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, focal_alpha=0.25,
                 focal_gamma=2.0, match_k=1, cost_reid=0.0):
        """Cost weights as the loss weights (λ of Eq. 13); `match_k` > 1 gives every person k
        predictions (its cost column repeated k times); `cost_reid` > 0 adds the Eq. 14 distance."""
        super().__init__()
        if match_k < 1:
            raise PsdiffError(f"MODEL.PSDIFF.MATCH_K must be >= 1, got {match_k}")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.cost_reid = cost_reid
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.match_k = match_k

    @classmethod
    def config_args(cls, cfg) -> dict:
        """Arguments from MODEL.PSDIFF (costs share the loss weights, as in DiffusionDet)."""
        p = cfg.MODEL.PSDIFF
        return dict(cost_class=p.CLASS_WEIGHT, cost_bbox=p.L1_WEIGHT, cost_giou=p.GIOU_WEIGHT,
                    focal_alpha=p.FOCAL_ALPHA, focal_gamma=p.FOCAL_GAMMA, match_k=p.MATCH_K,
                    cost_reid=p.MATCH_REID_COST)

    @classmethod
    def from_config(cls, cfg):
        """The matcher built from `config_args(cfg)`, which subclasses extend."""
        return cls(**cls.config_args(cfg))

    def assign(self, cost, boxes, gt_boxes):
        """(pred_idx, gt_idx) numpy arrays for one image's finite cost [N, M]."""
        rows, cols = linear_sum_assignment(cost.repeat(1, self.match_k).cpu().numpy())
        return rows, cols % cost.shape[1]

    def cost_matrix(self, logits, boxes, embeddings, target) -> torch.Tensor:
        """Cost [N, M] of one image; boxes are absolute xyxy, normalized by target["image_size"]."""
        size, gt_boxes = target["image_size"].to(boxes), target["boxes"].to(boxes)
        cls = focal_cost(logits[:, 0], self.focal_alpha, self.focal_gamma)
        cost = self.cost_class * cls[:, None]
        cost = cost + self.cost_bbox * torch.cdist(boxes / size, gt_boxes / size, p=1)
        cost = cost - self.cost_giou * generalized_box_iou(boxes, gt_boxes)
        if self.cost_reid > 0:
            gt_embeddings = target["embeddings"].to(embeddings)
            cost = cost + self.cost_reid * torch.cdist(embeddings, gt_embeddings)
        return cost

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list) -> list:
        """Per image (pred_idx, gt_idx) LongTensors on CPU, of equal length min(N, k·M).

        outputs: "pred_logits" [B, N, 1], "pred_boxes" [B, N, 4] absolute xyxy input pixels,
        "pred_embeddings" [B, N, D] (read only when cost_reid > 0); targets: per image
        "boxes" [M, 4] (same frame), "image_size" (w, h, w, h) and "embeddings" [M, D].
        M = 0 gives empty indices.
        """
        indices = []
        for b, target in enumerate(targets):
            num_gt = len(target["boxes"])
            if num_gt == 0:
                empty = torch.zeros(0, dtype=torch.long)
                indices.append((empty, empty.clone()))
                continue
            embeddings = outputs.get("pred_embeddings")
            cost = self.cost_matrix(
                outputs["pred_logits"][b].float(), outputs["pred_boxes"][b].float(),
                None if embeddings is None else embeddings[b].float(), target)
            if not torch.isfinite(cost).all():
                raise FloatingPointError("matching cost is not finite: predictions hold NaN or inf")
            rows, cols = self.assign(cost, outputs["pred_boxes"][b].float(),
                                     target["boxes"].to(cost))
            indices.append((torch.as_tensor(rows, dtype=torch.long).cpu(),
                            torch.as_tensor(cols, dtype=torch.long).cpu()))
        return indices


def every_person_matched(chosen, cost):
    """(pred_idx, gt_idx) of a boolean assignment [N, M], after giving each person that has no
    prediction its cheapest prediction still free (while any is)."""
    for g in torch.nonzero(chosen.sum(0) == 0).flatten():
        free = chosen.sum(1) == 0
        if not free.any():
            break
        chosen[torch.where(free, cost[:, g], torch.inf).argmin(), g] = True
    return torch.nonzero(chosen, as_tuple=True)


class DynamicKMatcher(HungarianMatcher):
    """DiffusionDet's dynamic-k assignment on the same cost (MODEL.PSDIFF.MATCHER "dynamic_k").

    A prediction whose centre lies outside a person's box costs `OUTSIDE_COST` more for it.
    Person g takes its k_g cheapest predictions, k_g = ⌊Σ of its `TOP_IOUS` best IoUs⌋ ≥ 1; a
    prediction taken by several persons stays with the cheapest; a person left with none takes
    the cheapest prediction still free.
    """

    TOP_IOUS = 5
    OUTSIDE_COST = 100.0

    def assign(self, cost, boxes, gt_boxes):
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = ((centres[:, None, :] > gt_boxes[None, :, :2])
                  & (centres[:, None, :] < gt_boxes[None, :, 2:])).all(-1)
        cost = cost + self.OUTSIDE_COST * (~inside)
        ious = box_iou(boxes, gt_boxes)
        top = ious.topk(min(self.TOP_IOUS, len(boxes)), dim=0).values
        k = top.sum(0).floor().clamp(min=1)
        rank = cost.argsort(0).argsort(0)
        chosen = rank < k[None, :]
        shared = chosen.sum(1) > 1
        cheapest = torch.where(chosen, cost, torch.inf).argmin(1)
        chosen[shared] = False
        chosen[shared, cheapest[shared]] = True
        return every_person_matched(chosen, cost)


class IoUMatcher(HungarianMatcher):
    """Every prediction whose box overlaps a person by IoU >= `iou_thresh` is that person's
    (the one it overlaps most); a person that no prediction reaches takes its cheapest free one
    by the matching cost (MODEL.PSDIFF.MATCHER "iou")."""

    def __init__(self, iou_thresh=0.5, **costs):
        """`iou_thresh` (MODEL.PSDIFF.MATCH_IOU_THRESH) in (0, 1]; `costs` as HungarianMatcher's."""
        super().__init__(**costs)
        if not 0 < iou_thresh <= 1:
            raise PsdiffError(f"MODEL.PSDIFF.MATCH_IOU_THRESH must be in (0, 1], got {iou_thresh}")
        self.iou_thresh = iou_thresh

    @classmethod
    def config_args(cls, cfg) -> dict:
        """The costs' arguments plus the threshold."""
        return {**super().config_args(cfg), "iou_thresh": cfg.MODEL.PSDIFF.MATCH_IOU_THRESH}

    def assign(self, cost, boxes, gt_boxes):
        ious = box_iou(boxes, gt_boxes)
        best_iou, best_gt = ious.max(1)
        chosen = torch.zeros_like(cost, dtype=torch.bool)
        hits = torch.nonzero(best_iou >= self.iou_thresh).flatten()
        chosen[hits, best_gt[hits]] = True
        return every_person_matched(chosen, cost)


MATCHER_CLASSES = dict(zip(MATCHERS, (HungarianMatcher, DynamicKMatcher, IoUMatcher)))


def build_matcher(cfg):
    """The matcher named by MODEL.PSDIFF.MATCHER, costs from MODEL.PSDIFF."""
    name = cfg.MODEL.PSDIFF.MATCHER
    if name not in MATCHERS:
        raise PsdiffError(f"MODEL.PSDIFF.MATCHER = '{name}' is not one of {MATCHERS}")
    return MATCHER_CLASSES[name].from_config(cfg)
