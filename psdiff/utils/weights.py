"""Reading `.pth` files: the one place psdiff calls `torch.load`, and DDP's `module.` prefix.

Checkpoints, ImageNet trunk weights and teacher weights are all read on CPU with
`weights_only=True` (a file can never run code), and a missing or unreadable file is one
`PsdiffError` line that names what the file was for and its path.
"""

import os

import torch

from psdiff.utils.errors import PsdiffError

DDP_PREFIX = "module."  # what DistributedDataParallel puts before every parameter name


def load_pth(path: str, what: str):
    """The object saved in `path`. `what` (the config key that named the file, or e.g.
    "checkpoint") starts the error line of a missing file or one torch cannot read safely."""
    if not os.path.isfile(path):
        raise PsdiffError(f"{what}: no such file: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, foreign pickle, truncated zip: one line, not a trace
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PsdiffError(f"{what}: cannot read {path}: {reason}")


def strip_ddp_prefix(state: dict) -> dict:
    """`state` without the `module.` of a model saved inside its DDP wrapper (every key has
    it then); any other state dict is returned as it is."""
    if state and all(key.startswith(DDP_PREFIX) for key in state):
        return {key[len(DDP_PREFIX):]: value for key, value in state.items()}
    return state
