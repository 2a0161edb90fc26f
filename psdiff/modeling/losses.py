"""Set-prediction loss of PSDiff (Eq. 13-14): focal + L1 + GIoU for boxes, L2 for embeddings.

Predictions are matched to persons by the matcher (MODEL.PSDIFF.MATCHER); every term is summed
over the batch and divided by the number of ground-truth persons (averaged over ranks, as
DETR), so the loss of a GT does not depend on how many images or GPUs share it.

Besides Eq. 14, the ReID term can be the cosine distance to e0 (REID_LOSS "cosine"), and a
relational distillation term (RELATION_WEIGHT) asks each matched prediction to rank the batch's
teacher embeddings as its own e0 ranks them: the cross-entropy between softmax(cos(e0_i, e0_j)/τ)
and softmax(cos(ê0_i, e0_j)/τ) over the batch's persons j. A regression target alone lets the
embeddings settle on the mean direction; the relation term pays only for telling persons apart.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from psdiff.utils.errors import PsdiffError

from .matcher import build_matcher

# keys of `weights` (λ_cls, λ_L1, λ_giou, λ_reid, relation) and their MODEL.PSDIFF keys
LOSS_WEIGHT_KEYS = {"cls": "CLASS_WEIGHT", "l1": "L1_WEIGHT", "giou": "GIOU_WEIGHT",
                    "reid": "REID_WEIGHT", "relation": "RELATION_WEIGHT"}
REID_LOSSES = ("l2", "cosine")  # MODEL.PSDIFF.REID_LOSS choices


def relation_loss(pred, own, candidates, temperature):
    """Σ over rows of CE(softmax(cos(own, candidates)/τ), softmax(cos(pred, candidates)/τ)).

    pred, own: [P, D] predictions and their matched teacher embeddings; candidates: [G, D].
    """
    candidates = F.normalize(candidates, dim=-1)
    teacher = (F.normalize(own, dim=-1) @ candidates.T / temperature).softmax(-1)
    student = (F.normalize(pred, dim=-1) @ candidates.T / temperature).log_softmax(-1)
    return -(teacher * student).sum()


def num_gt_per_rank(targets: list, device) -> torch.Tensor:
    """GT persons summed over all ranks, divided by the world size (DETR), at least 1.

    DDP averages gradients over ranks, so dividing each rank's sum by this mean count gives
    the gradient of the global loss divided by the global GT count.
    """
    count = torch.tensor(float(sum(len(t["boxes"]) for t in targets)), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return count.clamp(min=1)


class SetCriterion(nn.Module):
    """Eq. 13: λ_cls·L_cls + λ_L1·L_L1 + λ_giou·L_giou + λ_reid·L_reid on matched predictions."""

    def __init__(self, matcher, weights: dict, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 reid_loss: str = "l2", relation_temperature: float = 0.1):
        """`weights` maps "cls", "l1", "giou", "reid" (and "relation") to λ; `matcher` pairs
        predictions and GTs."""
        super().__init__()
        weights = {"relation": 0.0, **weights}
        missing = [f"{k} (MODEL.PSDIFF.{key})" for k, key in LOSS_WEIGHT_KEYS.items()
                   if k not in weights]
        if missing:
            raise PsdiffError(f"loss weights lack {', '.join(missing)}")
        if reid_loss not in REID_LOSSES:
            raise PsdiffError(f"MODEL.PSDIFF.REID_LOSS = '{reid_loss}' is not one of {REID_LOSSES}")
        self.matcher = matcher
        self.weights = dict(weights)
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.reid_loss = reid_loss
        self.relation_temperature = relation_temperature

    @classmethod
    def from_config(cls, cfg):
        """Matcher and λ from MODEL.PSDIFF (paper: 2, 5, 2, 5; focal α 0.25, γ 2)."""
        p = cfg.MODEL.PSDIFF
        weights = {term: p[key] for term, key in LOSS_WEIGHT_KEYS.items()}
        return cls(build_matcher(cfg), weights, p.FOCAL_ALPHA, p.FOCAL_GAMMA, p.REID_LOSS,
                   p.RELATION_TEMPERATURE)

    def unweighted(self, outputs: dict, targets: list, num_gt: torch.Tensor) -> dict:
        """The four terms before weighting, each a sum over the batch divided by `num_gt`."""
        logits = outputs["pred_logits"]
        pred_idx, gt_idx = zip(*self.matcher(outputs, targets))
        batch = torch.cat([torch.full_like(p, b) for b, p in enumerate(pred_idx)]).to(logits.device)
        pred = torch.cat(pred_idx).to(logits.device)

        # L_cls: sigmoid focal loss over all B·N predictions, matched ones are persons
        labels = torch.zeros_like(logits)
        labels[batch, pred, 0] = 1
        loss_cls = sigmoid_focal_loss(logits, labels, self.focal_alpha, self.focal_gamma, "sum")

        if len(pred) == 0:  # no person in the batch: zero terms that keep the graph connected
            zero = outputs["pred_boxes"].sum() * 0 + outputs["pred_embeddings"].sum() * 0
            terms = {"cls": loss_cls / num_gt, "l1": zero, "giou": zero, "reid": zero}
            return {**terms, "relation": zero} if self.weights["relation"] else terms

        def matched(key):
            return torch.cat([t[key][g.to(t[key].device)] for t, g in zip(targets, gt_idx)])

        boxes = outputs["pred_boxes"][batch, pred]
        embeddings = outputs["pred_embeddings"][batch, pred]
        gt_boxes = matched("boxes").to(boxes)
        size = torch.stack([t["image_size"].to(boxes) for t in targets])[batch]
        loss_l1 = (boxes / size - gt_boxes / size).abs().sum()  # L_L1 on normalized boxes
        loss_giou = generalized_box_iou_loss(boxes, gt_boxes, reduction="sum")
        gt_embeddings = matched("embeddings").to(embeddings)
        if self.reid_loss == "l2":  # Eq. 14: Σ_i ‖e0^i − ê0^σ(i)‖₂, not squared, same space
            loss_reid = (gt_embeddings - embeddings).norm(dim=-1).sum()
        else:
            loss_reid = (1 - F.cosine_similarity(gt_embeddings, embeddings, dim=-1)).sum()
        terms = {"cls": loss_cls, "l1": loss_l1, "giou": loss_giou, "reid": loss_reid}
        if self.weights["relation"]:
            candidates = torch.cat([t["embeddings"] for t in targets]).to(embeddings)
            terms["relation"] = relation_loss(embeddings, gt_embeddings, candidates,
                                              self.relation_temperature)
        return {k: v / num_gt for k, v in terms.items()}

    def forward(self, outputs: dict, targets: list) -> dict:
        """Weighted "loss_*" terms (summed by the trainer) and unweighted "raw_*" ones (logged);
        outputs and targets as `HungarianMatcher.forward`."""
        num_gt = num_gt_per_rank(targets, outputs["pred_logits"].device)
        result = {}
        for name, value in self.unweighted(outputs, targets, num_gt).items():
            result[f"loss_{name}"] = self.weights[name] * value
            result[f"raw_{name}"] = value.detach()
        return result
