"""Run the frozen teacher on the boxes of many images: Teacher(S, b0) of Eq. 11, in bulk.

Used by the memory initialization, the teacher's retrieval evaluation and `build_targets`, which
makes the e0 cache (its format and reader: psdiff/data/teacher_targets.py). Images are split
over ranks and the results gathered, so every rank ends up with every embedding.
"""

import json
import logging

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from psdiff.data.teacher_targets import CACHE_FORMAT, teacher_fingerprint
from psdiff.utils import comm
from psdiff.utils.image import read_image

from .crops import crop_box, flip_box, to_tensor

logger = logging.getLogger(__name__)


class _BoxCrops(Dataset):
    """Job i = (file_name, boxes) -> (i, crops [n, 3, H, W]), optionally of the flipped image."""

    def __init__(self, jobs, size, flip):
        self.jobs, self.size, self.flip = jobs, tuple(size), flip

    def __len__(self):
        return len(self.jobs)

    def __getitem__(self, i):
        file_name, boxes = self.jobs[i]
        image = read_image(file_name)
        if self.flip:
            width = image.shape[1]
            image = np.ascontiguousarray(image[:, ::-1])
            boxes = [flip_box(box, width) for box in boxes]
        crops = [to_tensor(crop_box(image, box, self.size)) for box in boxes]
        return i, torch.stack(crops) if crops else torch.zeros(0, 3, *self.size)


def _concat(items):
    return [i for i, _ in items], torch.cat([c for _, c in items])


@torch.no_grad()
def embed_boxes(network, jobs, size, device="cpu", images_per_batch: int = 16,
                num_workers: int = 0, flip: bool = False, desc: str = "teacher") -> list:
    """Embeddings (float32 numpy [n_i, D], L2-normalized) of the boxes of each job.

    `jobs` is a list of (file_name, boxes); with `flip` each box is cropped from the
    horizontally flipped image at its flipped position (the e0 of a flipped training image).
    """
    was_training = network.training
    network.eval()
    mine = list(range(comm.get_rank(), len(jobs), comm.get_world_size()))
    loader = DataLoader(_BoxCrops([jobs[i] for i in mine], size, flip), batch_size=images_per_batch,
                        num_workers=num_workers, collate_fn=_concat)
    results = {}
    for indices, crops in tqdm(loader, desc=desc, disable=not comm.is_main_process()):
        emb = network(crops.to(device))["embedding"].float().cpu().numpy() if len(crops) else \
            np.zeros((0, network.emb_dim), dtype=np.float32)
        counts = [len(jobs[mine[i]][1]) for i in indices]
        for i, part in zip(indices, np.split(emb, np.cumsum(counts)[:-1])):
            results[mine[i]] = part
    network.train(was_training)
    gathered = {}
    for part in comm.all_gather(results):
        gathered.update(part)
    return [gathered[i] for i in range(len(jobs))]


def dataset_jobs(dataset_dicts) -> list:
    """One job per image: its file and its annotated boxes, in annotation order."""
    return [(d["file_name"], [a["bbox"] for a in d["annotations"]]) for d in dataset_dicts]


def build_targets(network, dataset_dicts, dataset_name: str, size, device="cpu",
                  num_workers: int = 0) -> dict:
    """Run the frozen teacher on every box of every image, unflipped and flipped."""
    jobs = dataset_jobs(dataset_dicts)
    emb = embed_boxes(network, jobs, size, device, num_workers=num_workers, desc="e0")
    emb_flip = embed_boxes(network, jobs, size, device, num_workers=num_workers, flip=True,
                           desc="e0 flipped")
    counts = [len(d["annotations"]) for d in dataset_dicts]
    dim = network.emb_dim
    meta = {"format": CACHE_FORMAT, "dataset": dataset_name,
            "teacher_fingerprint": teacher_fingerprint(network.state_dict()),
            "emb_dim": dim, "input_size": list(size)}
    return {
        "image_ids": np.array([d["image_id"] for d in dataset_dicts]),
        "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "boxes": np.array([a["bbox"] for d in dataset_dicts for a in d["annotations"]],
                          dtype=np.float32).reshape(-1, 4),
        "embeddings": np.concatenate(emb + [np.zeros((0, dim), np.float32)]),
        "embeddings_flip": np.concatenate(emb_flip + [np.zeros((0, dim), np.float32)]),
        "meta": json.dumps(meta),
    }
