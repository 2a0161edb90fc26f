"""Mixed precision from the config: one vocabulary, `<SECTION>.AMP.ENABLED` and `.DTYPE`.

SOLVER.AMP is the training step's (engine/train_loop.py AMPTrainer), TEST.AMP the inference's
(evaluation, SearchPredictor, tools/benchmark.py); both name their dtype the same way.
"""

import contextlib

import torch

from .errors import PsdiffError

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}  # *.AMP.DTYPE choices


def amp_dtype(amp_cfg, key: str) -> torch.dtype:
    """The torch dtype of an AMP node's DTYPE; `key` (e.g. "TEST.AMP") names it in errors."""
    if amp_cfg.DTYPE not in AMP_DTYPES:
        raise PsdiffError(f"unknown {key}.DTYPE {amp_cfg.DTYPE!r}: use one of {list(AMP_DTYPES)}")
    return AMP_DTYPES[amp_cfg.DTYPE]


def inference_autocast(cfg):
    """`torch.autocast` on MODEL.DEVICE in TEST.AMP.DTYPE when TEST.AMP.ENABLED, else a no-op."""
    if not cfg.TEST.AMP.ENABLED:
        return contextlib.nullcontext()
    device_type = torch.device(cfg.MODEL.DEVICE).type
    return torch.autocast(device_type, dtype=amp_dtype(cfg.TEST.AMP, "TEST.AMP"))
