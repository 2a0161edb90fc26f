"""Hooks of the training loop: timer, lr schedule, checkpoints, evaluation and writers.

`DefaultTrainer.build_hooks` registers them in this file's order, which matters: the lr
scheduler steps before a checkpoint is taken (so the saved schedule is the next
iteration's), checkpoints come before evaluation (a crash in evaluation keeps the weights),
and writers come last (so they see this iteration's evaluation results).
"""

import logging
import time

from psdiff.utils import comm
from psdiff.utils.env import get_rng_state, set_rng_state
from psdiff.utils.events import EventWriter

from .train_loop import HookBase

logger = logging.getLogger(__name__)


class IterationTimer(HookBase):
    """Puts each iteration's wall time as "time" (hooks included) and logs the total."""

    def __init__(self):
        self._step_start = None
        self._train_start = None

    def before_train(self):
        self._train_start = time.perf_counter()

    def before_step(self):
        self._step_start = time.perf_counter()

    def after_step(self):
        self.trainer.storage.put_scalar("time", time.perf_counter() - self._step_start)

    def after_train(self):
        iterations = self.trainer.iter - self.trainer.start_iter
        seconds = time.perf_counter() - self._train_start
        if iterations > 0:
            per_iter = seconds / iterations
            logger.info(f"{iterations} iterations in {seconds:.1f} s ({per_iter:.4f} s / it)")


class LRScheduler(HookBase):
    """Steps the lr scheduler after every iteration and puts the current lr as "lr"."""

    def __init__(self, optimizer, scheduler):
        self.optimizer = optimizer
        self.scheduler = scheduler

    def after_step(self):
        # the largest group lr is the base lr (the backbone's may be scaled down)
        lr = max(group["lr"] for group in self.optimizer.param_groups)
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self.scheduler.step()


class PeriodicCheckpointer(HookBase):
    """Saves `model_{iter:07d}` every `period` iterations and `model_final` at the end,
    each with the `extra` entries given (DefaultTrainer adds the config it ran with).

    After a Ctrl-C (`trainer.interrupted`) it saves the iteration that just finished; after
    an error it saves nothing, so the last good checkpoint stays the newest.
    """

    def __init__(self, checkpointer, period: int, file_prefix: str = "model", **extra):
        self.checkpointer = checkpointer
        self.period = period
        self.file_prefix = file_prefix
        self.extra = extra  # saved in every checkpoint as is, e.g. config=cfg.dump()

    def _save(self, name: str) -> None:
        # on every rank: the trainer's state gathers the RNG states of all ranks
        self.checkpointer.save(name, **self.extra)

    def after_step(self):
        iteration = self.trainer.iter
        if iteration + 1 == self.trainer.max_iter:
            self._save(f"{self.file_prefix}_final")
        elif self.period > 0 and (iteration + 1) % self.period == 0:
            self._save(f"{self.file_prefix}_{iteration:07d}")

    def after_train(self):
        if self.trainer.interrupted:
            self._save(f"{self.file_prefix}_{self.trainer.iter:07d}")
            # no rank exits before rank 0 has written: the launcher stops every worker as
            # soon as one exits with the interrupt's non-zero status
            comm.synchronize()


class EvalHook(HookBase):
    """Runs `eval_function() -> dict[str, float]` every `eval_period` iterations (0 = only at
    the end) and puts the results in the storage, so writers send them to metrics.json and
    TensorBoard (at the iteration just finished; the final results at MAX_ITER, as
    Detectron2). The global RNG states are restored afterwards: evaluating does not change
    the random stream of training (a resumed run matches an uninterrupted one)."""

    def __init__(self, eval_period: int, eval_function):
        self.period = eval_period
        self.eval_function = eval_function
        self.last_results = None

    def _do_eval(self):
        rng_state = get_rng_state()
        results = self.eval_function()
        set_rng_state(rng_state)
        bad = {k: v for k, v in results.items() if not isinstance(v, (int, float))}
        if bad:
            raise ValueError(f"the evaluation returned non-numeric metrics: {sorted(bad)}")
        if comm.is_main_process():
            self.trainer.storage.put_scalars(**results, smoothing_hint=False)
        self.last_results = results
        comm.synchronize()  # every rank leaves the evaluation together

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if self.period > 0 and next_iter % self.period == 0 and next_iter != self.trainer.max_iter:
            self._do_eval()

    def after_train(self):
        if self.trainer.completed:  # final evaluation, only when training ran to the end
            self._do_eval()


class PeriodicWriter(HookBase):
    """Calls every writer each `period` iterations, at the last iteration and after training."""

    def __init__(self, writers: list, period: int = 20):
        self.writers = [w for w in writers if isinstance(w, EventWriter)]
        self.period = period

    def after_step(self):
        iteration = self.trainer.iter
        if (iteration + 1) % self.period == 0 or iteration == self.trainer.max_iter - 1:
            for writer in self.writers:
                writer.write()

    def after_train(self):
        for writer in self.writers:
            writer.write()  # e.g. the final evaluation's results
            writer.close()
