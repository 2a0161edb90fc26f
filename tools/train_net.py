#!/usr/bin/env python
"""Train PSDiff, or evaluate a trained model, from a config (Detectron2's train_net.py).

    tools/train_net.py --config-file configs/psdiff_r50.yaml --num-gpus 4 [KEY VALUE ...]
    tools/train_net.py --config-file output/config.yaml --eval-only \
        MODEL.WEIGHTS output/model_final.pth
    torchrun --nproc_per_node 4 tools/train_net.py --config-file configs/psdiff_r50.yaml

Bad input (a missing file, an unknown key, an unwritable OUTPUT_DIR) prints one line
`error: ...` and exits with status 2.
"""

import json
import os
import sys

from psdiff.engine import (
    Checkpointer,
    DefaultTrainer,
    default_argument_parser,
    default_setup,
    launch,
    setup_cfg,
)
from psdiff.utils import comm
from psdiff.utils.errors import PsdiffError


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
        if comm.is_main_process():
            with open(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), "w") as f:
                json.dump(results, f, indent=2, sort_keys=True)
            print(json.dumps(results, sort_keys=True))
        return results
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(argv=None) -> int:
    """Parse the command line, check the config, launch the workers; returns the exit status."""
    args = default_argument_parser().parse_args(argv)
    try:
        cfg = setup_cfg(args)  # fail on a bad config before spawning any worker
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            backend="nccl" if cfg.MODEL.DEVICE.startswith("cuda") else "gloo",
        )
    except PsdiffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"interrupted: {e or 'stopped'}; continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(run())
