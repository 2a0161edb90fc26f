"""The trainable teacher: ReIDNetwork + criterion, shaped like a Detectron2 model for the engine.

`model(batch)` takes a crop batch ({"images", "labels"}, labels -1 for unlabeled crops) and
returns the loss dict in training, the L2-normalized embeddings in eval. The memory of the
HHCL criterion is (re)built from eval-mode embeddings of the training crops by
`initialize_memory`, at the start and every TEACHER.MEMORY_REFRESH_PERIOD iterations (HHCL).
"""

import logging
import random

import numpy as np
import torch
from torch import nn

from .inference import embed_boxes
from .losses import build_teacher_loss
from .network import ReIDNetwork

logger = logging.getLogger(__name__)


class TeacherModel(nn.Module):
    """The network and its training criterion (HHCL memory or S-ReID classifier) together."""

    def __init__(self, network: ReIDNetwork, criterion: nn.Module):
        super().__init__()
        self.network = network
        self.criterion = criterion

    @classmethod
    def from_config(cls, cfg, num_classes: int):
        return cls(ReIDNetwork.from_config(cfg), build_teacher_loss(cfg, num_classes))

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def forward(self, batch: dict):
        """Training: losses over the labeled crops (unlabeled ones feed the queue). Eval: [N, D]."""
        outputs = self.network(batch["images"].to(self.device))
        if not self.training:
            return outputs["embedding"]
        labels = batch["labels"].to(self.device)
        labeled = labels >= 0
        unlabeled = outputs["embedding"][~labeled].detach()
        return self.criterion({k: v[labeled] for k, v in outputs.items()}, labels[labeled],
                              unlabeled)


def initialize_memory(model: TeacherModel, crops, size, seed: int, with_queue: bool,
                      queue_size: int = 0, num_workers: int = 0) -> None:
    """HHCL's memory init: eval-mode embeddings of every labeled crop (+ Q unlabeled for the queue).

    `crops` is the training CropDataset. The random draws use `seed`, identical on every rank,
    and `embed_boxes` gathers every embedding on every rank, so the memories stay identical.
    """
    if not model.criterion.needs_memory:
        return
    labeled = np.flatnonzero(crops.labels >= 0)
    embs = _embed_items(model.network, crops, labeled, size, num_workers, "teacher memory")
    labels = torch.as_tensor(crops.labels[labeled], device=model.device)
    unlabeled = None
    if with_queue:
        pool = np.flatnonzero(crops.labels < 0).tolist()
        chosen = random.Random(seed).sample(pool, min(queue_size, len(pool)))
        unlabeled = _embed_items(model.network, crops, chosen, size, num_workers, "teacher queue")
    generator = torch.Generator().manual_seed(seed)
    model.criterion.initialize(embs, labels, unlabeled, generator)
    logger.info("teacher memory initialized from %d labeled crops%s", len(labeled),
                f" and {len(unlabeled)} unlabeled" if unlabeled is not None else "")


def _embed_items(network, crops, items, size, num_workers, desc) -> torch.Tensor:
    """Embeddings of the given crop indices (one job per image holding some), in item order."""
    by_image = {}
    for item in items:
        i, j = crops.items[item]
        by_image.setdefault(i, []).append((item, j))
    images = sorted(by_image)
    jobs = [(crops.dicts[i]["file_name"],
             [crops.dicts[i]["annotations"][j]["bbox"] for _, j in by_image[i]]) for i in images]
    parts = embed_boxes(network, jobs, size, next(network.parameters()).device,
                        num_workers=num_workers, desc=desc)
    row_of = {item: row for row, item in
              enumerate(item for i in images for item, _ in by_image[i])}
    stacked = torch.from_numpy(np.concatenate(parts + [np.zeros((0, network.emb_dim), np.float32)]))
    order = torch.tensor([row_of[item] for item in items], dtype=torch.long)
    return stacked[order].to(next(network.parameters()).device)
