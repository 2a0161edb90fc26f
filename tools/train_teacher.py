#!/usr/bin/env python
"""Train the ReID teacher (supervised HHCL, or S-ReID) on ground-truth crops, or evaluate one.

    tools/train_teacher.py --config-file configs/teacher/hhcl_r50_cuhk.yaml --num-gpus 4
    tools/train_teacher.py --config-file configs/teacher/hhcl_r50_cuhk.yaml --resume
    tools/train_teacher.py --config-file output/teacher/config.yaml --eval-only \
        TEACHER.WEIGHTS output/teacher/model_final.pth

Evaluation is the teacher's own retrieval on ground-truth crops of DATASETS.TEST (mAP, top-1),
run every TEST.EVAL_PERIOD iterations and at the end. Then write PSDiff's targets with
tools/build_targets.py. Bad input prints one line `error: ...` and exits with status 2.
"""

import json
import os
import sys

from psdiff.engine import default_argument_parser, default_setup, launch, setup_cfg
from psdiff.teacher.network import load_teacher
from psdiff.teacher.trainer import TeacherTrainer, check_teacher_config
from psdiff.utils import comm
from psdiff.utils.errors import PsdiffError


def main(args):
    """One rank's work: set up the run, then evaluate TEACHER.WEIGHTS (--eval-only) or train."""
    cfg = setup_cfg(args)
    default_setup(cfg, args)
    if args.eval_only:
        if not cfg.TEACHER.WEIGHTS:
            raise PsdiffError("--eval-only needs TEACHER.WEIGHTS (a teacher checkpoint)")
        results = TeacherTrainer.test(cfg, load_teacher(cfg, cfg.MODEL.DEVICE))
        if comm.is_main_process():
            with open(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), "w") as f:
                json.dump(results, f, indent=2, sort_keys=True)
            print(json.dumps(results, sort_keys=True))
        return results
    trainer = TeacherTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(argv=None) -> int:
    """Parse the command line, check the config, launch the workers; returns the exit status."""
    args = default_argument_parser("train or evaluate the PSDiff ReID teacher").parse_args(argv)
    try:
        cfg = setup_cfg(args)  # fail on a bad config before spawning any worker
        check_teacher_config(cfg)
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,),
               backend="nccl" if cfg.MODEL.DEVICE.startswith("cuda") else "gloo")
    except PsdiffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"interrupted: {e or 'stopped'}; continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(run())
