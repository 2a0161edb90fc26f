"""Teacher training losses: supervised HHCL (paper's teacher) and S-ReID (Table VI's baseline).

HHCL (`CMhybrid_v2`; docs/teacher.md, "HHCL upstream"), with f a normalized embedding of class y:
  L_c = -log[exp(f.c_y/tau) / (sum_k exp(f.c_k/tau) + sum_q exp(f.u_q/tau))]   (centroids, queue)
  L_i = -log[exp(p/tau) / (exp(p/tau) + sum_{k!=y} exp(n_k/tau))]               (hard instances)
with p = min_j f.z_{y,j} (hardest positive slot) and n_k = max_j f.z_{k,j} (hardest negative of
class k), and L = lambda * L_c + (1 - lambda) * L_i. The unlabeled queue u only enlarges the
centroid softmax's denominator, as OIM's circular queue does.
S-ReID: label-smoothed softmax ID loss on the BNNeck output + batch-hard triplet on the pre-BN
feature (the "strong ReID baseline").
"""

import torch
import torch.nn.functional as F
from fvcore.common.registry import Registry
from torch import nn

from psdiff.utils.errors import PsdiffError

from .memory import HybridMemory

TEACHER_LOSS_REGISTRY = Registry("TEACHER_LOSS")
TEACHER_LOSS_REGISTRY.__doc__ = "Teacher training criteria, selected by cfg.TEACHER.LOSS."


def centroid_contrast_loss(emb, labels, centroids, queue, temperature):
    """L_c: softmax over the identity centroids, unlabeled queue rows as extra negatives."""
    logits = emb @ centroids.t()
    if len(queue):
        logits = torch.cat([logits, emb @ queue.t()], dim=1)
    return F.cross_entropy(logits / temperature, labels)


def hard_instance_loss(emb, labels, instances, temperature):
    """L_i: the least similar slot of the own class against the most similar slot of each other."""
    sims = torch.einsum("bd,nkd->bnk", emb, instances)
    logits = sims.max(dim=2).values  # n_k: hardest negative of every class
    hardest_pos = sims[torch.arange(len(labels)), labels].min(dim=1).values  # p
    logits = logits.scatter(1, labels[:, None], hardest_pos[:, None])
    return F.cross_entropy(logits / temperature, labels)


def batch_hard_triplet_loss(features, labels, margin):
    """Mean of relu(d(a, hardest positive) - d(a, hardest negative) + margin), Euclidean."""
    dist = torch.cdist(features, features)
    same = labels[:, None] == labels[None, :]
    hardest_pos = dist.masked_fill(~same, float("-inf")).max(dim=1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(dim=1).values
    valid = torch.isfinite(hardest_neg)  # an anchor needs a negative in the batch
    if not valid.any():
        return features.sum() * 0.0
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


@TEACHER_LOSS_REGISTRY.register()
class HHCL(nn.Module):
    """Hybrid centroid + hard-instance contrast over a `HybridMemory` (Section IV-B2, [55])."""

    def __init__(self, num_classes: int, emb_dim: int, temperature: float = 0.05,
                 hard_weight: float = 0.5, momentum: float = 0.1, num_instances: int = 4,
                 centroid_update: str = "hard", queue_size: int = 0):
        super().__init__()
        self.temperature = temperature
        self.hard_weight = hard_weight
        self.memory = HybridMemory(num_classes, emb_dim, num_instances, momentum,
                                   centroid_update, queue_size)

    @classmethod
    def from_config(cls, cfg, num_classes: int):
        t = cfg.TEACHER
        return cls(num_classes, cfg.MODEL.PSDIFF.EMB_DIM, t.TEMPERATURE, t.HARD_WEIGHT,
                   t.MEMORY_MOMENTUM, t.HARD_K, t.CENTROID_UPDATE,
                   t.QUEUE_SIZE if t.USE_UNLABELED else 0)

    @property
    def needs_memory(self) -> bool:
        return True

    def initialize(self, embeddings, labels, unlabeled=None, generator=None):
        """Fill the memory from eval-mode embeddings of all training crops."""
        self.memory.initialize(embeddings, labels, unlabeled, generator)

    def forward(self, outputs: dict, labels: torch.Tensor, unlabeled: torch.Tensor = None):
        """Losses against the memory as it was, then the memory update with this batch."""
        emb = outputs["embedding"]
        memory = self.memory
        loss_c = centroid_contrast_loss(emb, labels, memory.centroids.clone(),
                                        memory.filled_queue().clone(), self.temperature)
        loss_i = hard_instance_loss(emb, labels, memory.instances.clone(), self.temperature)
        memory.update(emb, labels, unlabeled)
        return {"loss_centroid": self.hard_weight * loss_c,
                "loss_instance": (1.0 - self.hard_weight) * loss_i}


@TEACHER_LOSS_REGISTRY.register()
class SREID(nn.Module):
    """BNNeck + softmax ID loss + batch-hard triplet ("S-ReID" teacher of Table VI)."""

    def __init__(self, num_classes: int, emb_dim: int, label_smooth: float = 0.1,
                 margin: float = 0.3):
        super().__init__()
        self.classifier = nn.Linear(emb_dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)
        self.label_smooth = label_smooth
        self.margin = margin

    @classmethod
    def from_config(cls, cfg, num_classes: int):
        return cls(num_classes, cfg.MODEL.PSDIFF.EMB_DIM, cfg.TEACHER.SREID_LABEL_SMOOTH,
                   cfg.TEACHER.SREID_TRIPLET_MARGIN)

    @property
    def needs_memory(self) -> bool:
        return False

    def initialize(self, embeddings, labels, unlabeled=None, generator=None):
        """S-ReID keeps no memory."""

    def forward(self, outputs: dict, labels: torch.Tensor, unlabeled: torch.Tensor = None):
        """Unlabeled crops have no class and are not used by S-ReID."""
        loss_id = F.cross_entropy(self.classifier(outputs["bn"]), labels,
                                  label_smoothing=self.label_smooth)
        loss_tri = batch_hard_triplet_loss(outputs["feature"], labels, self.margin)
        return {"loss_id": loss_id, "loss_triplet": loss_tri}


def build_teacher_loss(cfg, num_classes: int) -> nn.Module:
    """The criterion named by cfg.TEACHER.LOSS, for `num_classes` training identities."""
    if cfg.TEACHER.LOSS not in TEACHER_LOSS_REGISTRY:
        names = sorted(name for name, _ in TEACHER_LOSS_REGISTRY)
        raise PsdiffError(f"TEACHER.LOSS must be one of {names}, got '{cfg.TEACHER.LOSS}'")
    return TEACHER_LOSS_REGISTRY.get(cfg.TEACHER.LOSS).from_config(cfg, num_classes)
