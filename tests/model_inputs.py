"""Model inputs for the model tests: small scenes of colored "persons" with teacher targets."""

import torch
from tiny_config import EMB_DIM

COLORS = [(230, 60, 60), (60, 230, 60), (60, 60, 230), (230, 230, 60)]  # BGR per identity


def scene(image_id, boxes, size=(96, 128), seed=0, original_scale=1.0):
    """A model input: dark noise with one colored rectangle per box (identity = its index),
    and teacher embeddings that depend only on the identity, as a trained teacher's would."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    image = torch.randint(0, 40, (3, height, width), generator=generator, dtype=torch.uint8)
    for pid, (x1, y1, x2, y2) in enumerate(boxes):
        image[:, int(y1): int(y2), int(x1): int(x2)] = torch.tensor(COLORS[pid])[:, None, None]
    identities = torch.randn(len(COLORS), EMB_DIM, generator=torch.Generator().manual_seed(7))
    return {
        "image": image,
        "image_id": image_id,
        "file_name": f"/nonexistent/{image_id}",
        "height": int(height * original_scale),
        "width": int(width * original_scale),
        "instances": {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "pids": torch.arange(len(boxes)),
            "embeddings": torch.nn.functional.normalize(identities[: len(boxes)], dim=-1),
        },
    }


PERSONS = [[10, 20, 40, 80], [50, 10, 80, 90], [90, 30, 120, 85]]
