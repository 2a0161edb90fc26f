#!/usr/bin/env python
"""Write the synthetic person-search benchmark in the CUHK-SYSU and / or PRW on-disk formats.

    tools/make_synthetic.py --output-dir datasets/synthetic --format both --seed 0
    tools/make_synthetic.py --output-dir /tmp/syn --format prw --train-images 60 --test-images 40

The trees go to `<output-dir>/CUHK-SYSU` and `<output-dir>/PRW`, where the catalog names
`synthetic_cuhk_sysu_*` and `synthetic_prw_*` find them when `--output-dir` is
`<DATASETS.ROOT>/synthetic`. Size options left out take the generator's defaults (the demo's
set: a few hundred images per format). Bad options print one line `error: ...` and exit with
status 2.
"""

import argparse
import logging
import os
import sys
import time

from psdiff.data.synthetic import PRW_CAMERA_SIZES, write_cuhk_sysu, write_prw
from psdiff.utils.errors import exit_status
from psdiff.utils.logger import setup_logger

logger = logging.getLogger("psdiff.make_synthetic")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default=os.path.join("datasets", "synthetic"),
                        help="folder receiving CUHK-SYSU/ and PRW/ (default: datasets/synthetic)")
    parser.add_argument("--format", choices=("cuhk_sysu", "prw", "both"), default="both")
    parser.add_argument("--seed", type=int, default=0, help="the output is a function of it")
    parser.add_argument("--train-images", type=int, help="training images (PRW: frames)")
    parser.add_argument("--test-images", type=int, help="test images: the gallery pool")
    parser.add_argument("--train-ids", type=int, help="training identities")
    parser.add_argument("--test-ids", type=int, help="test identities (the queries' persons)")
    parser.add_argument("--persons-per-image", type=int, nargs=2, metavar=("MIN", "MAX"),
                        help="labeled persons per image")
    parser.add_argument("--unlabeled-per-image", type=int, nargs=2, metavar=("MIN", "MAX"),
                        help="unlabeled persons per image")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="CUHK-SYSU image height and width (default 240 320)")
    parser.add_argument("--gallery-sizes", type=int, nargs="+", metavar="N",
                        help="CUHK-SYSU TestG<N> files (default: 50..4000 that fit the pool)")
    parser.add_argument("--camera-scale", type=float, default=1.0,
                        help="PRW frame size factor (cams 1-5: 320x180, cam 6: 240x192 at 1.0)")
    return parser.parse_args(argv)


def _size_options(args, images_key: str) -> dict:
    """The size options given on the command line, under the writer's argument names."""
    given = {
        f"num_train_{images_key}": args.train_images,
        f"num_test_{images_key}": args.test_images,
        "num_train_ids": args.train_ids,
        "num_test_ids": args.test_ids,
        "persons_per_image": args.persons_per_image and tuple(args.persons_per_image),
        "unlabeled_per_image": args.unlabeled_per_image and tuple(args.unlabeled_per_image),
    }
    return {k: v for k, v in given.items() if v is not None}


def main(args) -> None:
    """Write the requested trees and log what was written."""
    if args.format in ("cuhk_sysu", "both"):
        options = _size_options(args, "images")
        if args.image_size:
            options["image_size"] = tuple(args.image_size)
        if args.gallery_sizes:
            options["gallery_sizes"] = tuple(args.gallery_sizes)
        start = time.perf_counter()
        root = os.path.join(args.output_dir, "CUHK-SYSU")
        gt = write_cuhk_sysu(root, seed=args.seed, progress=True, **options)
        logger.info(
            f"CUHK-SYSU: {len(gt.images)} images, {len(gt.queries)} queries, gallery sizes "
            f"{sorted(gt.galleries)} in {gt.root} ({time.perf_counter() - start:.1f} s)"
        )
    if args.format in ("prw", "both"):
        options = _size_options(args, "frames")
        scale = args.camera_scale
        sizes = [(round(h * scale), round(w * scale)) for h, w in PRW_CAMERA_SIZES]
        options["camera_sizes"] = tuple(sizes)
        start = time.perf_counter()
        root = os.path.join(args.output_dir, "PRW")
        gt = write_prw(root, seed=args.seed, progress=True, **options)
        logger.info(
            f"PRW: {len(gt.images)} frames, {len(gt.queries)} queries in {gt.root} "
            f"({time.perf_counter() - start:.1f} s)"
        )


def run(argv=None) -> int:
    """Command-line entry; returns the exit status."""
    setup_logger()
    return exit_status(lambda: main(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(run())
