#!/usr/bin/env python
"""Recompute every metric of a run from its predictions file, without the model.

    tools/evaluate.py --predictions output/inference/cuhk_sysu_test/predictions.npz \\
        --dataset cuhk_sysu_test [--config-file FILE] [KEY VALUE ...]
    tools/evaluate.py --predictions P.npz --dataset prw_test DATASETS.ROOT /data TEST.CWS True

Protocol settings (TEST.GALLERY_SIZES, TEST.DET_THRESH_SEARCH, TEST.CWS, TEST.IGNORE_CAM_ID, ...)
and DATASETS.ROOT come from the config saved inside the predictions file (the run's own), else
the defaults; then `--config-file`, then the `KEY VALUE` overrides. `--dataset` may name another
test set than the run's only if the file holds that set's images and queries. The last line
printed is the metrics dict as one JSON line. Bad input prints one `error: ...` line and exits
with status 2.
"""

import json
import sys

from psdiff.data import get_search_split, resolve_root
from psdiff.engine import default_argument_parser, setup_cfg
from psdiff.evaluation import Predictions, metrics_from_cfg
from psdiff.utils.errors import exit_status
from psdiff.utils.io import json_safe
from psdiff.utils.logger import setup_logger


def parse_args(argv=None):
    """The config arguments, the predictions file and the test set."""
    parser = default_argument_parser(__doc__, train=False, distributed=False)
    parser.add_argument("--predictions", required=True, metavar="FILE",
                        help="predictions.npz written by an evaluation")
    parser.add_argument("--dataset", required=True, help="test set name, e.g. cuhk_sysu_test")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Load, score, print the metrics as the last line; exit status 0, or 2 on bad input."""
    args = parse_args(argv)
    setup_logger()
    return exit_status(score, args)


def score(args) -> None:
    """Recompute the metrics of a predictions file and print them as one JSON line."""
    predictions = Predictions.load(args.predictions)
    cfg = setup_cfg(args, run_config=predictions.meta.get("config", ""))
    split = get_search_split(args.dataset, resolve_root(cfg.DATASETS.ROOT), cfg.TEST.GALLERY_SIZE)
    print(json.dumps(json_safe(metrics_from_cfg(cfg, predictions, split)), sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
