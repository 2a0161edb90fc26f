"""An oracle person-search model and helpers for the evaluator tests (also run in spawned ranks).

The oracle reads the test split's ground truth: it detects every person (boxes jittered by
`box_noise` pixels, score 0.9) plus one false positive per image (score 0.6), and embeds a person
as the one-hot vector of its pid plus `emb_noise` Gaussian noise. All noise is seeded by the image
id, so the outputs do not depend on batching or on which rank sees the image. With no noise its
metrics are known exactly: every AP, recall and top-k is 1.
"""

import json
import zlib

import numpy as np
import torch
from torch import nn

from psdiff.config import get_cfg
from psdiff.data import get_search_split

DIM = 64


def _pid_embedding(pid: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """One-hot of the pid (a random direction for unlabeled people) plus noise, L2-normalized."""
    emb = np.zeros(DIM) if pid >= 0 else rng.normal(size=DIM)
    if pid >= 0:
        emb[pid % DIM] = 1.0
    emb = emb + noise * rng.normal(size=DIM)
    return emb / np.linalg.norm(emb)


class OracleModel(nn.Module):
    """`model(batch)` and `model.embed_queries(batch, boxes)` from the split's ground truth."""

    def __init__(self, gallery: list, queries: list, box_noise: float = 0.0,
                 emb_noise: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))  # a module with a parameter, like a model
        self.annotations = {r["image_id"]: list(r["annotations"]) for r in gallery}
        for q in queries:  # query images outside the gallery know their query persons
            if not any(r["image_id"] == q["image_id"] for r in gallery):
                self.annotations.setdefault(q["image_id"], []).append(q)
        self.box_noise, self.emb_noise = box_noise, emb_noise

    def _rng(self, image_id: str, salt: str) -> np.random.Generator:
        """A generator seeded by the image id: the same on any rank, in any batch."""
        return np.random.default_rng(zlib.crc32(f"{image_id}/{salt}".encode()))

    def forward(self, batch):
        """Every person of each image (jittered) plus one false positive."""
        outputs = []
        for x in batch:
            rng = self._rng(x["image_id"], "detect")
            people = self.annotations[x["image_id"]]
            boxes = [np.asarray(a["bbox"]) + self.box_noise * rng.normal(size=4) for a in people]
            embs = [_pid_embedding(a["pid"], rng, self.emb_noise) for a in people]
            boxes.append([1.0, 1.0, 9.0, 17.0])  # a false positive
            embs.append(_pid_embedding(-1, rng, 0.0))
            outputs.append({
                "boxes": torch.tensor(np.asarray(boxes), dtype=torch.float32),
                "scores": torch.tensor([0.9] * len(people) + [0.6]),
                "embeddings": torch.tensor(np.asarray(embs), dtype=torch.float32),
            })
        return outputs

    def embed_queries(self, batch, boxes):
        """The embedding of the person nearest each box."""
        results = []
        for x, query_boxes in zip(batch, boxes):
            rng = self._rng(x["image_id"], "query")
            people = self.annotations[x["image_id"]]
            embs = []
            for box in np.asarray(query_boxes).reshape(-1, 4):
                nearest = min(people, key=lambda a: np.abs(np.asarray(a["bbox"]) - box).sum())
                embs.append(_pid_embedding(nearest["pid"], rng, self.emb_noise))
            results.append(torch.tensor(np.asarray(embs), dtype=torch.float32).reshape(-1, DIM))
        return results


def make_cfg(root: str, output_dir: str, *opts):
    """A CPU config reading the synthetic sets under `root`, with small test images."""
    cfg = get_cfg()
    cfg.merge_from_list([
        "DATASETS.ROOT", root, "OUTPUT_DIR", output_dir, "MODEL.DEVICE", "cpu",
        "DATALOADER.NUM_WORKERS", 0, "INPUT.MIN_SIZE_TEST", 48, "INPUT.MAX_SIZE_TEST", 80,
        "TEST.IMS_PER_BATCH", 3, *opts])
    return cfg


def oracle_for(cfg, dataset_name: str, box_noise: float, emb_noise: float) -> OracleModel:
    """The oracle of a catalog test set."""
    split = get_search_split(dataset_name, cfg.DATASETS.ROOT, cfg.TEST.GALLERY_SIZE)
    return OracleModel(split.gallery, split.queries, box_noise, emb_noise)


def evaluate_and_dump(root: str, output_dir: str, dataset_name: str, box_noise: float,
                      emb_noise: float, result_file: str, opts: tuple) -> None:
    """A rank's work in the multi-rank test: evaluate the oracle, rank 0 writes the metrics."""
    from psdiff.evaluation import evaluate
    from psdiff.utils import comm

    cfg = make_cfg(root, output_dir, *opts)
    metrics = evaluate(cfg, oracle_for(cfg, dataset_name, box_noise, emb_noise), dataset_name)
    if comm.is_main_process():
        with open(result_file, "w") as f:
            json.dump(metrics, f)
    else:
        assert metrics == {}
