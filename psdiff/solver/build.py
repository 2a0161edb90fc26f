"""Optimizer, gradient clipping and lr schedule from the config (paper Section V-A3: AdamW)."""

import functools
import logging

import torch

from psdiff.utils.errors import PsdiffError

from .lr_scheduler import WarmupMultiStepLR

logger = logging.getLogger(__name__)


def get_default_optimizer_params(
    model: torch.nn.Module, base_lr: float, weight_decay: float, backbone_multiplier: float = 1.0
) -> list:
    """Param groups: parameters under a module named "backbone" get `base_lr *
    backbone_multiplier`, the rest `base_lr`; frozen and repeated (shared) parameters are left
    out. Every group decays with `weight_decay` (DiffusionDet decays every parameter)."""
    groups = {"backbone": [], "others": []}
    seen = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or param in seen:
            continue
        seen.add(param)
        groups["backbone" if "backbone" in name.split(".") else "others"].append(param)
    multipliers = {"backbone": backbone_multiplier, "others": 1.0}
    return [
        {"params": params, "lr": base_lr * multipliers[name], "weight_decay": weight_decay,
         "name": name}
        for name, params in groups.items() if params
    ]


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """`SOLVER.OPTIMIZER` ("ADAMW", "ADAM" with coupled weight decay as HHCL, or "SGD") over
    the param groups above."""
    params = get_default_optimizer_params(
        model, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.BACKBONE_MULTIPLIER
    )
    if not params:
        raise PsdiffError("the model has no trainable parameters (check MODEL.BACKBONE.FREEZE_AT)")
    name = cfg.SOLVER.OPTIMIZER.upper()
    # fused: one kernel over all parameters instead of a loop of small ones per tensor, about
    # 3x faster a step on a CPU (docs/benchmarks.md); the same update up to float rounding
    if name == "ADAMW":
        return torch.optim.AdamW(params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS),
                                 fused=True)
    if name == "ADAM":
        return torch.optim.Adam(params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS),
                                fused=True)
    if name == "SGD":
        return torch.optim.SGD(params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
                               fused=True)
    raise PsdiffError(
        f"unknown SOLVER.OPTIMIZER {cfg.SOLVER.OPTIMIZER!r}: use 'ADAMW', 'ADAM' or 'SGD'"
    )


def _clip_each_norm(parameters, max_norm: float, norm_type: float) -> None:
    """Clip every parameter's gradient to `max_norm` on its own (Detectron2's "norm")."""
    for param in parameters:
        torch.nn.utils.clip_grad_norm_(param, max_norm, norm_type)


def build_gradient_clipper(cfg):
    """A function clipping the gradients of a list of parameters in place, or None.

    `SOLVER.CLIP_GRADIENTS.CLIP_TYPE`: "full_model" clips the norm of all gradients together
    (DiffusionDet), "norm" each parameter's gradient norm, "value" each gradient entry.
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED:
        return None
    if clip.CLIP_TYPE == "full_model":
        return functools.partial(
            torch.nn.utils.clip_grad_norm_, max_norm=clip.CLIP_VALUE, norm_type=clip.NORM_TYPE
        )
    if clip.CLIP_TYPE == "norm":
        return functools.partial(
            _clip_each_norm, max_norm=clip.CLIP_VALUE, norm_type=clip.NORM_TYPE
        )
    if clip.CLIP_TYPE == "value":
        return functools.partial(torch.nn.utils.clip_grad_value_, clip_value=clip.CLIP_VALUE)
    raise PsdiffError(
        f"unknown SOLVER.CLIP_GRADIENTS.CLIP_TYPE {clip.CLIP_TYPE!r}: "
        "use 'full_model', 'norm' or 'value'"
    )


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> WarmupMultiStepLR:
    """Linear warm-up over `SOLVER.WARMUP_ITERS`, then x`SOLVER.GAMMA` at each `SOLVER.STEPS`."""
    return WarmupMultiStepLR(
        optimizer,
        steps=cfg.SOLVER.STEPS,
        gamma=cfg.SOLVER.GAMMA,
        warmup_iters=cfg.SOLVER.WARMUP_ITERS,
        warmup_factor=cfg.SOLVER.WARMUP_FACTOR,
        warmup_method=cfg.SOLVER.WARMUP_METHOD,
        max_iter=cfg.SOLVER.MAX_ITER,
    )
