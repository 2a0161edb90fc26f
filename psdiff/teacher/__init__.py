"""The ReID teacher of Eq. 11: supervised HHCL on ground-truth crops, and PSDiff's e0 targets.

network.py (ResNet + BNNeck embedding), memory.py (HHCL hybrid memory), losses.py (HHCL and
S-ReID criteria), crops.py (crops, P x K sampler), model.py (network + criterion), trainer.py
(training on the engine), retrieval.py (the teacher's evaluation: the search protocol on
ground-truth boxes) and inference.py (bulk embedding of boxes, and `build_targets`, the e0
cache that psdiff/data/teacher_targets.py reads back into the training dicts).
"""

from .crops import CropDataset, PKBatchSampler, crop_box, flip_box
from .inference import build_targets
from .losses import HHCL, SREID, TEACHER_LOSS_REGISTRY, build_teacher_loss
from .memory import HybridMemory
from .model import TeacherModel, initialize_memory
from .network import ReIDNetwork, load_teacher
from .retrieval import evaluate_teacher, ground_truth_predictions, teacher_metrics

__all__ = [
    "CropDataset",
    "HHCL",
    "HybridMemory",
    "PKBatchSampler",
    "ReIDNetwork",
    "SREID",
    "TEACHER_LOSS_REGISTRY",
    "TeacherModel",
    "build_targets",
    "build_teacher_loss",
    "crop_box",
    "evaluate_teacher",
    "flip_box",
    "ground_truth_predictions",
    "initialize_memory",
    "load_teacher",
    "teacher_metrics",
]
