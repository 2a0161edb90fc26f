"""Distributed helpers (Detectron2's comm): rank, world size, gathers, all of them no-ops alone.

Every part that shards data or reduces values across ranks uses these, so a single process
without `torch.distributed` initialized behaves as rank 0 of a world of 1.
"""

import torch
import torch.distributed as dist

from .errors import PsdiffError

_LOCAL_PROCESS_GROUP = None  # set by the launcher: the ranks on this machine


def is_dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_ready() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_ready() else 0


def get_local_rank() -> int:
    """Rank of this process on its machine (its GPU index)."""
    if not is_dist_ready() or _LOCAL_PROCESS_GROUP is None:
        return 0
    return dist.get_rank(group=_LOCAL_PROCESS_GROUP)


def set_local_process_group(group) -> None:
    """Called once by the launcher with the process group of this machine's ranks."""
    global _LOCAL_PROCESS_GROUP
    _LOCAL_PROCESS_GROUP = group


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier over all ranks (no-op alone)."""
    if get_world_size() > 1:
        dist.barrier()


def all_gather(data) -> list:
    """Gather any picklable object from every rank; returns the list ordered by rank."""
    if get_world_size() == 1:
        return [data]
    output = [None] * get_world_size()
    dist.all_gather_object(output, data)
    return output


def gather(data, dst: int = 0) -> list:
    """Gather picklable objects on rank `dst` (others get [])."""
    if get_world_size() == 1:
        return [data]
    output = [None] * get_world_size() if get_rank() == dst else None
    dist.gather_object(data, output, dst=dst)
    return output if get_rank() == dst else []


def all_gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equally shaped tensors of all ranks along dim 0, keeping rank order."""
    if get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


class MainProcessError(PsdiffError):
    """Rank 0's error, raised on the other ranks by `run_on_main` (rank 0 reports it)."""


def run_on_main(fn):
    """Run `fn()` on rank 0 only; returns its result there (None elsewhere). If it raises,
    rank 0 re-raises the error and every other rank raises MainProcessError naming it, so no
    rank is left waiting for rank 0 at the next collective. Call it on every rank."""
    result, error, message = None, None, None
    if is_main_process():
        try:
            result = fn()
        except Exception as e:
            error = e
            message = str(e) if isinstance(e, PsdiffError) else f"{type(e).__name__}: {e}"
    message = all_gather(message)[0]
    if error is not None:
        raise error
    if message is not None:
        raise MainProcessError(f"on rank 0: {message}")
    return result
