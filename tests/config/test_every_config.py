"""Every YAML file under configs/ builds, through the normal config -> model path, what its tool
trains, and that model takes one training step's forward on a tiny input: a broken `_BASE_`, an
unknown key or a bad architecture in any ablation, Swin-B, cross-dataset or teacher config fails
here (as timm tests every registered model). New files are picked up by the glob.

Tiny overrides only change what the weights start from and where they run (CPU, no ImageNet
file), never the architecture; inputs are small images and crops.
"""

import glob
import os

import pytest
import torch

from psdiff.engine import DefaultTrainer, default_argument_parser, setup_cfg
from psdiff.teacher.model import TeacherModel
from psdiff.teacher.network import ReIDNetwork

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(os.path.relpath(p, REPO)
                 for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))
TEACHER_CONFIGS = os.path.join("configs", "teacher") + os.sep  # trained by train_teacher.py
TINY = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAINED", "", "MODEL.BACKBONE.INIT_FROM_TEACHER",
        "False", "TEACHER.BACKBONE.PRETRAINED", ""]


def _cfg(path: str):
    """The config as a tool reads it: --config-file, then the tiny overrides."""
    args = default_argument_parser(train=False, distributed=False).parse_args(
        ["--config-file", os.path.join(REPO, path), *TINY])
    return setup_cfg(args)


def _crops(cfg, count: int) -> torch.Tensor:
    """`count` random normalized crops of the teacher's TEACHER.INPUT_SIZE."""
    return torch.randn(count, 3, *cfg.TEACHER.INPUT_SIZE)


def test_the_glob_sees_every_kind_of_config():
    assert len(CONFIGS) >= 22
    for part in ("Base-PSDiff", "swinb", "ablations", "cross", "synthetic", "teacher"):
        assert any(part in path for path in CONFIGS), part


@pytest.mark.parametrize("path", [p for p in CONFIGS if not p.startswith(TEACHER_CONFIGS)])
def test_psdiff_config_builds_and_takes_a_training_forward(path):
    torch.manual_seed(0)
    cfg = _cfg(path)
    model = DefaultTrainer.build_model(cfg).train()
    dim = cfg.MODEL.PSDIFF.EMB_DIM
    boxes = torch.tensor([[8.0, 4.0, 40.0, 60.0], [50.0, 10.0, 90.0, 62.0]])
    inputs = [{"image": torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8), "height": 64,
               "width": 96, "image_id": "a.jpg",
               "instances": {"boxes": boxes, "pids": torch.tensor([1, -1]),
                             "embeddings": torch.nn.functional.normalize(torch.randn(2, dim))}}]
    losses = model(inputs)
    assert losses and all(torch.isfinite(v).all() for v in losses.values())
    # tools/build_targets.py builds the teacher of a PSDiff config: it must fit EMB_DIM
    teacher = ReIDNetwork.from_config(cfg).eval()
    with torch.no_grad():
        assert teacher(_crops(cfg, 2))["embedding"].shape == (2, dim)


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.startswith(TEACHER_CONFIGS)])
def test_teacher_config_builds_and_takes_a_training_forward(path):
    torch.manual_seed(0)
    cfg = _cfg(path)
    dim, classes = cfg.MODEL.PSDIFF.EMB_DIM, 4
    model = TeacherModel.from_config(cfg, classes)
    labels = torch.arange(classes).repeat_interleave(2)
    memory = torch.nn.functional.normalize(torch.randn(len(labels), dim))
    queue = torch.nn.functional.normalize(torch.randn(4, dim))
    model.criterion.initialize(memory, labels, queue, torch.Generator().manual_seed(0))
    model.train()
    losses = model({"images": _crops(cfg, 4), "labels": torch.tensor([0, 1, 2, -1]),
                    "indices": torch.arange(4)})
    assert losses and all(torch.isfinite(v).all() for v in losses.values())
