"""The meta-architecture registry and `build_model(cfg)` (as Detectron2's meta_arch/build.py),
and `inference_model(cfg, model)`, the form of a built model that inference runs."""

import copy
import logging

from fvcore.common.registry import Registry

from psdiff.utils.env import check_device
from psdiff.utils.errors import PsdiffError

from .backbone.frozen_bn import fold_batchnorm

logger = logging.getLogger(__name__)

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = "Whole models by MODEL.META_ARCHITECTURE, built by from_config(cfg)."


def build_model(cfg):
    """The model named by MODEL.META_ARCHITECTURE, on MODEL.DEVICE; logs its parameter count."""
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in META_ARCH_REGISTRY:
        raise PsdiffError(
            f"MODEL.META_ARCHITECTURE = '{name}' is not registered; choices: "
            f"{sorted(k for k, _ in META_ARCH_REGISTRY)}"
        )
    device = check_device(cfg.MODEL.DEVICE)
    model = META_ARCH_REGISTRY.get(name).from_config(cfg).to(device)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(f"built {name}: {total / 1e6:.2f}M parameters ({trainable / 1e6:.2f}M trainable)")
    return model


def inference_model(cfg, model):
    """What inference runs: `model` or, with TEST.FUSE_BN, an eval-mode copy with its batch
    norms folded into their convs (the same outputs up to float rounding, faster), so that
    `model`, which may go on training, keeps its own."""
    if not cfg.TEST.FUSE_BN:
        return model
    return fold_batchnorm(copy.deepcopy(model).eval())
