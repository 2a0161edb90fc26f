#!/usr/bin/env python
"""Train PSDiff, or evaluate a trained model, from a config (Detectron2's train_net.py).

    tools/train_net.py --config-file configs/psdiff_r50.yaml --num-gpus 4 [KEY VALUE ...]
    tools/train_net.py --config-file configs/psdiff_r50.yaml --num-gpus 4 --resume
    tools/train_net.py --config-file output/config.yaml --eval-only \\
        MODEL.WEIGHTS output/model_final.pth
    torchrun --nproc_per_node 4 tools/train_net.py --config-file configs/psdiff_r50.yaml

Bad input (a missing file, an unknown key, an unwritable OUTPUT_DIR) prints one line
`error: ...` and exits with status 2.
"""

import sys

from psdiff.engine import (
    Checkpointer,
    DefaultTrainer,
    default_argument_parser,
    default_setup,
    launch_from_args,
    save_eval_results,
    setup_cfg,
)
from psdiff.utils.errors import PsdiffError, exit_status


def main(args):
    """One rank's work: set up the run, then evaluate (--eval-only) or train."""
    cfg = setup_cfg(args)
    default_setup(cfg, args)
    if args.eval_only:
        if not cfg.MODEL.WEIGHTS and not args.resume:
            raise PsdiffError("--eval-only needs MODEL.WEIGHTS (a checkpoint) or --resume "
                              "(the last checkpoint in OUTPUT_DIR)")
        model = DefaultTrainer.build_model(cfg)
        Checkpointer(model, cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = DefaultTrainer.test(cfg, model)
        save_eval_results(cfg, results)
        return results
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def launch_main(argv=None) -> None:
    """Parse the command line, check the config before spawning any worker, launch."""
    args = default_argument_parser(__doc__).parse_args(argv)
    launch_from_args(main, args, setup_cfg(args))


def run(argv=None) -> int:
    """The exit status: 0, 2 on bad input (one `error:` line), 130 on Ctrl-C (resumable)."""
    return exit_status(launch_main, argv, resumable=True)


if __name__ == "__main__":
    sys.exit(run())
