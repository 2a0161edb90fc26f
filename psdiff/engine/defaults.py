"""What every psdiff tool shares: the command line, config setup, run setup, DefaultTrainer.

Detectron2's `engine/defaults.py`: `default_argument_parser` + `setup_cfg` + `default_setup`
make a run self-describing (merged config.yaml, log.txt with environment, git commit, seed,
world size, batch and lr), and `DefaultTrainer` wires model, optimizer, schedule, loader,
checkpointer and hooks from the config. Subclasses swap parts by overriding classmethods.
"""

import argparse
import json
import logging
import os
import tempfile
import weakref

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from psdiff.config import get_cfg
from psdiff.data import build_train_loader
from psdiff.evaluation import evaluate
from psdiff.modeling import build_model
from psdiff.solver import build_gradient_clipper, build_lr_scheduler, build_optimizer
from psdiff.utils import comm
from psdiff.utils.amp import amp_dtype
from psdiff.utils.env import check_device, collect_env_info, get_git_commit, seed_all_rng
from psdiff.utils.errors import PsdiffError
from psdiff.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from psdiff.utils.io import json_safe, remove_stale_temporaries
from psdiff.utils.logger import setup_logger

from . import hooks
from .checkpoint import Checkpointer, unwrap_model
from .train_loop import AMPTrainer, SimpleTrainer, TrainerBase

logger = logging.getLogger(__name__)


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--config-file` and the trailing `KEY VALUE` overrides (`opts`): what `setup_cfg` reads.
    Every option that a config key already names is given as that key, never as a flag."""
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to a config YAML")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="config overrides as KEY VALUE pairs at the end, e.g. "
                             "MODEL.DEVICE cpu DATASETS.ROOT datasets SOLVER.BASE_LR 1e-4")
    return parser


def default_argument_parser(description: str = "Train or evaluate psdiff from a config.", *,
                            train: bool = True, distributed: bool = True,
                            weights_key: str = "MODEL.WEIGHTS") -> argparse.ArgumentParser:
    """The command line every psdiff tool with a config builds on (Detectron2's arguments).

    `description` is the tool's docstring, usage examples included (--help prints it as it is
    written). Always: --config-file and the KEY VALUE overrides; with `train`, --resume and
    --eval-only (which evaluates the checkpoint named by `weights_key`); with `distributed`,
    --num-gpus, --num-machines, --machine-rank and --dist-url. A tool adds its own flags.
    """
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    if train:
        parser.add_argument("--resume", action="store_true",
                            help="continue from OUTPUT_DIR/last_checkpoint (else start from "
                                 "MODEL.WEIGHTS)")
        parser.add_argument("--eval-only", action="store_true",
                            help=f"only evaluate the checkpoint {weights_key}")
    if distributed:
        parser.add_argument("--num-gpus", type=int, default=1,
                            help="processes per machine (GPUs; CPU workers with MODEL.DEVICE cpu)")
        parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
        parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine")
        parser.add_argument("--dist-url", default="auto",
                            help="tcp://HOST:PORT of machine 0 (several machines); auto on one")
    return parser


def setup_cfg(args, run_config: str = ""):
    """get_cfg(), then `run_config` (a run's dumped config, e.g. the one a predictions file
    keeps), then `--config-file`, then the `KEY VALUE` overrides; frozen."""
    cfg = get_cfg()
    if run_config:
        cfg.merge_from_dump(run_config, "the run's saved config")
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts or []))
    cfg.freeze()
    return cfg


def _check_output_dir(output_dir: str) -> None:
    """Create OUTPUT_DIR and prove a file can be written there."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as e:
        raise PsdiffError(f"OUTPUT_DIR {output_dir!r} is not writable: {e.strerror or e}")


def auto_scale_workers(cfg, num_workers: int):
    """Detectron2's rule: a config written for `SOLVER.REFERENCE_WORLD_SIZE` ranks, run on
    `num_workers`, keeps the images per rank; batch and lr scale linearly, and the schedule
    (iterations, steps, warm-up, checkpoint and eval periods) inversely. 0 = no scaling."""
    reference = cfg.SOLVER.REFERENCE_WORLD_SIZE
    if reference == 0 or reference == num_workers:
        return cfg
    if cfg.SOLVER.IMS_PER_BATCH % reference != 0:
        raise PsdiffError(f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by "
                          f"SOLVER.REFERENCE_WORLD_SIZE {reference}")
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    scale = num_workers / reference
    solver = cfg.SOLVER
    solver.IMS_PER_BATCH = int(round(solver.IMS_PER_BATCH * scale))
    solver.BASE_LR = solver.BASE_LR * scale
    solver.MAX_ITER = int(round(solver.MAX_ITER / scale))
    solver.WARMUP_ITERS = int(round(solver.WARMUP_ITERS / scale))
    solver.STEPS = tuple(int(round(s / scale)) for s in solver.STEPS)
    solver.CHECKPOINT_PERIOD = int(round(solver.CHECKPOINT_PERIOD / scale))
    cfg.TEST.EVAL_PERIOD = int(round(cfg.TEST.EVAL_PERIOD / scale))
    solver.REFERENCE_WORLD_SIZE = num_workers
    logger.info(
        f"Auto-scaling the config from {reference} to {num_workers} ranks: IMS_PER_BATCH "
        f"{solver.IMS_PER_BATCH}, BASE_LR {solver.BASE_LR:g}, MAX_ITER {solver.MAX_ITER}, "
        f"WARMUP_ITERS {solver.WARMUP_ITERS}, STEPS {solver.STEPS}"
    )
    if frozen:
        cfg.freeze()
    return cfg


def _log_batch_and_lr(cfg, world_size: int) -> None:
    """Per-GPU and effective batch and lr after REFERENCE_WORLD_SIZE scaling."""
    scaled = auto_scale_workers(cfg, world_size)
    batch = scaled.SOLVER.IMS_PER_BATCH
    if batch % world_size != 0:
        raise PsdiffError(
            f"SOLVER.IMS_PER_BATCH {batch} is not divisible by the world size {world_size}"
        )
    logger.info(
        f"World size {world_size}: {batch // world_size} images per GPU, effective batch {batch}, "
        f"base lr {scaled.SOLVER.BASE_LR:g}, {scaled.SOLVER.MAX_ITER} iterations"
    )


def _draw_run_seed(cfg, resume: bool) -> int:
    """Rank 0's seed for a run with SEED < 0: with --resume the one the resumed run drew
    (its OUTPUT_DIR/config.yaml), else a fresh one."""
    path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
    if resume and os.path.isfile(path):
        with open(path) as f:
            previous = int((yaml.safe_load(f) or {}).get("SEED", -1))
        if previous >= 0:
            return previous
    return int.from_bytes(os.urandom(4), "big") % 2**31


def _settle_seed(cfg, resume: bool) -> None:
    """Replace SEED < 0 in `cfg` (in place, frozen or not) by one seed drawn on rank 0 and
    shared, so config.yaml, the checkpoints and every loader see the same value and a
    resumed run continues the same random streams."""
    if cfg.SEED >= 0:
        return
    seed = comm.all_gather(comm.run_on_main(lambda: _draw_run_seed(cfg, resume)))[0]
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.SEED = seed
    if frozen:
        cfg.freeze()


def default_setup(cfg, args) -> None:
    """Prepare a run: check OUTPUT_DIR, start logging, settle SEED < 0 into a drawn seed,
    record the environment, git commit, arguments and merged config (OUTPUT_DIR/config.yaml,
    or config_eval.yaml with --eval-only so the training's record is kept), seed every
    generator, log world size, batch and lr."""
    output_dir = cfg.OUTPUT_DIR
    rank, world_size = comm.get_rank(), comm.get_world_size()
    comm.run_on_main(lambda: _check_output_dir(output_dir))
    setup_logger(output_dir, distributed_rank=rank, name="psdiff")
    check_device(cfg.MODEL.DEVICE)
    drawn = cfg.SEED < 0
    _settle_seed(cfg, getattr(args, "resume", False))
    logger.info(f"Rank of current process: {rank}. World size: {world_size}")
    logger.info("Environment info:\n" + collect_env_info())
    logger.info(f"git commit: {get_git_commit()}")
    logger.info(f"Command line arguments: {args}")
    logger.info(f"Running with full config:\n{cfg.dump()}")
    if comm.is_main_process():
        name = "config_eval.yaml" if getattr(args, "eval_only", False) else "config.yaml"
        path = os.path.join(output_dir, name)
        with open(path, "w") as f:
            f.write(cfg.dump())
        logger.info(f"Full config saved to {path}")
    seed = seed_all_rng(cfg.SEED + rank)
    how = "; SEED < 0 was given: drawn at random, saved in config.yaml" if drawn else ""
    logger.info(f"Seed of rank {rank}: {seed} (SEED {cfg.SEED} + rank{how})")
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
    if not getattr(args, "eval_only", False):
        _log_batch_and_lr(cfg, world_size)


def save_eval_results(cfg, results: dict) -> None:
    """--eval-only's output (rank 0): OUTPUT_DIR/eval_results.json, and one JSON line printed."""
    if comm.is_main_process():
        with open(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), "w") as f:
            json.dump(json_safe(results), f, indent=2, sort_keys=True, allow_nan=False)
        print(json.dumps(json_safe(results), sort_keys=True))


def _distributed(model: torch.nn.Module, cuda: bool) -> DistributedDataParallel:
    """DDP over the ranks. Trainable BatchNorm would keep per-rank statistics: on CUDA it
    becomes SyncBatchNorm (same parameter objects, so the optimizer is unchanged); gloo has no
    SyncBatchNorm, so on CPU rank 0's BN buffers are broadcast before every forward."""
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has_bn and cuda:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[comm.get_local_rank()] if cuda else None,
                                   broadcast_buffers=has_bn and not cuda)


class DefaultTrainer(TrainerBase):
    """The trainer built from a config, in Detectron2's shape.

    Override the classmethods `build_model`, `build_optimizer`, `build_lr_scheduler`,
    `build_train_loader` and `evaluate_dataset` to swap a part, and `build_model_hooks` to add
    hooks (the ReID teacher does both). Use:
    `trainer = DefaultTrainer(cfg); trainer.resume_or_load(resume=args.resume); trainer.train()`.
    """

    def __init__(self, cfg):
        super().__init__()
        if cfg.SEED < 0:
            raise PsdiffError(f"SEED {cfg.SEED}: default_setup draws the run's seed; call it "
                              "before building the trainer, or set SEED >= 0")
        cfg = auto_scale_workers(cfg, comm.get_world_size())
        self.cfg = cfg
        comm.run_on_main(lambda: _check_output_dir(cfg.OUTPUT_DIR))
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        if comm.get_world_size() > 1:
            model = _distributed(model, cfg.MODEL.DEVICE.startswith("cuda"))
        self.model = model
        grad_clip = build_gradient_clipper(cfg)
        if cfg.SOLVER.AMP.ENABLED:
            dtype = amp_dtype(cfg.SOLVER.AMP, "SOLVER.AMP")
            self._trainer = AMPTrainer(model, None, optimizer, grad_clip, dtype)
        else:
            self._trainer = SimpleTrainer(model, None, optimizer, grad_clip)
        self.optimizer = optimizer
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        checkpointables = {"optimizer": optimizer, "scheduler": self.scheduler,
                           "trainer": weakref.proxy(self)}
        if getattr(self._trainer, "grad_scaler", None) is not None:
            checkpointables["grad_scaler"] = self._trainer.grad_scaler
        self.checkpointer = Checkpointer(model, cfg.OUTPUT_DIR, **checkpointables)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True) -> None:
        """`resume` and a checkpoint in OUTPUT_DIR: restore everything and continue after its
        iteration; otherwise load `MODEL.WEIGHTS` (model only) and start at iteration 0.
        Either way, temporary checkpoint files a killed save left in OUTPUT_DIR are removed."""
        removed = comm.run_on_main(lambda: remove_stale_temporaries(self.cfg.OUTPUT_DIR))
        if removed:
            logger.info(f"Removed temporary files of a save that was killed: {removed}")
        extra = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = self.iter + 1
            if extra.get("config", self.cfg.dump()) != self.cfg.dump():
                logger.warning("Resuming with a config that differs from the checkpoint's")

    def build_hooks(self) -> list:
        """Timer, lr schedule, checkpoints, evaluation, then writers (see hooks.py for why)."""
        cfg = self.cfg
        evaluate = hooks.EvalHook(cfg.TEST.EVAL_PERIOD, lambda: self.test(self.cfg, self.model))
        return [
            # first, so "time" covers the step and every hook after it
            hooks.IterationTimer(),
            # what the trained model needs around its steps, saved by the checkpoints below
            *self.build_model_hooks(),
            # before the checkpointer: a checkpoint holds the schedule of the next iteration
            hooks.LRScheduler(self.optimizer, self.scheduler),
            # before evaluation: a crash while evaluating keeps this iteration's weights
            hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD,
                                       config=cfg.dump()),
            evaluate if cfg.DATASETS.TEST else None,
            # last, so the console, metrics.json and TensorBoard see the evaluation results
            hooks.PeriodicWriter(self.build_writers(), period=cfg.SOLVER.LOG_PERIOD)
            if comm.is_main_process() else None,
        ]

    def build_model_hooks(self) -> list:
        """Hooks of the model being trained (none for PSDiff; the ReID teacher refreshes its
        memory): they run after the timer and before the schedule, checkpoints and evaluation."""
        return []

    def build_writers(self) -> list:
        """Console line, OUTPUT_DIR/metrics.json and TensorBoard events in OUTPUT_DIR."""
        return [
            CommonMetricPrinter(self.max_iter),
            JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json")),
            TensorboardXWriter(self.cfg.OUTPUT_DIR),
        ]

    def train(self) -> dict:
        """Train from `start_iter` to `SOLVER.MAX_ITER`; returns the last evaluation results."""
        self._trainer.data_loader = self.build_train_loader(self.cfg, start_iter=self.start_iter)
        super().train(self.start_iter, self.max_iter)
        eval_hooks = [h for h in self._hooks if isinstance(h, hooks.EvalHook)]
        return eval_hooks[0].last_results if eval_hooks else None

    def run_step(self):
        self._trainer.iter = self.iter
        self._trainer.run_step()

    @classmethod
    def build_model(cls, cfg) -> torch.nn.Module:
        """`psdiff.modeling.build_model(cfg)`, moved to `MODEL.DEVICE`."""
        model = build_model(cfg)
        logger.info(f"Model:\n{model}")
        return model.to(torch.device(cfg.MODEL.DEVICE))

    @classmethod
    def build_optimizer(cls, cfg, model) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg, start_iter: int = 0):
        """An endless iterable of batches whose first batch is the one of iteration
        `start_iter`. For a bit-identical resume, batches (order and augmentation) must be a
        pure function of (SEED, rank, iteration), as in `psdiff.data.build_train_loader`; the
        engine starts the iterator under a forked RNG, so creating it draws nothing."""
        return build_train_loader(cfg, start_iter=start_iter)

    @classmethod
    def test(cls, cfg, model) -> dict:
        """Evaluate on every `DATASETS.TEST` name with `evaluate_dataset`; one flat dict of
        metrics (prefixed by the dataset name when there are several), with the model in eval
        mode meanwhile."""
        model = unwrap_model(model)
        was_training = model.training
        model.eval()
        results = {}
        try:
            with torch.no_grad():
                for name in cfg.DATASETS.TEST:
                    metrics = cls.evaluate_dataset(cfg, model, name)
                    prefix = f"{name}/" if len(cfg.DATASETS.TEST) > 1 else ""
                    results.update({prefix + k: float(v) for k, v in metrics.items()})
        finally:
            model.train(was_training)
        if comm.is_main_process():
            logger.info("Evaluation results: " + json.dumps(results, sort_keys=True))
        return results

    @classmethod
    def evaluate_dataset(cls, cfg, model, dataset_name: str) -> dict:
        """The metrics of one test set: PSDiff's person-search protocol (`evaluation.evaluate`)."""
        return evaluate(cfg, model, dataset_name)
