#!/usr/bin/env python
"""The paper's mechanism claims, measured on the synthetic benchmark with the CPU recipe.

    python tools/mechanisms.py --seeds 1 2 [--tables fig6 table4b table4c table5 table6] \
        --output-dir output/mechanisms [KEY VALUE ...]

Stages 1-3 of `make demo` (benchmark, teacher, e0; reused when --output-dir holds them), then
for every seed (SEED) one training of each variant of configs/synthetic/psdiff_r18_synthetic_
cuhk.yaml that the chosen tables need, each evaluated as the table asks (steps, sampler).
`KEY VALUE` overrides apply to every training (e.g. SOLVER.MAX_ITER 400 for a quick look);
DATASETS.ROOT among them also says where the benchmark is written. They follow an option that
takes one value (--output-dir): after --seeds or --tables, argparse would read them as seeds or
table names.
Finished runs and evaluations are reused, so a stopped run continues where it was; an
evaluation that changes nothing in a run's config is its training's own final one. Writes
`mechanisms.md` (one Markdown table per claim: mean and range over the seeds, and the command)
into --output-dir and prints it; Fig. 6 is also drawn there (fig6_sampling_steps.png, one line
per renewal rule, shaded over the seeds).
"""

import argparse
import os
import shlex
import sys

import numpy as np
from demo_synthetic import datasets_root, evaluate, evaluation_dir, prepare, train

from psdiff.evaluation.plots import plot_sampling_steps

# the paper's read-out of e_hat0 from F_c, which sees the other proposals: its queries are
# denoised among a full proposal set (the recipe's "alone" suits only its stripes' read-out)
FROM_COLLAB = ["MODEL.PSDIFF.EMB_FROM_COLLAB", "True", "MODEL.PSDIFF.QUERY_MODE", "denoise"]
# training variants: name -> overrides of the synthetic recipe
VARIANTS = {
    "full CDL": [],
    "SA + DC": ["MODEL.PSDIFF.USE_CA", "False"],
    "SA": ["MODEL.PSDIFF.USE_CA", "False", "MODEL.PSDIFF.USE_DC", "False"],
    "no interaction": ["MODEL.PSDIFF.USE_SA", "False", "MODEL.PSDIFF.USE_CA", "False",
                       "MODEL.PSDIFF.USE_DC", "False"],
    # cascaded boxes are read from the embedding, which then comes from F_c, so the stripes are
    # pooled at the input boxes
    "cascaded": ["MODEL.PSDIFF.CASCADED", "True", "MODEL.PSDIFF.EMB_PARTS_BOXES", "input",
                 *FROM_COLLAB],
    # the recipe's embeddings are a Linear of the stripes and never read e_t; Table VI compares
    # the paper's read-out from F_c, which reads e_t, with and without the noisy embeddings
    "embeddings from F_c": FROM_COLLAB,
    "distillation (no embedding diffusion)": ["MODEL.PSDIFF.EMB_DIFFUSION", "False",
                                              *FROM_COLLAB],
}
# box renewal between sampling steps: label -> its evaluation overrides
RENEWALS = (
    ("low scores renewed", ["MODEL.PSDIFF.RENEWAL_DUPLICATE_IOU", "0.0",
                            "MODEL.PSDIFF.RENEWAL_RESTART", "step"]),
    ("duplicates renewed too", ["MODEL.PSDIFF.RENEWAL_DUPLICATE_IOU", "0.7",
                                "MODEL.PSDIFF.RENEWAL_RESTART", "step"]),
    ("restarted from noise (recipe)", ["MODEL.PSDIFF.RENEWAL_DUPLICATE_IOU", "0.7",
                                       "MODEL.PSDIFF.RENEWAL_RESTART", "noise"]),
)
# tables: name -> (title, [(row label, training variant, evaluation overrides)])
TABLES = {
    "fig6": ("Fig. 6: sampling steps; box renewal of low-scoring rows, of duplicates too, and "
             "restarting renewed rows from noise", [
                 ("1 step", "full CDL", ["MODEL.PSDIFF.SAMPLE_STEPS", "1"]),
                 *[(f"{steps} steps, {renewal}", "full CDL",
                    ["MODEL.PSDIFF.SAMPLE_STEPS", str(steps), *rule])
                   for steps in (2, 4, 8) for renewal, rule in RENEWALS]]),
    "table4b": ("Table IV(b): collaborative interaction", [
        (name, name, []) for name in ("full CDL", "SA + DC", "SA", "no interaction")]),
    "table4c": ("Table IV(c): cascaded vs parallel prediction (1 and 4 steps)", [
        (f"{name}, {steps} step{'s' * (steps > 1)}", variant,
         ["MODEL.PSDIFF.SAMPLE_STEPS", str(steps)])
        for name, variant in (("parallel (recipe)", "full CDL"), ("cascaded (paper)", "cascaded"))
        for steps in (1, 4)]),
    "table5": ("Table V: fast samplers", [
        (name, "full CDL", ["MODEL.PSDIFF.SAMPLER", sampler])
        for name, sampler in (("DDIM", "DDIM"), ("DPM-Solver", "DPM_SOLVER"),
                              ("DPM-Solver++", "DPM_SOLVER_PP"))]),
    "table6": ("Table VI: diffusion of embeddings vs plain distillation", [
        ("PSDiff, embeddings diffused and read from F_c", "embeddings from F_c", []),
        ("distillation baseline, e0 regressed from F_c", "distillation (no embedding diffusion)",
         []),
        ("the recipe: a Linear of the stripes", "full CDL", [])]),
}
COLUMNS = (("det/AP", "det AP"), ("det/recall", "recall"), ("search/mAP", "mAP"),
           ("search/top1", "top-1"), ("@0.5/search/mAP", "mAP @0.5"),
           ("query/mean_cosine", "query cos"))


def training_overrides(variant: str, seed: int, opts: list) -> list:
    """KEY VALUE overrides of the recipe for one training: the variant's, SEED, then the user's."""
    return [*VARIANTS[variant], "SEED", str(seed), *opts]


def slug(text: str) -> str:
    """A variant's folder name."""
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()


def evaluation_name(overrides: list) -> str:
    """The folder of a run's evaluation with config `overrides`, named by the overrides
    themselves: rows that evaluate alike share one evaluation, and different ones never do
    (row labels such as DPM-Solver and DPM-Solver++ differ only in punctuation)."""
    return "__".join(f"{key.removeprefix('MODEL.PSDIFF.')}={value}"
                     for key, value in zip(overrides[::2], overrides[1::2]))


def cell(values: list) -> str:
    """Mean over seeds, with the range when there are several."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def fig6_runs(measured: list) -> dict:
    """Fig. 6's measured rows [(label, evaluation overrides, metrics of each seed)] as
    plot_sampling_steps takes them: {renewal: {steps: metrics of each seed}}; the 1-step row
    (nothing to renew) starts every line."""
    runs = {renewal: {} for renewal, _ in RENEWALS}
    for _, overrides, results in measured:
        keys = dict(zip(overrides[::2], overrides[1::2]))
        for renewal, rule in RENEWALS:
            if all(keys.get(key, value) == value for key, value in zip(rule[::2], rule[1::2])):
                runs[renewal][int(keys["MODEL.PSDIFF.SAMPLE_STEPS"])] = results
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="output/mechanisms", help="everything goes here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="SEED of each run")
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE training overrides")
    args = parser.parse_args()

    root = datasets_root(args.opts)
    out = os.path.abspath(args.output_dir)
    teacher_dir = prepare(root, out)
    lines = [f"Command: `python tools/mechanisms.py {shlex.join(sys.argv[1:])}`", ""]
    for table in args.tables:
        title, rows = TABLES[table]
        lines += [f"### {title}", "", "| | " + " | ".join(n for _, n in COLUMNS) + " |",
                  "|---" * (len(COLUMNS) + 1) + "|"]
        measured = []
        for label, variant, eval_overrides in rows:
            results = []
            for seed in args.seeds:
                run_dir = os.path.join(out, slug(variant), f"seed{seed}")
                train(f"train {variant}, seed {seed}", root, teacher_dir, run_dir,
                      *training_overrides(variant, seed, args.opts))
                folder = evaluation_dir(
                    run_dir, os.path.join(run_dir, "eval", evaluation_name(eval_overrides)),
                    *eval_overrides)
                results.append(evaluate(f"evaluate {label}, seed {seed}", root, run_dir, folder,
                                        *eval_overrides))
            lines.append(f"| {label} | " + " | ".join(
                cell([r[key] for r in results]) for key, _ in COLUMNS) + " |")
            measured.append((label, eval_overrides, results))
        if table == "fig6":
            plot_sampling_steps(fig6_runs(measured), os.path.join(out, "fig6_sampling_steps.png"))
        lines.append("")
    report = "\n".join(lines)
    with open(os.path.join(out, "mechanisms.md"), "w") as f:
        f.write(report)
    print("\n" + report)


if __name__ == "__main__":
    main()
