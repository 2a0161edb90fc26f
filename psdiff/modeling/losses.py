"""Set-prediction loss of PSDiff (Eq. 13-14): focal + L1 + GIoU for boxes, L2 for embeddings.

Predictions are matched to persons by `HungarianMatcher`; every term is summed over the
batch and divided by the number of ground-truth persons (averaged over ranks, as DETR), so
the loss of a GT does not depend on how many images or GPUs share it.
"""

import torch
import torch.distributed as dist
from torch import nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from psdiff.utils.errors import PsdiffError

from .matcher import HungarianMatcher

# keys of `weights` (λ_cls, λ_L1, λ_giou, λ_reid) and the MODEL.PSDIFF keys they come from
LOSS_WEIGHT_KEYS = {"cls": "CLASS_WEIGHT", "l1": "L1_WEIGHT", "giou": "GIOU_WEIGHT",
                    "reid": "REID_WEIGHT"}


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

    def __init__(self, matcher, weights: dict, focal_alpha: float = 0.25, focal_gamma: float = 2.0):
        """`weights` maps "cls", "l1", "giou", "reid" to λ; `matcher` pairs predictions and GTs."""
        super().__init__()
        missing = [f"{k} (MODEL.PSDIFF.{key})" for k, key in LOSS_WEIGHT_KEYS.items()
                   if k not in weights]
        if missing:
            raise PsdiffError(f"loss weights lack {', '.join(missing)}")
        self.matcher = matcher
        self.weights = dict(weights)
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @classmethod
    def from_config(cls, cfg):
        """Matcher and λ from MODEL.PSDIFF (paper: 2, 5, 2, 5; focal α 0.25, γ 2)."""
        p = cfg.MODEL.PSDIFF
        weights = {term: p[key] for term, key in LOSS_WEIGHT_KEYS.items()}
        return cls(HungarianMatcher.from_config(cfg), weights, p.FOCAL_ALPHA, p.FOCAL_GAMMA)

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
            return {"cls": loss_cls / num_gt, "l1": zero, "giou": zero, "reid": zero}

        def matched(key):
            return torch.cat([t[key][g.to(t[key].device)] for t, g in zip(targets, gt_idx)])

        boxes = outputs["pred_boxes"][batch, pred]
        embeddings = outputs["pred_embeddings"][batch, pred]
        gt_boxes = matched("boxes").to(boxes)
        size = torch.stack([t["image_size"].to(boxes) for t in targets])[batch]
        loss_l1 = (boxes / size - gt_boxes / size).abs().sum()  # L_L1 on normalized boxes
        loss_giou = generalized_box_iou_loss(boxes, gt_boxes, reduction="sum")
        # Eq. 14: Σ_i ‖e0^i − ê0^σ(i)‖₂, not squared; e0 and ê0 come in the same space
        loss_reid = (matched("embeddings").to(embeddings) - embeddings).norm(dim=-1).sum()
        terms = {"cls": loss_cls, "l1": loss_l1, "giou": loss_giou, "reid": loss_reid}
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
