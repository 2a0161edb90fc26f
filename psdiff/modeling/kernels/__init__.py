"""Fused Triton kernels, each the twin of a plain PyTorch function kept beside it.

A kernel module imports triton (shipped with CUDA builds of torch), so callers import it only
once `fused_applies` says yes: CPU-only installs never need triton. TRITON_INTERPRET=1 runs the
kernels on CPU tensors in Triton's interpreter; Triton reads it once, when it is imported.
"""

import os

import torch


def fused_applies(tensor) -> bool:
    """Whether a forward-only fused kernel may replace its twin on `tensor`: no gradient is
    being recorded, and the tensor is on CUDA or TRITON_INTERPRET=1 runs Triton on the CPU."""
    if torch.is_grad_enabled():
        return False
    return tensor.is_cuda or os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on")
