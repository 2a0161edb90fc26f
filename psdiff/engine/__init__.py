"""Training engine: the loop and its hooks, checkpoints, distributed launch, run setup."""

from .checkpoint import Checkpointer, load_checkpoint_file
from .defaults import (
    DefaultTrainer,
    add_config_arguments,
    auto_scale_workers,
    default_argument_parser,
    default_setup,
    save_eval_results,
    setup_cfg,
)
from .hooks import EvalHook, IterationTimer, LRScheduler, PeriodicCheckpointer, PeriodicWriter
from .launch import launch, launch_from_args
from .train_loop import AMPTrainer, HookBase, NonFiniteLossError, SimpleTrainer, TrainerBase

__all__ = [
    "AMPTrainer",
    "Checkpointer",
    "DefaultTrainer",
    "EvalHook",
    "HookBase",
    "IterationTimer",
    "LRScheduler",
    "NonFiniteLossError",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "SimpleTrainer",
    "TrainerBase",
    "add_config_arguments",
    "auto_scale_workers",
    "default_argument_parser",
    "default_setup",
    "launch",
    "launch_from_args",
    "load_checkpoint_file",
    "save_eval_results",
    "setup_cfg",
]
