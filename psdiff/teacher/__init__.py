"""The ReID teacher of Eq. 11: supervised HHCL on ground-truth crops, and PSDiff's e0 targets.

network.py (ResNet + BNNeck embedding), memory.py (HHCL hybrid memory), losses.py (HHCL and
S-ReID criteria), crops.py (crops, P x K sampler), model.py (network + criterion), trainer.py
(training on the engine), retrieval.py (the teacher's own evaluation), inference.py (bulk
embedding of boxes) and targets.py (the e0 cache and `attach_targets`).
"""

from .crops import CropDataset, PKBatchSampler, crop_box, flip_box
from .losses import HHCL, SREID, TEACHER_LOSS_REGISTRY, build_teacher_loss
from .memory import HybridMemory
from .model import TeacherModel, initialize_memory
from .network import ReIDNetwork, load_network_state, load_teacher
from .retrieval import evaluate_teacher, retrieval_metrics
from .targets import (
                      attach_targets,
                      attach_targets_from_config,
                      build_targets,
                      load_targets,
                      save_targets,
                      teacher_fingerprint,
)

__all__ = [
    "CropDataset",
    "HHCL",
    "HybridMemory",
    "PKBatchSampler",
    "ReIDNetwork",
    "SREID",
    "TEACHER_LOSS_REGISTRY",
    "TeacherModel",
    "attach_targets",
    "attach_targets_from_config",
    "build_targets",
    "build_teacher_loss",
    "crop_box",
    "evaluate_teacher",
    "flip_box",
    "initialize_memory",
    "load_network_state",
    "load_targets",
    "load_teacher",
    "retrieval_metrics",
    "save_targets",
    "teacher_fingerprint",
]
