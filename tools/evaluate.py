#!/usr/bin/env python
"""Recompute every metric of a run from its predictions file, without the model.

    tools/evaluate.py --predictions output/inference/cuhk_sysu_test/predictions.npz \
        --dataset cuhk_sysu_test [--root DATASETS_ROOT] [--config-file FILE] [KEY VALUE ...]

Protocol settings (TEST.GALLERY_SIZES, TEST.DET_THRESH_SEARCH, TEST.CWS, TEST.IGNORE_CAM_ID, ...)
come from the config saved inside the predictions file (the run's own), else the defaults; then
`--config-file`, then the `KEY VALUE` overrides, e.g. `TEST.CWS True`. `--dataset` may name
another test set than the run's only if the file holds that set's images and queries. The last
line printed is the metrics dict as one JSON line. Bad input prints one `error: ...` line and
exits with status 2.
"""

import argparse
import json
import logging
import sys

from psdiff.data import get_search_split, resolve_root
from psdiff.evaluation import Predictions, metrics_from_cfg, run_cfg
from psdiff.utils.errors import exit_status
from psdiff.utils.io import json_safe


def parse_args(argv=None):
    """The command line: files, dataset, root, config file and overrides."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, metavar="FILE",
                        help="predictions.npz written by an evaluation")
    parser.add_argument("--dataset", required=True, help="test set name, e.g. cuhk_sysu_test")
    parser.add_argument("--root", default=None, help="datasets root (overrides DATASETS.ROOT)")
    parser.add_argument("--config-file", default="", metavar="FILE", help="config YAML")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Load, score, print the metrics as the last line; exit status 0, or 2 on bad input."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    return exit_status(score, args)


def score(args) -> None:
    """Recompute the metrics of a predictions file and print them as one JSON line."""
    predictions = Predictions.load(args.predictions)
    cfg = run_cfg(predictions, args.config_file, args.opts, args.root)
    split = get_search_split(args.dataset, resolve_root(cfg.DATASETS.ROOT), cfg.TEST.GALLERY_SIZE)
    print(json.dumps(json_safe(metrics_from_cfg(cfg, predictions, split)), sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
