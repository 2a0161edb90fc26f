"""HHCL's hybrid memory: identity centroids, per-identity instance slots and a queue of unlabeled.

Supervised HHCL (`CMhybrid_v2`; docs/teacher.md, "HHCL upstream"): one centroid per identity
(momentum update), K instance slots per identity (overwritten by the identity's latest batch
features) whose hardest members the instance loss mines, plus an OIM-style FIFO queue of
unlabeled crops that serve only as extra negatives.

Under DDP every rank holds the whole memory. `update` first all-gathers the features of the
global batch (rank order), so every rank applies the same update to the same memory.
"""

import torch
import torch.nn.functional as F
from torch import nn

from psdiff.utils import comm
from psdiff.utils.errors import PsdiffError


class HybridMemory(nn.Module):
    """Centroids [N, D], instances [N, K, D] and an unlabeled queue [Q, D], all unit vectors.

    The memory holds buffers, not parameters: it is written under `torch.no_grad()` after the
    losses have read it (HHCL computes logits against the memory before the batch's update).
    """

    def __init__(self, num_classes: int, dim: int, num_instances: int = 4,
                 momentum: float = 0.1, centroid_update: str = "hard", queue_size: int = 0):
        super().__init__()
        if centroid_update not in ("hard", "mean"):
            raise PsdiffError(
                f"TEACHER.CENTROID_UPDATE must be 'hard' or 'mean', got '{centroid_update}'")
        self.momentum = momentum
        self.centroid_update = centroid_update
        self.register_buffer("centroids", torch.zeros(num_classes, dim))
        self.register_buffer("instances", torch.zeros(num_classes, num_instances, dim))
        self.register_buffer("queue", torch.zeros(queue_size, dim))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))  # next slot to write
        self.register_buffer("queue_len", torch.zeros((), dtype=torch.long))  # filled slots

    @property
    def num_classes(self) -> int:
        return self.centroids.shape[0]

    @property
    def num_instances(self) -> int:
        return self.instances.shape[1]

    def filled_queue(self) -> torch.Tensor:
        """The queue rows written so far (an empty queue adds no negatives)."""
        return self.queue[: int(self.queue_len)]

    @torch.no_grad()
    def initialize(self, features: torch.Tensor, labels: torch.Tensor,
                   unlabeled: torch.Tensor = None, generator: torch.Generator = None) -> None:
        """Reset from eval-mode features of the training crops (HHCL does this every epoch).

        Centroid = normalized mean of the identity's features; its K instance slots get K of its
        features drawn at random with replacement (`generator` must be seeded alike on every
        rank); given `unlabeled`, the queue restarts with its last Q rows (else it is kept).
        Every identity needs a feature.
        """
        features = F.normalize(features.float(), dim=1)
        counts = torch.bincount(labels, minlength=self.num_classes)
        if (counts == 0).any():
            missing = int((counts == 0).nonzero()[0])
            raise PsdiffError(f"teacher memory: identity index {missing} has no training crop")
        sums = torch.zeros_like(self.centroids).index_add_(0, labels, features)
        self.centroids.copy_(F.normalize(sums, dim=1))
        order = torch.argsort(labels, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        draws = torch.rand(self.num_classes, self.num_instances, generator=generator)
        draws = draws.to(labels.device)
        offsets = torch.minimum((draws * counts[:, None]).long(), counts[:, None] - 1)
        picks = order[starts[:, None] + offsets]
        self.instances.copy_(features[picks])
        if unlabeled is not None:
            self.queue.zero_()
            self.queue_ptr.zero_()
            self.queue_len.zero_()
            self._enqueue(F.normalize(unlabeled.float(), dim=1))

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor,
               unlabeled: torch.Tensor = None) -> None:
        """Momentum-update the memory with this step's batch, gathered over all ranks first.

        Every rank must call this with tensors of the same shapes (the P x K sampler gives each
        rank the same batch shape). The result depends only on the global batch in rank order.
        """
        features = comm.all_gather_tensor(features.detach().float().contiguous())
        labels = comm.all_gather_tensor(labels.contiguous())
        features = F.normalize(features, dim=1)
        self._update_centroids(features, labels)
        self._update_instances(features, labels)
        if unlabeled is not None and self.queue.shape[0] > 0:
            unlabeled = comm.all_gather_tensor(unlabeled.detach().float().contiguous())
            if len(unlabeled):
                self._enqueue(F.normalize(unlabeled, dim=1))

    def _update_centroids(self, features, labels):
        """c_y <- normalize(m * c_y + (1 - m) * x_y), x_y = hardest or mean feature of class y.

        The hardest sample is the batch feature of y least similar to c_y (HHCL's CMhard bank H);
        the mean is HHCL's CMhybrid_v2 rule.
        """
        for y in torch.unique(labels).tolist():
            members = features[labels == y]
            if self.centroid_update == "hard":
                x = members[torch.argmin(members @ self.centroids[y])]
            else:
                x = members.mean(dim=0)
            mixed = self.momentum * self.centroids[y] + (1.0 - self.momentum) * x
            self.centroids[y] = F.normalize(mixed, dim=0)

    def _update_instances(self, features, labels):
        """Slots 0..n_y-1 of class y are overwritten by its n_y batch features (first K if more)."""
        for y in torch.unique(labels).tolist():
            members = features[labels == y][: self.num_instances]
            self.instances[y, : len(members)] = members

    def _enqueue(self, unlabeled):
        """FIFO: write the newest unlabeled features over the oldest queue rows."""
        size = self.queue.shape[0]
        if size == 0:
            return
        unlabeled = unlabeled[-size:]
        slots = (int(self.queue_ptr) + torch.arange(len(unlabeled))) % size
        self.queue[slots.to(self.queue.device)] = unlabeled
        self.queue_ptr.fill_((int(self.queue_ptr) + len(unlabeled)) % size)
        self.queue_len.fill_(min(size, int(self.queue_len) + len(unlabeled)))
