"""The PSDiff model: `build_model(cfg)` builds the meta-architecture named in the config."""

from . import meta_arch  # noqa: F401  (registers "PSDiff")
from .build import META_ARCH_REGISTRY, build_model, inference_model

__all__ = ["META_ARCH_REGISTRY", "build_model", "inference_model"]
