"""Start one process per GPU (or CPU worker) and join them into a `torch.distributed` group.

Detectron2's `launch`: `--num-gpus N` spawns N workers on this machine, several machines meet
at `--dist-url`, and a process started by `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK in the
environment) joins its group directly. NCCL on GPU, gloo on CPU.
"""

import logging
import os
import socket
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from psdiff.utils import comm
from psdiff.utils.errors import PsdiffError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)


def _find_free_port() -> int:
    """A TCP port free on this machine right now (for single-machine runs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def _started_by_torchrun() -> bool:
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def _set_local_group(num_machines: int, machine_rank: int, num_per_machine: int) -> None:
    """Create one process group per machine (every rank must create all of them)."""
    for machine in range(num_machines):
        ranks = list(range(machine * num_per_machine, (machine + 1) * num_per_machine))
        group = dist.new_group(ranks)
        if machine == machine_rank:
            comm.set_local_process_group(group)


_INTERRUPTED = 130  # exit status of a worker stopped by Ctrl-C (after saving its state)
_REPORTED = 2  # exit status of a worker that printed its `error: ...` line
_GRACE_S = 10  # after a worker fails, how long the others may take to report and exit


def _run_reporting_errors(main_func, args) -> None:
    """Run a worker's main; a PsdiffError is printed as one line and the worker exits with 2,
    an interrupt (state saved) exits with 130, both without a traceback. Rank 0's error
    re-raised on another rank (MainProcessError) is printed by rank 0 alone.

    A failed worker leaves with `os._exit` once its group is destroyed: under load, the
    interpreter's teardown after an error sometimes met a gloo thread still joinable and
    aborted (status -6 instead of the reported status)."""
    status = 0
    try:
        main_func(*args)
    except PsdiffError as e:
        if not isinstance(e, comm.MainProcessError):
            print(f"error: {e}", file=sys.stderr, flush=True)
        status = _REPORTED
    except KeyboardInterrupt:
        status = _INTERRUPTED
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if status:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _distributed_worker(local_rank, main_func, world_size, num_per_machine, machine_rank,
                        dist_url, backend, args, timeout):
    """Entry point of a spawned worker: join the group, then run `main_func(*args)`."""
    global_rank = machine_rank * num_per_machine + local_rank
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend=backend, init_method=dist_url, world_size=world_size, rank=global_rank,
        timeout=timeout,
    )
    _set_local_group(world_size // num_per_machine, machine_rank, num_per_machine)
    comm.synchronize()
    _run_reporting_errors(main_func, args)


def _launch_torchrun(main_func, backend: str, args, timeout) -> None:
    """Join the group torchrun set up through the environment."""
    local_rank = int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    num_per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
    _set_local_group(world_size // num_per_machine, int(os.environ["RANK"]) // num_per_machine,
                     num_per_machine)
    comm.synchronize()
    _run_reporting_errors(main_func, args)


def launch(main_func, num_gpus_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = None, args=(), backend: str = None, timeout=DEFAULT_TIMEOUT) -> None:
    """Run `main_func(*args)` on `num_machines * num_gpus_per_machine` ranks.

    `backend` defaults to NCCL when CUDA is available, else gloo (N CPU worker processes);
    `dist_url` "auto" (or None on one machine) picks a free local port. Under torchrun the
    spawning arguments are ignored and the environment decides.
    """
    backend = backend or _default_backend()
    if _started_by_torchrun():
        _launch_torchrun(main_func, backend, args, timeout)
        return
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if dist_url in (None, "auto"):
        if num_machines > 1:
            raise PsdiffError("--dist-url auto works on one machine only; give tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if backend == "nccl" and num_gpus_per_machine > torch.cuda.device_count():
        raise PsdiffError(f"--num-gpus {num_gpus_per_machine} but this machine has "
                          f"{torch.cuda.device_count()} GPUs")
    context = mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, backend,
              args, timeout),
        join=False,
        start_method="spawn",
    )
    _join(context)


def launch_from_args(main_func, args, cfg) -> None:
    """`launch(main_func, args)` with the Detectron2 command-line arguments of `args` and the
    backend of `cfg.MODEL.DEVICE` (NCCL on CUDA, gloo on CPU)."""
    launch(main_func, args.num_gpus, num_machines=args.num_machines,
           machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,),
           backend="nccl" if cfg.MODEL.DEVICE.startswith("cuda") else "gloo")


def _join(context) -> None:
    """Wait for the workers. A first Ctrl-C lets them finish their iteration and checkpoint
    (they receive it too); a second one stops them at once. A worker that printed its error
    line ends this process with the same status 2 (SystemExit) and no second message."""
    interrupts = 0
    while True:
        try:
            if context.join(grace_period=_GRACE_S):
                return
        except KeyboardInterrupt:
            interrupts += 1
            if interrupts > 1:
                for process in context.processes:
                    process.terminate()
                raise
            logger.warning("Interrupt received: waiting for the workers to save and exit")
        except mp.ProcessExitedException as e:
            if e.exit_code == _INTERRUPTED:
                raise KeyboardInterrupt(f"worker {e.error_index} stopped") from None
            if e.exit_code == _REPORTED:  # its error line is printed already
                sys.exit(_REPORTED)
            raise PsdiffError(f"worker {e.error_index} exited with status {e.exit_code}") from None
