"""The training loop: data -> loss dict -> backward -> step, everything else in hooks.

Detectron2's `engine/train_loop.py` in small: `TrainerBase` runs the iterations and calls the
hooks around each; `SimpleTrainer` does one optimization step; `AMPTrainer` is the same step
under autocast (a variant of the step, not an `if` in every hook).

Ctrl-C (or SIGTERM) is deferred to the end of the running iteration: the loop then stops on
every rank, the hooks' `after_train` sees `trainer.interrupted` (the checkpointer saves the
state at that iteration), and `KeyboardInterrupt` is raised. A second Ctrl-C acts at once.
"""

import logging
import math
import signal
import threading
import time
import weakref

import torch
import torch.distributed as dist

from psdiff.utils import comm
from psdiff.utils.env import get_rng_state, set_rng_state
from psdiff.utils.errors import PsdiffError
from psdiff.utils.events import EventStorage, get_event_storage

logger = logging.getLogger(__name__)


class NonFiniteLossError(PsdiffError, FloatingPointError):
    """A loss became NaN or infinite, or the forward pass stopped on non-finite predictions
    (a FloatingPointError, e.g. PSDiff's matcher); the one-line message names the iteration and
    every loss term when known (a PsdiffError: usually a setting such as the lr, and tools
    print it as one line)."""


class HookBase:
    """Something run around the training loop; `self.trainer` is set by `register_hooks`."""

    trainer = None

    def before_train(self):
        pass

    def after_train(self):
        """Called even when training fails; check `trainer.completed` / `trainer.interrupted`."""

    def before_step(self):
        pass

    def after_step(self):
        pass

    def state_dict(self) -> dict:
        """State saved in checkpoints (under the hook's class name); empty = nothing."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class _DeferredInterrupt:
    """While active, the first SIGINT (Ctrl-C) or SIGTERM (a cluster's preemption) only sets
    `requested`; the handlers that were installed before come back, so a second signal acts
    at once. Signals can only be handled in the main thread; elsewhere this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _restore(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum, frame):
        self.requested = True
        self._restore()
        logger.warning(f"{signal.Signals(signum).name} received: stopping after this iteration "
                       "(send it again to abort at once)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.getsignal(s) for s in self.SIGNALS}
            for signum in self.SIGNALS:
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        self._restore()


def _any_rank(flag: bool) -> bool:
    """Whether `flag` is set on any rank, so every rank stops at the same iteration."""
    if comm.get_world_size() == 1:
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # nccl reduces GPU tensors only
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class TrainerBase:
    """Runs iterations `start_iter .. max_iter-1`, calling the hooks around each one.

    After `train()`, `completed` says all iterations ran and `interrupted` that a Ctrl-C
    stopped the loop after iteration `self.iter` finished; neither is set after an error.
    Its `state_dict` (iteration and every rank's RNG states) makes resuming bit-identical.
    """

    def __init__(self):
        self._hooks = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.completed = False
        self.interrupted = False
        self.storage = None

    def register_hooks(self, hooks) -> None:
        """Append hooks (None entries are skipped); they run in the order given."""
        for hook in hooks:
            if hook is None:
                continue
            hook.trainer = weakref.proxy(self)  # hooks must not keep the trainer alive
            self._hooks.append(hook)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run the loop; raises KeyboardInterrupt after saving state if interrupted."""
        logger.info(f"Starting training from iteration {start_iter}")
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self.completed = self.interrupted = False
        with EventStorage(start_iter) as self.storage, _DeferredInterrupt() as interrupt:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                    if self.iter + 1 < max_iter and _any_rank(interrupt.requested):
                        self.interrupted = True
                        break
                else:
                    self.iter = max_iter  # Detectron2's convention: iter == max_iter when done
                    self.completed = True
            except BaseException:
                self._after_train_after_error()
                raise
            self.after_train()
        if self.interrupted:
            raise KeyboardInterrupt(f"training interrupted after iteration {self.iter}")

    def before_train(self):
        for hook in self._hooks:
            hook.before_train()

    def after_train(self):
        self.storage.iter = self.iter
        for hook in self._hooks:
            hook.after_train()

    def _after_train_after_error(self) -> None:
        """`after_train` while an error propagates: should a hook fail too (writers on a full
        disk), that is logged, and the first error stays the one the user sees."""
        try:
            self.after_train()
        except Exception as e:
            logger.error(f"while stopping on an error, a hook's after_train failed too: {e}")

    def before_step(self):
        self.storage.iter = self.iter
        for hook in self._hooks:
            hook.before_step()

    def after_step(self):
        for hook in self._hooks:
            hook.after_step()

    def run_step(self):
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Iteration, every rank's RNG states (gathered to rank 0: call on all ranks) and the
        hooks' states."""
        state = {"iteration": self.iter, "rng_states": comm.gather(get_rng_state())}
        hooks = {type(h).__qualname__: h.state_dict() for h in self._hooks if h.state_dict()}
        if hooks:
            state["hooks"] = hooks
        return state

    def load_state_dict(self, state: dict) -> None:
        self.iter = state["iteration"]
        rng_states = state.get("rng_states", [])
        if len(rng_states) == comm.get_world_size():
            set_rng_state(rng_states[comm.get_rank()])
        else:
            logger.warning(
                f"RNG states were saved by {len(rng_states)} ranks, this run has "
                f"{comm.get_world_size()}: random streams are not restored"
            )
        for key, hook_state in state.get("hooks", {}).items():
            for hook in self._hooks:
                if type(hook).__qualname__ == key:
                    hook.load_state_dict(hook_state)


class SimpleTrainer(TrainerBase):
    """One step: next batch, `model(batch)` -> dict of losses, sum, backward, clip, step.

    Keys of the model's dict that start with "loss" are summed and backpropagated; other keys
    are extra scalars that are only logged. A non-finite loss, or a FloatingPointError raised
    by the forward pass, stops every rank before its backward pass (`NonFiniteLossError`).
    `data_loader` is any iterable of batches; for a bit-identical resume it must restart at the
    resumed iteration (DefaultTrainer passes `start_iter` to its builder). `grad_clip(params)`
    clips gradients in place (see `psdiff.solver.build_gradient_clipper`).
    """

    def __init__(self, model, data_loader, optimizer, grad_clip=None):
        super().__init__()
        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter = None
        self.optimizer = optimizer
        self.grad_clip = grad_clip

    def _next_batch(self):
        if self._data_loader_iter is None:  # created lazily: the loader may be set after init
            # a DataLoader draws its workers' base seed from the global torch RNG when its
            # iterator starts; forking keeps the training stream the same whether the iterator
            # starts at iteration 0 or at a resumed iteration
            with torch.random.fork_rng(devices=[]):
                self._data_loader_iter = iter(self.data_loader)
        return next(self._data_loader_iter)

    def run_step(self):
        assert self.model.training, "the model was left in eval mode"
        start = time.perf_counter()
        data = self._next_batch()
        data_time = time.perf_counter() - start

        try:
            loss_dict, failure = self.compute_losses(data), ""
        except FloatingPointError as e:  # e.g. the matcher, on NaN or inf predictions
            loss_dict, failure = {}, str(e) or type(e).__name__
        loss_names = [k for k in loss_dict if k.startswith("loss")]
        if not loss_names and not failure:
            raise ValueError(f"the model returned no 'loss*' key, only {sorted(loss_dict)}")
        # one host sync for every scalar; every rank checks before any of them goes backward
        values = [v.detach().float() for v in loss_dict.values()]
        values = dict(zip(loss_dict, torch.stack(values).tolist() if values else []))
        self._check_finite({k: values[k] for k in loss_names}, failure)
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(sum(loss_dict[k] for k in loss_names))
        self.clip_and_step()
        self._write_metrics(values, data_time)

    def compute_losses(self, data) -> dict:
        """The model's dict of scalar tensors for one batch."""
        return self.model(data)

    def backward(self, total_loss: torch.Tensor) -> None:
        total_loss.backward()

    def clip_and_step(self) -> None:
        self._clip()
        self.optimizer.step()

    def _clip(self) -> None:
        if self.grad_clip is not None:
            self.grad_clip([p for g in self.optimizer.param_groups for p in g["params"]])

    def _check_finite(self, losses: dict, failure: str = "") -> None:
        """Stop every rank, before any backward pass, when a loss on any of them is not finite
        or its forward pass raised FloatingPointError (`failure`): the weights never take the
        step and the last checkpoint stays good. Each rank raises the same message."""
        problem = failure and f"the forward pass found non-finite values ({failure})"
        if not problem and not all(math.isfinite(v) for v in losses.values()):
            problem = ", ".join(f"{k}={v:.4g}" for k, v in sorted(losses.items()))
        if not _any_rank(bool(problem)):
            return
        per_rank = comm.all_gather(problem)
        rank = next(r for r, found in enumerate(per_rank) if found)
        where = f" on rank {rank}" if len(per_rank) > 1 else ""
        raise NonFiniteLossError(
            f"non-finite loss at iteration {self.iter}{where}: {per_rank[rank]}; training "
            "stopped, the last checkpoint is intact (resume with --resume)"
        )

    def _write_metrics(self, values: dict, data_time: float) -> None:
        """Average every scalar over ranks (data time: the slowest rank) into the storage."""
        metrics = dict(values, data_time=data_time)
        all_metrics = comm.gather(metrics)
        if not comm.is_main_process():
            return
        storage = get_event_storage()
        storage.put_scalar("data_time", max(m.pop("data_time") for m in all_metrics))
        averaged = {k: sum(m[k] for m in all_metrics) / len(all_metrics) for k in all_metrics[0]}
        total = sum(v for k, v in averaged.items() if k.startswith("loss"))
        storage.put_scalar("total_loss", total)
        storage.put_scalars(**averaged)


class AMPTrainer(SimpleTrainer):
    """The step under `torch.autocast` (bfloat16 or float16); float16 scales the loss with
    `grad_scaler` (checkpoint it beside the optimizer) and unscales before clipping."""

    def __init__(self, model, data_loader, optimizer, grad_clip=None, dtype=torch.bfloat16):
        super().__init__(model, data_loader, optimizer, grad_clip)
        self.dtype = dtype
        self.device_type = next(model.parameters()).device.type
        self.grad_scaler = None
        if dtype == torch.float16:  # bfloat16 has float32's range and needs no loss scaling
            self.grad_scaler = torch.amp.GradScaler(self.device_type)

    def compute_losses(self, data) -> dict:
        with torch.autocast(self.device_type, dtype=self.dtype):
            loss_dict = self.model(data)
        return {k: v.float() for k, v in loss_dict.items()}

    def backward(self, total_loss: torch.Tensor) -> None:
        if self.grad_scaler is None:
            total_loss.backward()
        else:
            self.grad_scaler.scale(total_loss).backward()

    def clip_and_step(self) -> None:
        if self.grad_scaler is None:
            super().clip_and_step()
            return
        self.grad_scaler.unscale_(self.optimizer)  # clip the true gradients
        self._clip()
        self.grad_scaler.step(self.optimizer)  # skipped when the scaled gradients overflowed
        self.grad_scaler.update()
