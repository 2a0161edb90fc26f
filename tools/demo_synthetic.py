#!/usr/bin/env python
"""`make demo`: the whole method on the bundled synthetic benchmark, on CPU.

1. write the synthetic CUHK-SYSU benchmark (tools/make_synthetic.py) if it is missing,
2. train the ReID teacher, supervised HHCL on ground-truth crops (tools/train_teacher.py),
3. write its embedding targets e0 of Eq. 11 (tools/build_targets.py),
4. train PSDiff on them and evaluate (tools/train_net.py),
5. evaluate again at 1, 2, 4 and 8 sampling steps (Fig. 6) and draw Fig. 4, Fig. 6 and
   search results (tools/plot_results.py).

Every stage is one of the tools a researcher runs by hand, called with the same arguments.
A stage whose output exists is skipped and an interrupted training resumes, so running the
demo again only does what is missing.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from psdiff.data.catalog import resolve_root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEACHER_CONFIG = "configs/teacher/hhcl_r18_synthetic.yaml"
PSDIFF_CONFIG = "configs/synthetic/psdiff_r18_synthetic_cuhk.yaml"
TEST_SET = "synthetic_cuhk_sysu_test"
STEPS = (1, 2, 4, 8)
HEADLINE = ("search/mAP", "search/top1", "det/AP", "det/recall")


def run(stage: str, tool: str, *args: str) -> None:
    """Run one tool of tools/ as a user would; stop the demo if it fails."""
    print(f"\n=== {stage}: {tool} {' '.join(args)}", flush=True)
    start = time.time()
    result = subprocess.run([sys.executable, os.path.join(REPO, "tools", tool), *args], cwd=REPO)
    if result.returncode:
        sys.exit(f"demo stopped: {stage} failed (exit status {result.returncode})")
    print(f"=== {stage} done in {time.time() - start:.0f} s", flush=True)


def metrics_file(output_dir: str) -> str:
    return os.path.join(output_dir, "inference", TEST_SET, "metrics.json")


def headline(path: str) -> dict:
    with open(path) as f:
        data = json.load(f)
    metrics = data.get("metrics", data)
    return {k: metrics[k] for k in HEADLINE if k in metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="output/demo", help="everything goes here")
    parser.add_argument("--root", default="", help="datasets root (default: DATASETS.ROOT rule)")
    args = parser.parse_args()

    root = os.path.abspath(resolve_root(args.root))
    out = os.path.abspath(args.output_dir)
    teacher_dir, psdiff_dir = os.path.join(out, "teacher"), os.path.join(out, "psdiff")
    teacher_weights = os.path.join(teacher_dir, "model_final.pth")
    targets = os.path.join(teacher_dir, "e0.npz")
    psdiff_weights = os.path.join(psdiff_dir, "model_final.pth")
    data = ["DATASETS.ROOT", root]

    if not os.path.isdir(os.path.join(root, "synthetic", "CUHK-SYSU")):
        run("1/5 synthetic benchmark", "make_synthetic.py", "--root",
            os.path.join(root, "synthetic"), "--format", "cuhk_sysu")
    if not os.path.isfile(teacher_weights):
        run("2/5 ReID teacher", "train_teacher.py", "--config-file", TEACHER_CONFIG, "--resume",
            *data, "OUTPUT_DIR", teacher_dir)
    if not os.path.isfile(targets):
        run("3/5 teacher targets e0", "build_targets.py", "--config-file", TEACHER_CONFIG, *data,
            "OUTPUT_DIR", teacher_dir, "TEACHER.WEIGHTS", teacher_weights, "TEACHER.CACHE",
            targets)
    if not os.path.isfile(psdiff_weights):
        run("4/5 PSDiff", "train_net.py", "--config-file", PSDIFF_CONFIG, "--resume", *data,
            "OUTPUT_DIR", psdiff_dir, "TEACHER.CACHE", targets)

    step_metrics = []
    for steps in STEPS:
        step_dir = os.path.join(out, "steps", str(steps))
        if not os.path.isfile(metrics_file(step_dir)):
            run(f"5/5 evaluation, {steps} sampling steps", "train_net.py", "--config-file",
                os.path.join(psdiff_dir, "config.yaml"), "--eval-only", *data,
                "MODEL.WEIGHTS", psdiff_weights, "MODEL.PSDIFF.SAMPLE_STEPS", str(steps),
                "OUTPUT_DIR", step_dir)
        step_metrics.append(metrics_file(step_dir))

    figures = os.path.join(out, "figures")
    run("figures", "plot_results.py", "steps", "--run", *step_metrics,
        "--out", os.path.join(figures, "fig6_sampling_steps.png"))
    run("figures", "plot_results.py", "gallery-size", "--run",
        f"PSDiff={metrics_file(psdiff_dir)}", "--out",
        os.path.join(figures, "fig4_gallery_size.png"))
    predictions = os.path.join(psdiff_dir, "inference", TEST_SET, "predictions.npz")
    for query in range(4):
        run("figures", "plot_results.py", "search-result", "--predictions", predictions,
            "--dataset", TEST_SET, "--root", root, "--query", str(query), "--k", "5",
            "--out", os.path.join(figures, f"search_query{query}.jpg"))

    print("\nPSDiff on the synthetic CUHK-SYSU benchmark (gallery 100):")
    for steps, path in zip(STEPS, step_metrics):
        values = "  ".join(f"{k} {v:.3f}" for k, v in headline(path).items())
        print(f"  {steps} step{'s' if steps > 1 else ' '}: {values}")
    print(f"\nlogs, checkpoints and TensorBoard events: {out}\nfigures: {figures}")


if __name__ == "__main__":
    main()
