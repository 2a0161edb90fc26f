"""Learning-rate schedule of the paper (Section V-A3): linear warm-up, then multi-step decay.

The lr of iteration `t` is a closed-form function of `t` (no accumulated state), so a resumed
run recomputes exactly the lr an uninterrupted run would have used.
"""

import bisect
import logging

import torch

from psdiff.utils.errors import PsdiffError

logger = logging.getLogger(__name__)


def warmup_multistep_factor(
    iteration: int, steps, gamma: float, warmup_iters: int, warmup_factor: float, warmup_method: str
) -> float:
    """Multiplier of the base lr at `iteration`: gamma^(#steps passed) times the warm-up factor.

    Linear warm-up (Detectron2): factor * (1 - a) + a with a = iteration / warmup_iters, so the
    lr rises from `warmup_factor * base_lr` at iteration 0 to `base_lr` at `warmup_iters`.
    "constant" keeps `warmup_factor` for the whole warm-up.
    """
    decay = gamma ** bisect.bisect_right(list(steps), iteration)
    if iteration >= warmup_iters:
        return decay
    if warmup_method == "constant":
        return decay * warmup_factor
    if warmup_method == "linear":
        alpha = iteration / warmup_iters
        return decay * (warmup_factor * (1 - alpha) + alpha)
    raise PsdiffError(f"unknown SOLVER.WARMUP_METHOD {warmup_method!r}: use 'linear' or 'constant'")


class WarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """Each param group's lr = its initial lr x `warmup_multistep_factor(iteration)`; step once
    per iteration. Group multipliers (e.g. the backbone's) are kept because they scale the
    group's initial lr."""

    def __init__(
        self,
        optimizer,
        steps,
        gamma: float = 0.1,
        warmup_iters: int = 1000,
        warmup_factor: float = 0.001,
        warmup_method: str = "linear",
        max_iter: int = None,
        last_epoch: int = -1,
    ):
        steps = sorted(int(s) for s in steps)
        if max_iter is not None and any(s >= max_iter for s in steps):
            logger.warning(f"SOLVER.STEPS {steps} reach MAX_ITER {max_iter}: those never apply")
        self.steps = steps
        self.gamma = gamma
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        factor = warmup_multistep_factor(
            self.last_epoch, self.steps, self.gamma, self.warmup_iters, self.warmup_factor,
            self.warmup_method,
        )
        return [base_lr * factor for base_lr in self.base_lrs]

    _get_closed_form_lr = get_lr
