"""Optimizer, gradient clipping and learning-rate schedule built from `SOLVER.*`."""

from .build import (
    build_gradient_clipper,
    build_lr_scheduler,
    build_optimizer,
    get_default_optimizer_params,
)
from .lr_scheduler import WarmupMultiStepLR, warmup_multistep_factor

__all__ = [
    "WarmupMultiStepLR",
    "build_gradient_clipper",
    "build_lr_scheduler",
    "build_optimizer",
    "get_default_optimizer_params",
    "warmup_multistep_factor",
]
