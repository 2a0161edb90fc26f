#!/usr/bin/env python
"""Figures and pictures from evaluation results (PNG + a Markdown table beside each figure).

    # Fig. 4: mAP vs CUHK-SYSU gallery size, one line per run (LABEL=metrics file)
    tools/plot_results.py gallery-size --out output/fig4.png \\
        --run PSDiff=output/inference/cuhk_sysu_test/metrics.json
    # Fig. 6: metrics vs sampling steps, one evaluation per step count, e.g. made by
    #   tools/train_net.py --config-file C --eval-only MODEL.WEIGHTS W \\
    #       MODEL.PSDIFF.SAMPLE_STEPS 4 OUTPUT_DIR output/steps4
    tools/plot_results.py steps --out output/fig6.png \\
        --run output/steps1/inference/cuhk_sysu_test/metrics.json \\
        output/steps4/inference/cuhk_sysu_test/metrics.json
    #   several settings (SETTING=file) and seeds (several files of one setting and step
    #   count) draw one line each, shaded over the seeds
    # queries and their top-k hits (green: the query person, red: someone else); the protocol
    # settings and DATASETS.ROOT come from the run's config saved in the predictions file
    tools/plot_results.py search-result --predictions P.npz --dataset cuhk_sysu_test \\
        --query 0 1 2 --top-k 5 --out "output/query{query}.jpg" [KEY VALUE ...]

A metrics file is the evaluator's `metrics.json` (whose `meta` gives the steps) or any flat
metrics JSON (then give `--steps`). Bad input prints one `error: ...` line, exit status 2.
"""

import argparse
import json
import logging
import os
import sys

from psdiff.data import get_search_split, resolve_root
from psdiff.engine import add_config_arguments, setup_cfg
from psdiff.evaluation import Predictions
from psdiff.evaluation.plots import plot_gallery_size, plot_sampling_steps
from psdiff.evaluation.visualize import draw_search_result, top_hits
from psdiff.utils.errors import PsdiffError, exit_status
from psdiff.utils.image import write_image
from psdiff.utils.logger import setup_logger


def read_metrics(path: str) -> tuple:
    """(metrics dict, meta dict) of an evaluator metrics.json or a flat metrics JSON."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise PsdiffError(f"cannot read metrics file {path}: {e}".splitlines()[0])
    if "metrics" in data:
        return data["metrics"], data.get("meta", {})
    return data, {}


def labelled(item: str, default: str = None) -> tuple:
    """(label, path) of a `--run` item `[LABEL=]metrics.json` (an existing file is a path,
    even with "=" in it, as tools/mechanisms.py's evaluation folders have); without a label,
    `default`, or else the name of the file's folder."""
    label, sep, path = item.partition("=")
    if sep and not os.path.isfile(item):
        return label, path
    return (os.path.basename(os.path.dirname(os.path.abspath(item))) if default is None
            else default), item


def gallery_size(args) -> str:
    """Fig. 4 from the runs' metrics files; returns the table."""
    runs = {}
    for item in args.run:
        label, path = labelled(item)
        runs[label] = read_metrics(path)[0]
    return plot_gallery_size(runs, args.out)


def steps(args) -> str:
    """Fig. 6 from metrics files, one per setting, step count and seed; returns the table."""
    labels, paths = zip(*(labelled(item, "") for item in args.run))
    loaded = [read_metrics(path) for path in paths]
    if args.steps:
        if len(args.steps) != len(loaded):
            raise PsdiffError(f"--steps has {len(args.steps)} values for {len(loaded)} runs")
        counts = args.steps
    else:
        missing = [p for p, (_, meta) in zip(paths, loaded) if "steps" not in meta]
        if missing:
            raise PsdiffError(f"{missing[0]} does not record its sampling steps; give --steps")
        counts = [meta["steps"] for _, meta in loaded]
    runs = {}
    for label, count, (metrics, _) in zip(labels, counts, loaded):
        runs.setdefault(label, {}).setdefault(count, []).append(metrics)
    return plot_sampling_steps(runs, args.out)


def search_result(args) -> str:
    """Write the picture of each query's top-k hits; returns the hits, one JSON line per
    query."""
    if len(args.query) > 1 and "{query}" not in args.out:
        raise PsdiffError(f"--out {args.out!r} names one file for {len(args.query)} queries: "
                          "put {query} in it, e.g. query{query}.jpg")
    predictions = Predictions.load(args.predictions)
    cfg = setup_cfg(args, run_config=predictions.meta.get("config", ""))
    split = get_search_split(args.dataset, resolve_root(cfg.DATASETS.ROOT), cfg.TEST.GALLERY_SIZE)
    outside = [query for query in args.query if not 0 <= query < len(split.queries)]
    if outside:
        raise PsdiffError(f"--query {outside[0]}: {args.dataset} has queries 0 to "
                          f"{len(split.queries) - 1}")
    lines = []
    for query in args.query:
        hits = top_hits(predictions, split.protocol, split.gallery, split.queries, query,
                        args.top_k, cfg.TEST.DET_THRESH_SEARCH, cfg.TEST.CWS,
                        cfg.TEST.IGNORE_CAM_ID)
        write_image(args.out.replace("{query}", str(query)),
                    draw_search_result(split.queries[query], hits, split.gallery))
        lines.append(json.dumps(hits))
    return "\n".join(lines)


def parse_args(argv=None):
    """The three subcommands and their options."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("gallery-size", help="Fig. 4: mAP vs CUHK-SYSU gallery size")
    p.add_argument("--run", nargs="+", required=True, help="[LABEL=]metrics.json, one per run")
    p.add_argument("--out", required=True, help="output PNG (the table goes beside it, .md)")
    p.set_defaults(func=gallery_size)
    p = sub.add_parser("steps", help="Fig. 6: metrics vs sampling steps")
    p.add_argument("--run", nargs="+", required=True,
                   help="[SETTING=]metrics.json, one per setting, step count and seed (the "
                        "files of one setting and step count are its seeds)")
    p.add_argument("--steps", nargs="+", type=int, help="step counts, if the files lack them")
    p.add_argument("--out", required=True, help="output PNG (the table goes beside it, .md)")
    p.set_defaults(func=steps)
    p = add_config_arguments(sub.add_parser("search-result",
                                            help="queries and their top-k gallery hits"))
    p.add_argument("--predictions", required=True, help="predictions.npz of an evaluation")
    p.add_argument("--dataset", required=True, help="test set name, e.g. cuhk_sysu_test")
    p.add_argument("--query", type=int, nargs="+", default=[0],
                   help="query indices in the dataset's list")
    p.add_argument("--top-k", type=int, default=5, help="hits to show")
    p.add_argument("--out", required=True,
                   help="output image (.jpg or .png); for several queries a name with {query} "
                        "in it, e.g. query{query}.jpg")
    p.set_defaults(func=search_result)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Run a subcommand and print its output; exit status 2 on bad input."""
    args = parse_args(argv)
    setup_logger(console_level=logging.WARNING)  # the printed table or hits are the output
    return exit_status(lambda: print(args.func(args)))


if __name__ == "__main__":
    sys.exit(main())
