#!/usr/bin/env python
"""Write PSDiff's e0 cache: the trained teacher's embedding of every training box (Eq. 11).

    tools/build_targets.py --config-file configs/psdiff_r50.yaml \\
        TEACHER.WEIGHTS output/teacher/model_final.pth TEACHER.CACHE output/teacher/e0_cuhk.npz

Reads the teacher's architecture from the TEACHER keys and its weights from TEACHER.WEIGHTS,
embeds every ground-truth box of DATASETS.TRAIN (unflipped and in the flipped image) and writes
TEACHER.CACHE, which PSDiff training then reads (and checks against the dataset and teacher).
With --num-gpus N the images are split over N processes. Bad input prints one line and exits 2.
"""

import json
import logging
import sys

from psdiff.data.build import load_train_dicts
from psdiff.data.teacher_targets import save_targets
from psdiff.engine import default_argument_parser, launch_from_args, setup_cfg
from psdiff.teacher.inference import build_targets
from psdiff.teacher.network import load_teacher
from psdiff.utils import comm
from psdiff.utils.errors import PsdiffError, exit_status
from psdiff.utils.logger import setup_logger

logger = logging.getLogger("psdiff.build_targets")


def main(args):
    """One rank's share of the crops; rank 0 writes the file."""
    cfg = setup_cfg(args)
    setup_logger(None, distributed_rank=comm.get_rank(), name="psdiff")
    if not cfg.TEACHER.WEIGHTS or not cfg.TEACHER.CACHE:
        raise PsdiffError("build_targets needs TEACHER.WEIGHTS (teacher checkpoint) and "
                          "TEACHER.CACHE (output .npz path)")
    teacher = load_teacher(cfg, cfg.MODEL.DEVICE)
    dicts = load_train_dicts(cfg)  # the images PSDiff trains on, as its loader reads them
    cache = build_targets(teacher, dicts, "+".join(cfg.DATASETS.TRAIN), cfg.TEACHER.INPUT_SIZE,
                          cfg.MODEL.DEVICE, num_workers=cfg.DATALOADER.NUM_WORKERS)
    if comm.is_main_process():
        save_targets(cfg.TEACHER.CACHE, cache)
        teacher_id = json.loads(cache["meta"])["teacher_fingerprint"]
        logger.info(f"wrote e0 of {len(cache['boxes'])} boxes in {len(dicts)} images to "
                    f"{cfg.TEACHER.CACHE} (teacher {teacher_id})")


def launch_main(argv=None) -> None:
    """Parse the command line, check the config before spawning any worker, launch."""
    parser = default_argument_parser(__doc__, train=False)
    args = parser.parse_args(argv)
    launch_from_args(main, args, setup_cfg(args))


def run(argv=None) -> int:
    """The exit status: 0, or 2 on bad input (one `error:` line)."""
    return exit_status(launch_main, argv)


if __name__ == "__main__":
    sys.exit(run())
