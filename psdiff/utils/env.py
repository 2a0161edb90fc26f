"""The run's environment: versions and git commit for the log, the device check, seeding, and RNG
snapshots.

A run is self-describing (docs/architecture.md, "Self-describing runs"): its log names the
software it ran on and the commit of the code; its checkpoints hold every random generator's
state so that a resumed run draws the same numbers as an uninterrupted one.
"""

import os
import platform
import random
import subprocess
import sys

import numpy as np
import torch

from .errors import PsdiffError

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def get_git_commit() -> str:
    """The commit of the psdiff checkout ("+dirty" if it has local changes), or "unknown"."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_REPO_ROOT, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_REPO_ROOT, capture_output=True, text=True, timeout=10,
        )
        return commit.stdout.strip() + ("+dirty" if status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def collect_env_info() -> str:
    """A small table of the versions and devices that decide a run's numbers."""
    import torchvision

    rows = [
        ("sys.platform", sys.platform),
        ("Python", sys.version.replace("\n", " ")),
        ("machine", platform.machine()),
        ("numpy", np.__version__),
        ("PyTorch", f"{torch.__version__} @ {os.path.dirname(torch.__file__)}"),
        ("torchvision", torchvision.__version__),
        ("CUDA available", torch.cuda.is_available()),
        ("CUDA (build)", torch.version.cuda),
        ("cuDNN", torch.backends.cudnn.version() if torch.cuda.is_available() else None),
    ]
    for index in range(torch.cuda.device_count()):
        rows.append((f"GPU {index}", torch.cuda.get_device_name(index)))
    rows.append(("CPU threads", torch.get_num_threads()))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def check_device(device: str) -> torch.device:
    """MODEL.DEVICE as a torch.device; a CUDA device on a machine without CUDA is one line."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PsdiffError(f"MODEL.DEVICE is {device!r} but CUDA is not available; "
                          "add MODEL.DEVICE cpu")
    return torch.device(device)


def seed_all_rng(seed: int) -> int:
    """Seed python, numpy and torch (CPU and CUDA); returns the seed. A run's seed is drawn in
    one place only, `engine.defaults` for SEED < 0, so it is saved with the run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def get_rng_state() -> dict:
    """Every global generator's state as tensors and plain numbers, loadable with
    `torch.load(weights_only=True)` (numpy's key array is stored as an int64 tensor)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {
            "name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this rank's GPU only: no context elsewhere
    return state


def set_rng_state(state: dict) -> None:
    """Restore the generators from `get_rng_state()`'s snapshot."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    np_state = state["numpy"]
    np.random.set_state((
        np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
        np_state["has_gauss"], np_state["gauss"],
    ))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
