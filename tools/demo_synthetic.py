#!/usr/bin/env python
"""`make demo`: the whole method on the bundled synthetic benchmark, on CPU.

1. write the synthetic CUHK-SYSU benchmark (tools/make_synthetic.py) if it is missing,
2. train the ReID teacher, supervised HHCL on ground-truth crops (tools/train_teacher.py),
3. write its embedding targets e0 of Eq. 11 (tools/build_targets.py),
4. train PSDiff on them and evaluate (tools/train_net.py),
5. rescore stage 4's final evaluation (the recipe's own number of sampling steps) at the
   protocol's search threshold 0.5 (tools/evaluate.py) and draw Fig. 4 and search results
   (tools/plot_results.py); `--steps 1 2 4 8` evaluates those step counts as well (the
   recipe's is stage 4's, `evaluation_dir`) and draws Fig. 6.

Every stage is one of the tools a researcher runs by hand, called with the same arguments.
A stage whose output exists is skipped and an interrupted training resumes, so running the
demo again only does what is missing. tools/mechanisms.py reuses stages 1-4.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from psdiff.config import get_cfg
from psdiff.data.catalog import resolve_root
from psdiff.evaluation import Predictions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEACHER_CONFIG = "configs/teacher/hhcl_r18_synthetic.yaml"
PSDIFF_CONFIG = "configs/synthetic/psdiff_r18_synthetic_cuhk.yaml"
TEST_SET = "synthetic_cuhk_sysu_test"
PROTOCOL_THRESH = 0.5  # the search protocol's det_thresh (TEST.DET_THRESH_SEARCH default)
HEADLINE = ("det/AP", "det/recall", "search/mAP", "search/top1")


def run(stage: str, tool: str, *args: str, capture: bool = False) -> str:
    """Run one tool of tools/ as a user would; stop the demo if it fails. Returns its stdout
    when `capture` (else it goes to the console)."""
    print(f"\n=== {stage}: {tool} {' '.join(args)}", flush=True)
    start = time.time()
    result = subprocess.run([sys.executable, os.path.join(REPO, "tools", tool), *args], cwd=REPO,
                            stdout=subprocess.PIPE if capture else None, text=True)
    if result.returncode:
        sys.exit(f"demo stopped: {stage} failed (exit status {result.returncode})")
    print(f"=== {stage} done in {time.time() - start:.0f} s", flush=True)
    return result.stdout or ""


def metrics_file(output_dir: str) -> str:
    return os.path.join(output_dir, "inference", TEST_SET, "metrics.json")


def predictions_file(output_dir: str) -> str:
    return os.path.join(output_dir, "inference", TEST_SET, "predictions.npz")


def read_metrics(path: str) -> dict:
    with open(path) as f:
        data = json.load(f)
    return data.get("metrics", data)


def datasets_root(opts: list) -> str:
    """The absolute datasets root: DATASETS.ROOT among `KEY VALUE` overrides, else its rule."""
    pairs = dict(zip(opts[::2], opts[1::2]))
    return os.path.abspath(resolve_root(pairs.get("DATASETS.ROOT", "")))


def prepare(root: str, out: str) -> str:
    """Stages 1-3: benchmark, teacher, e0 targets. Returns the teacher's directory, which holds
    its weights (model_final.pth) and the targets (e0.npz)."""
    teacher_dir = os.path.join(out, "teacher")
    teacher_weights = os.path.join(teacher_dir, "model_final.pth")
    targets = os.path.join(teacher_dir, "e0.npz")
    data = ["DATASETS.ROOT", root]
    if not os.path.isdir(os.path.join(root, "synthetic", "CUHK-SYSU")):
        run("1/5 synthetic benchmark", "make_synthetic.py", "--output-dir",
            os.path.join(root, "synthetic"), "--format", "cuhk_sysu")
    if not os.path.isfile(teacher_weights):
        run("2/5 ReID teacher", "train_teacher.py", "--config-file", TEACHER_CONFIG, "--resume",
            *data, "OUTPUT_DIR", teacher_dir)
    if not os.path.isfile(targets):
        run("3/5 teacher targets e0", "build_targets.py", "--config-file", TEACHER_CONFIG, *data,
            "OUTPUT_DIR", teacher_dir, "TEACHER.WEIGHTS", teacher_weights, "TEACHER.CACHE",
            targets)
    return teacher_dir


def train(stage: str, root: str, teacher_dir: str, output_dir: str, *overrides: str) -> str:
    """Stage 4: train (or resume) PSDiff with the synthetic recipe on the teacher's targets, its
    trunk starting the backbone; returns the final weights."""
    weights = os.path.join(output_dir, "model_final.pth")
    if not os.path.isfile(weights):
        run(stage, "train_net.py", "--config-file", PSDIFF_CONFIG, "--resume",
            "DATASETS.ROOT", root, "OUTPUT_DIR", output_dir,
            "TEACHER.CACHE", os.path.join(teacher_dir, "e0.npz"),
            "TEACHER.WEIGHTS", os.path.join(teacher_dir, "model_final.pth"), *overrides)
    return weights


def evaluation_dir(run_dir: str, output_dir: str, *overrides: str) -> str:
    """Where the evaluation of `run_dir` with config `overrides` goes: `run_dir` itself when
    the overrides leave its config as it is (its training's final evaluation is that one),
    else `output_dir`."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(run_dir, "config.yaml"))
    before = cfg.dump()
    cfg.merge_from_list(list(overrides))
    return run_dir if cfg.dump() == before else output_dir


def evaluate(stage: str, root: str, run_dir: str, output_dir: str, *overrides: str) -> dict:
    """Evaluate a trained run with config overrides (steps, sampler) into `output_dir`, then
    rescore its predictions at the protocol's search threshold. Returns the metrics with the
    rescored ones under "@0.5/<key>"."""
    if not os.path.isfile(metrics_file(output_dir)):
        run(stage, "train_net.py", "--config-file", os.path.join(run_dir, "config.yaml"),
            "--eval-only", "DATASETS.ROOT", root, "MODEL.WEIGHTS",
            os.path.join(run_dir, "model_final.pth"), "OUTPUT_DIR", output_dir, *overrides)
    metrics = read_metrics(metrics_file(output_dir))
    rescored_file = os.path.join(output_dir, f"metrics_det_thresh_{PROTOCOL_THRESH}.json")
    if not os.path.isfile(rescored_file):
        printed = run(f"{stage}, rescored at det_thresh {PROTOCOL_THRESH}", "evaluate.py",
                      "--predictions", predictions_file(output_dir), "--dataset", TEST_SET,
                      "DATASETS.ROOT", root, "TEST.DET_THRESH_SEARCH", str(PROTOCOL_THRESH),
                      capture=True)
        with open(rescored_file, "w") as f:
            f.write(printed.strip().splitlines()[-1])
    with open(rescored_file) as f:
        metrics.update({f"@{PROTOCOL_THRESH}/{k}": v for k, v in json.load(f).items()})
    metrics["query/mean_cosine"] = mean_pairwise_cosine(
        Predictions.load(predictions_file(output_dir)).query_embeddings)
    return metrics


def mean_pairwise_cosine(embeddings) -> float:
    """Mean cosine between different rows of unit vectors [Q, D]: 1 when the embeddings have
    collapsed to one direction, about 0 for independent identities."""
    count = len(embeddings)
    if count < 2:
        return float("nan")
    total = embeddings.sum(0)
    return float((total @ total - (embeddings * embeddings).sum()) / (count * (count - 1)))


def teacher_ceiling(teacher_dir: str) -> dict:
    """The teacher's last retrieval on ground-truth boxes (the ceiling of PSDiff's search)."""
    with open(os.path.join(teacher_dir, "metrics.json")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return next((row for row in reversed(rows) if "teacher/mAP" in row), {})


def headline(metrics: dict, keys=HEADLINE) -> str:
    return "  ".join(f"{k} {metrics[k]:.3f}" for k in keys if k in metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="output/demo", help="everything goes here")
    parser.add_argument("--steps", type=int, nargs="+", metavar="N",
                        help="sampling steps to evaluate (Fig. 6); default: the recipe's own; "
                             "`--steps 1 2 4 8` takes about 7 minutes more on 2 cores")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="DATASETS.ROOT DIR: where the benchmark is (default: its rule)")
    args = parser.parse_args()

    start = time.time()
    root = datasets_root(args.opts)
    out = os.path.abspath(args.output_dir)
    teacher_dir = prepare(root, out)
    psdiff_dir = os.path.join(out, "psdiff")
    train("4/5 PSDiff", root, teacher_dir, psdiff_dir)
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(psdiff_dir, "config.yaml"))

    step_counts = sorted(set(args.steps or (cfg.MODEL.PSDIFF.SAMPLE_STEPS,)))
    step_dirs = [evaluation_dir(psdiff_dir, os.path.join(out, "steps", str(steps)),
                                "MODEL.PSDIFF.SAMPLE_STEPS", str(steps)) for steps in step_counts]
    step_metrics = [evaluate(f"5/5 evaluation, {steps} sampling steps", root, psdiff_dir, folder,
                             "MODEL.PSDIFF.SAMPLE_STEPS", str(steps))
                    for steps, folder in zip(step_counts, step_dirs)]

    figures = os.path.join(out, "figures")
    if len(step_counts) > 1:
        run("figures", "plot_results.py", "steps", "--run", *map(metrics_file, step_dirs),
            "--out", os.path.join(figures, "fig6_sampling_steps.png"))
    run("figures", "plot_results.py", "gallery-size", "--run",
        f"PSDiff={metrics_file(psdiff_dir)}", "--out",
        os.path.join(figures, "fig4_gallery_size.png"))
    run("figures", "plot_results.py", "search-result", "--predictions",
        predictions_file(psdiff_dir), "--dataset", TEST_SET, "--query", "0", "1", "2", "3",
        "--top-k", "5", "--out", os.path.join(figures, "search_query{query}.jpg"),
        "DATASETS.ROOT", root, capture=True)

    demo_thresh = cfg.TEST.DET_THRESH_SEARCH
    search = ("search/mAP", "search/top1")
    print("\nPSDiff on the synthetic CUHK-SYSU benchmark (gallery 100):")
    for steps, metrics in zip(step_counts, step_metrics):
        rescored = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("@")}
        print(f"  {steps} step{'s' if steps > 1 else ' '}: {headline(metrics)}  (det_thresh "
              f"{demo_thresh})  |  {headline(rescored, search)}  (det_thresh {PROTOCOL_THRESH})")
    ceiling = teacher_ceiling(teacher_dir)
    print(f"  teacher on ground-truth boxes (search ceiling): "
          f"{headline(ceiling, ('teacher/mAP', 'teacher/top1'))}")
    print(f"\nlogs, checkpoints and TensorBoard events: {out}\nfigures: {figures}")
    print(f"the demo took {(time.time() - start) / 60:.1f} minutes (stages whose output "
          "existed were skipped)")


if __name__ == "__main__":
    main()
