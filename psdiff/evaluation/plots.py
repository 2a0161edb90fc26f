"""The paper's result figures as PNG plus Markdown tables, from metrics dicts.

- Fig. 4: CUHK-SYSU search mAP against gallery size (50 ... 4000), one line per run;
- Fig. 6: search mAP / top-1 and detection AP against the number of sampling steps.

Inputs are the flat metrics dicts of `evaluate` (`search@{N}/mAP`, `search/mAP`, `det/AP`, ...).
matplotlib runs on the Agg backend: no display is needed.
"""

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from psdiff.data.protocol import gallery_size_key  # noqa: E402

PAPER_GALLERY_SIZES = (50, 100, 500, 1000, 2000, 4000)  # Fig. 4's x axis


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table; floats are printed as percentages with one decimal."""
    def cell(value):
        """Percent for floats, text otherwise."""
        return f"{100 * value:.1f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def gallery_size_series(metrics: dict, sizes: Sequence[int] = PAPER_GALLERY_SIZES) -> dict:
    """{N: search@N/mAP} for the sizes present in a metrics dict."""
    keys = {n: f"{gallery_size_key(n)}/mAP" for n in sizes}
    return {n: metrics[key] for n, key in keys.items() if key in metrics}


def _save(fig, path: str, table: str) -> str:
    """Write the figure and, beside it, the table as `<path without extension>.md`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    table_path = os.path.splitext(path)[0] + ".md"
    with open(table_path, "w") as f:
        f.write(table)
    return table_path


def plot_gallery_size(runs: dict[str, dict], path: str) -> str:
    """Fig. 4: mAP against gallery size for each run `{label: metrics dict}`; returns the table.

    The x axis is logarithmic, as the sizes span 50 to 4000.
    """
    series = {label: gallery_size_series(m) for label, m in runs.items()}
    sizes = sorted({n for s in series.values() for n in s})
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, points in series.items():
        ax.plot(list(points), [100 * v for v in points.values()], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(n) for n in sizes])
    ax.set_xlabel("gallery size")
    ax.set_ylabel("mAP (%)")
    ax.set_title("CUHK-SYSU: mAP vs gallery size")
    ax.grid(alpha=0.3)
    ax.legend()
    table = markdown_table(["run"] + [str(n) for n in sizes],
                           [[label] + [points.get(n, "-") for n in sizes]
                            for label, points in series.items()])
    _save(fig, path, table)
    return table


def plot_sampling_steps(steps: Sequence[int], metrics: Sequence[dict], path: str) -> str:
    """Fig. 6: search mAP, top-1 and detection AP against sampling steps; returns the table.

    `metrics[i]` is the metrics dict of the evaluation run with `steps[i]` steps.
    """
    order = sorted(range(len(steps)), key=lambda i: steps[i])
    steps = [steps[i] for i in order]
    metrics = [metrics[i] for i in order]
    curves = (("search/mAP", "search mAP"), ("search/top1", "search top-1"),
              ("det/AP", "detection AP@0.5"))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in curves:
        ax.plot(steps, [100 * m[key] for m in metrics], marker="o", label=label)
    ax.set_xticks(steps)
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("%")
    ax.set_title("Performance with increasing steps")
    ax.grid(alpha=0.3)
    ax.legend()
    table = markdown_table(["steps"] + [label for _, label in curves],
                           [[s] + [m[key] for key, _ in curves] for s, m in zip(steps, metrics)])
    _save(fig, path, table)
    return table
