"""Checkpoints: model + optimizer + scheduler + trainer state, written atomically, loaded strictly.

Detectron2's Checkpointer, with the safety the design asks for: a checkpoint is written to a
temporary file and renamed (a crash never leaves a half-written file under the final name),
read with `torch.load(..., weights_only=True)`, and a model that does not match it is
reported in one line naming the keys at fault.
"""

import errno
import logging
import os
import shutil

import torch
from torch.nn.parallel import DistributedDataParallel

from psdiff.utils import comm
from psdiff.utils.errors import PsdiffError
from psdiff.utils.io import atomic_write
from psdiff.utils.weights import load_pth, strip_ddp_prefix

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"  # file naming the newest checkpoint in the folder
# errors of a write that ran out of room; torch.save reports the same as a RuntimeError
# ("[enforce fail at inline_container.cc] unexpected pos ...")
_NO_ROOM = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def _short_list(keys, limit: int = 3) -> str:
    """The first `limit` keys, and how many more there are."""
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _shape(value):
    """A tensor's shape as a tuple; None for the non-tensor entries a state dict may hold."""
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _mismatch_message(model_state: dict, loaded_state: dict) -> str:
    """'' if the two state dicts have the same keys and shapes, else one line naming them."""
    missing = model_state.keys() - loaded_state.keys()
    unexpected = loaded_state.keys() - model_state.keys()
    shapes = [
        f"{k} {_shape(loaded_state[k])} vs {_shape(model_state[k])}"
        for k in model_state.keys() & loaded_state.keys()
        if _shape(loaded_state[k]) != _shape(model_state[k])
    ]
    parts = []
    if missing:
        parts.append(f"missing keys: {_short_list(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_short_list(unexpected)}")
    if shapes:
        parts.append(f"shape mismatch (checkpoint vs model): {_short_list(shapes)}")
    return "; ".join(parts)


def load_checkpoint_file(path: str) -> dict:
    """Read a psdiff checkpoint (a dict with a "model" state dict) with `weights_only=True`."""
    checkpoint = load_pth(path, "checkpoint")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise PsdiffError(f"{path} is not a psdiff checkpoint (no 'model' state dict in it)")
    return checkpoint


class Checkpointer:
    """Saves and loads a model with any objects that have `state_dict`/`load_state_dict`.

    `save` collects the state dicts on every rank (so a checkpointable may gather across
    ranks; call it on all ranks) and only rank 0 writes (none with `save_to_disk=False`); a
    failed write is raised on every rank. `save_dir/last_checkpoint` names the newest file,
    which `--resume` continues from.
    """

    def __init__(self, model: torch.nn.Module, save_dir: str = "", *, save_to_disk: bool = True,
                 **checkpointables):
        self.model = unwrap_model(model)
        self.save_dir = save_dir
        self.save_to_disk = save_to_disk
        self.checkpointables = checkpointables

    def save(self, name: str, **extra) -> None:
        """Write `save_dir/{name}.pth` atomically and point `last_checkpoint` at it."""
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(extra)
        if self.save_dir and self.save_to_disk:
            comm.run_on_main(lambda: self._write(f"{name}.pth", data))

    def _write(self, basename: str, data: dict) -> None:
        """Rank 0's part of `save`; a failed write becomes one PsdiffError line (the previous
        checkpoint, and `last_checkpoint` naming it, are left as they were)."""
        path = os.path.join(self.save_dir, basename)
        logger.info(f"Saving checkpoint to {path}")
        try:
            atomic_write(path, lambda f: torch.save(data, f))
            self.tag_last_checkpoint(basename)
        except (OSError, RuntimeError) as e:
            if isinstance(e, OSError) and e.errno not in _NO_ROOM:
                raise PsdiffError(f"cannot write checkpoint {path}: {e.strerror or e}")
            raise PsdiffError(f"cannot write checkpoint {path}: the disk is full or the write "
                              f"failed ({self._free_space()}); {self._previous()}")

    def _free_space(self) -> str:
        try:
            free = shutil.disk_usage(self.save_dir).free
        except OSError:
            return f"free space in {self.save_dir} unknown"
        return f"{free / 2**20:.0f} MiB free in {self.save_dir}"

    def _previous(self) -> str:
        """What a failed save leaves to resume from."""
        if not self.has_checkpoint():
            return "no earlier checkpoint exists"
        return f"the previous checkpoint {self.get_checkpoint_file()} is kept"

    def tag_last_checkpoint(self, basename: str) -> None:
        path = os.path.join(self.save_dir, LAST_CHECKPOINT)
        atomic_write(path, lambda f: f.write(basename.encode()))

    def has_checkpoint(self) -> bool:
        """Whether `save_dir` has a `last_checkpoint` to resume from."""
        return bool(self.save_dir) and os.path.isfile(os.path.join(self.save_dir, LAST_CHECKPOINT))

    def get_checkpoint_file(self) -> str:
        """Path of the newest checkpoint ("" if there is none)."""
        if not self.has_checkpoint():
            return ""
        with open(os.path.join(self.save_dir, LAST_CHECKPOINT)) as f:
            return os.path.join(self.save_dir, f.read().strip())

    def load(self, path: str, checkpointables=None) -> dict:
        """Load the model (strictly) and the named checkpointables (all by default) from
        `path`; returns what is left of the checkpoint (e.g. its "config" string)."""
        if not path:
            logger.info("No checkpoint given: the model keeps its initialization")
            return {}
        logger.info(f"Loading checkpoint from {path}")
        checkpoint = load_checkpoint_file(path)
        self._load_model(checkpoint.pop("model"), path)
        names = self.checkpointables.keys() if checkpointables is None else checkpointables
        for key in names:
            if key not in checkpoint:
                raise PsdiffError(f"checkpoint {path} has no '{key}' state to resume from")
            try:
                self.checkpointables[key].load_state_dict(checkpoint.pop(key))
            except (ValueError, KeyError, RuntimeError) as e:
                reason = str(e).splitlines()[0]
                raise PsdiffError(f"checkpoint {path}: cannot restore '{key}': {reason}")
        return checkpoint

    def _load_model(self, state: dict, path: str) -> None:
        state = strip_ddp_prefix(state)
        message = _mismatch_message(self.model.state_dict(), state)
        if message:
            raise PsdiffError(f"checkpoint {path} does not match the model: {message}")
        self.model.load_state_dict(state, strict=True)

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict:
        """With `resume` and a `last_checkpoint`, restore everything from it; otherwise load
        only the model weights from `path` (e.g. `MODEL.WEIGHTS`; "" = keep the init)."""
        if resume and self.has_checkpoint():
            return self.load(self.get_checkpoint_file())
        return self.load(path, checkpointables=[])
