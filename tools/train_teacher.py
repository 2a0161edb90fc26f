#!/usr/bin/env python
"""Train the ReID teacher (supervised HHCL, or S-ReID) on ground-truth crops, or evaluate one.

    tools/train_teacher.py --config-file configs/teacher/hhcl_r50_cuhk.yaml --num-gpus 4
    tools/train_teacher.py --config-file configs/teacher/hhcl_r50_cuhk.yaml --resume
    tools/train_teacher.py --config-file output/teacher/config.yaml --eval-only \\
        TEACHER.WEIGHTS output/teacher/model_final.pth

Evaluation scores the teacher's embeddings of the ground-truth boxes of DATASETS.TEST by the
search protocol (teacher/mAP, teacher/top1: the ceiling of PSDiff's search/mAP, search/top1),
run every TEST.EVAL_PERIOD iterations and at the end. Then write PSDiff's targets with
tools/build_targets.py. Bad input prints one line `error: ...` and exits with status 2.
"""

import sys

from psdiff.engine import (
    default_argument_parser,
    default_setup,
    launch_from_args,
    save_eval_results,
    setup_cfg,
)
from psdiff.teacher.network import load_teacher
from psdiff.teacher.trainer import TeacherTrainer, check_teacher_config
from psdiff.utils.errors import PsdiffError, exit_status


def main(args):
    """One rank's work: set up the run, then evaluate TEACHER.WEIGHTS (--eval-only) or train."""
    cfg = setup_cfg(args)
    default_setup(cfg, args)
    if args.eval_only:
        if not cfg.TEACHER.WEIGHTS:
            raise PsdiffError("--eval-only needs TEACHER.WEIGHTS (a teacher checkpoint)")
        results = TeacherTrainer.test(cfg, load_teacher(cfg, cfg.MODEL.DEVICE))
        save_eval_results(cfg, results)
        return results
    trainer = TeacherTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def launch_main(argv=None) -> None:
    """Parse the command line, check the config before spawning any worker, launch."""
    args = default_argument_parser(__doc__, weights_key="TEACHER.WEIGHTS").parse_args(argv)
    cfg = setup_cfg(args)
    check_teacher_config(cfg)
    launch_from_args(main, args, cfg)


def run(argv=None) -> int:
    """The exit status: 0, 2 on bad input (one `error:` line), 130 on Ctrl-C (resumable)."""
    return exit_status(launch_main, argv, resumable=True)


if __name__ == "__main__":
    sys.exit(run())
