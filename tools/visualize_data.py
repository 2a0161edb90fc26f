#!/usr/bin/env python
"""Draw the ground-truth boxes and pids of N images of a dataset into a folder.

    tools/visualize_data.py --dataset synthetic_prw_train --num 8 --output-dir out/vis
    tools/visualize_data.py --dataset cuhk_sysu_test --num 4 --output-dir out/vis \\
        DATASETS.ROOT /data/person_search
    tools/visualize_data.py --source dataloader --config-file configs/X.yaml \\
        --output-dir out/vis DATASETS.TRAIN "('synthetic_cuhk_sysu_train',)"

`--source annotation` (default) draws the dicts of `--dataset` on the original images; for a
test set it draws the gallery and then the queries (query box in white, labeled `q<pid>`).
`--source dataloader` draws training batches of the config's DATASETS.TRAIN as the model
receives them (resized, flipped), which checks the mapper. Unlabeled persons (pid -1) are drawn
in gray. Datasets are read under DATASETS.ROOT.
"""

import logging
import os
import sys
import zlib

import cv2
import numpy as np

from psdiff.data import build_train_loader, get_search_split, get_train_dicts, resolve_root
from psdiff.data.catalog import list_datasets
from psdiff.engine import default_argument_parser, setup_cfg
from psdiff.evaluation.visualize import draw_detections
from psdiff.utils.errors import PsdiffError, exit_status
from psdiff.utils.image import read_image, write_image
from psdiff.utils.logger import setup_logger

logger = logging.getLogger("psdiff.visualize_data")
GRAY, WHITE = (160, 160, 160), (255, 255, 255)


def parse_args(argv=None):
    """The config arguments (DATASETS.ROOT, and for the loader its INPUT / SOLVER keys) and
    what to draw."""
    parser = default_argument_parser(__doc__, train=False, distributed=False)
    parser.add_argument("--source", choices=("annotation", "dataloader"), default="annotation")
    parser.add_argument("--dataset", help=f"with --source annotation: one of "
                                          f"{', '.join(list_datasets())}")
    parser.add_argument("--num", type=int, default=8, help="images to draw")
    parser.add_argument("--output-dir", required=True, help="folder for the pictures")
    return parser.parse_args(argv)


def pid_color(pid: int) -> tuple:
    """A fixed, bright BGR color per pid (gray for unlabeled)."""
    if pid < 0:
        return GRAY
    hue = zlib.crc32(str(pid).encode()) % 180
    hsv = np.uint8([[[hue, 220, 255]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _annotated(dicts: list, queries: bool) -> list:
    """(file stem, drawn image) of dataset dicts or query dicts."""
    drawn = []
    for d in dicts:
        image = read_image(d["file_name"])
        if queries:
            boxes, labels, colors = [d["bbox"]], [f"q{d['pid']}"], [WHITE]
        else:
            boxes = [a["bbox"] for a in d["annotations"]]
            labels = [str(a["pid"]) for a in d["annotations"]]
            colors = [pid_color(a["pid"]) for a in d["annotations"]]
        stem = ("query_" if queries else "") + os.path.splitext(d["image_id"])[0]
        drawn.append((stem, draw_detections(image, boxes, colors, labels)))
    return drawn


def _from_dataloader(cfg, num: int) -> list:
    """(file stem, drawn image) of the first training batches as the mapper outputs them."""
    drawn = []
    for step, batch in enumerate(build_train_loader(cfg)):
        for d in batch:
            image = d["image"].numpy().transpose(1, 2, 0)
            if cfg.INPUT.FORMAT == "RGB":
                image = image[:, :, ::-1]
            pids = d["instances"]["pids"].tolist()
            labels, colors = [str(p) for p in pids], [pid_color(p) for p in pids]
            stem = f"iter{step}_" + os.path.splitext(d["image_id"])[0]
            drawn.append((stem, draw_detections(image, d["instances"]["boxes"], colors, labels)))
        if len(drawn) >= num:
            return drawn[:num]
    return drawn


def main(args) -> None:
    """Draw and save the images."""
    cfg = setup_cfg(args)
    root = resolve_root(cfg.DATASETS.ROOT)
    if args.source == "dataloader":
        drawn = _from_dataloader(cfg, args.num)
    elif not args.dataset:
        raise PsdiffError("--source annotation needs --dataset NAME")
    elif args.dataset.endswith("_test"):
        split = get_search_split(args.dataset, root)
        drawn = _annotated(split.gallery[: args.num], False)
        drawn += _annotated(split.queries[: args.num], True)
    else:
        drawn = _annotated(get_train_dicts(args.dataset, root)[: args.num], False)
    for stem, image in drawn:
        write_image(os.path.join(args.output_dir, stem + ".jpg"), image)
    logger.info(f"Wrote {len(drawn)} images to {args.output_dir}")


def run(argv=None) -> int:
    """Command-line entry; returns the exit status."""
    setup_logger()
    return exit_status(lambda: main(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(run())
