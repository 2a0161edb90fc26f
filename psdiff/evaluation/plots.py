"""The paper's result figures as PNG plus Markdown tables, from metrics dicts.

- Fig. 4: CUHK-SYSU search mAP against gallery size (50 ... 4000), one line per run;
- Fig. 6: detection AP / recall and search mAP / top-1 against the number of sampling steps,
  one line per setting, shaded over seeds.

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


STEP_METRICS = (("det/AP", "detection AP@0.5"), ("det/recall", "detection recall"),
                ("search/mAP", "search mAP"), ("search/top1", "search top-1"))


def spread(values: Sequence[float]):
    """One value as it is; several (seeds) as the text "mean (lowest-highest)" in percent."""
    if len(values) == 1:
        return values[0]
    mean = sum(values) / len(values)
    return f"{100 * mean:.1f} ({100 * min(values):.1f}-{100 * max(values):.1f})"


def plot_sampling_steps(runs: dict[str, dict[int, list[dict]]], path: str) -> str:
    """Fig. 6: detection AP and recall, search mAP and top-1 against the number of sampling
    steps, one panel per metric, one line per setting `{label: {steps: [metrics dict of each
    seed]}}`: the mean over the seeds, shaded from the lowest to the highest. Returns the
    table; its setting column appears when there are several settings."""
    every = [m for points in runs.values() for seeds in points.values() for m in seeds]
    curves = [(key, name) for key, name in STEP_METRICS if all(key in m for m in every)]
    steps = sorted({s for points in runs.values() for s in points})
    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3.2), squeeze=False)
    for ax, (key, name) in zip(axes[0], curves):
        for label, points in runs.items():
            xs = sorted(points)
            values = [[100 * m[key] for m in points[s]] for s in xs]
            line, = ax.plot(xs, [sum(v) / len(v) for v in values], marker="o", label=label)
            if any(len(v) > 1 for v in values):
                ax.fill_between(xs, [min(v) for v in values], [max(v) for v in values],
                                color=line.get_color(), alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xticks(steps)
        ax.set_xticklabels([str(s) for s in steps])
        ax.set_xlabel("sampling steps")
        ax.set_ylabel("%")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    several = len(runs) > 1
    if several:
        axes[0][0].legend(fontsize="small")
    rows = [([label] if several else []) + [s] + [spread([m[key] for m in points[s]])
                                                  for key, _ in curves]
            for label, points in runs.items() for s in sorted(points)]
    table = markdown_table((["setting"] if several else []) + ["steps"]
                           + [name for _, name in curves], rows)
    _save(fig, path, table)
    return table
