"""Figures: a training run's curves (`curves.png` beside its train_log.jsonl) and a comparison's
routes with their intervals (`report.png` of `mtdnn compare`).

matplotlib is an optional extra (`pip install "mtdnn[plot]"`); without it each function prints
one line saying how to get the figure and returns None.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

INSTALL = 'pip install "mtdnn[plot]"  (or: pip install matplotlib)'


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_run(out: str | Path, metrics: dict[str, str] | None = None) -> Path | None:
    """Draws each task's training loss and dev metric over steps from `out/train_log.jsonl` into
    `out/curves.png`.

    Args:
        out: a run's output directory.
        metrics: task -> the dev metric to draw (default: the first one logged for the task).
    Returns:
        The figure's path, or None when matplotlib is missing or nothing was logged.
    """
    out = Path(out)
    log = out / "train_log.jsonl"
    if not log.is_file():
        return None
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()
               if line.strip()]
    losses: dict[str, list[tuple[int, float]]] = {}
    dev: dict[str, list[tuple[int, float]]] = {}
    chosen = dict(metrics or {})
    for r in records:
        for key, value in r.items():
            if key.startswith("loss/"):
                losses.setdefault(key[5:], []).append((r["step"], value))
            elif key.startswith("dev/"):
                _, task, metric = key.split("/", 2)
                if chosen.setdefault(task, metric) == metric:
                    dev.setdefault(f"{task} {metric}", []).append((r["step"], value))
    if not losses and not dev:
        return None
    plt = _pyplot()
    if plt is None:
        print(f"mtdnn: no curves.png for {out}: matplotlib is not installed ({INSTALL})")
        return None
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(11, 4))
    for task, points in losses.items():
        ax_loss.plot(*zip(*points), label=task)
    ax_loss.set(xlabel="optimizer step", ylabel="training loss (mean over the log interval)",
                title="training loss")
    for name, points in dev.items():
        ax_dev.plot(*zip(*points), marker="o", label=name)
    ax_dev.set(xlabel="optimizer step", ylabel="dev metric", title="dev metrics")
    for ax in (ax_loss, ax_dev):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_compare(report: dict[str, Any], path: str | Path) -> Path | None:
    """Each target's paired differences to the baseline route (single unless the report names
    another; main metric, x100): the mean over seeds with its 95% t-interval (thick) and bootstrap
    interval (thin), one row per route."""
    from mtdnn.compare_report import baseline_of

    base = baseline_of(report["settings"])
    targets = report["targets"]
    routes = [r for r in report["settings"]["routes"] if r != base]
    if not targets or not routes:
        return None
    plt = _pyplot()
    if plt is None:
        print(f"mtdnn: no {Path(path).name}: matplotlib is not installed ({INSTALL})")
        return None
    fig, axes = plt.subplots(1, len(targets), squeeze=False,
                             figsize=(4.2 * len(targets), 1.4 + 0.7 * len(routes)))
    for ax, (target, entry) in zip(axes[0], targets.items()):
        main = entry["main_metric"]
        for y, route in enumerate(routes):
            d = entry["differences"].get(route, {}).get(main)
            if d is None or math.isnan(d["mean"]):
                continue
            for (lo, hi), dy, color, label in (
                    (d["t_interval"], 0.12, "#336699", "95% t-interval over seeds"),
                    (d["bootstrap"], -0.12, "#dd8833", "95% bootstrap over dev rows")):
                if not (math.isnan(lo) or math.isnan(hi)):
                    ax.plot([100 * lo, 100 * hi], [y + dy, y + dy], color=color, linewidth=3,
                            label=label if y == 0 else None)
            ax.plot([100 * d["mean"]], [y], "o", color="#cc3333",
                    label="mean difference" if y == 0 else None)
        ax.axvline(0, color="grey", linewidth=1)
        ax.set_yticks(range(len(routes)), routes)
        ax.set_ylim(-0.5, len(routes) - 0.5)
        ax.set(title=f"{target}: {main}", xlabel=f"difference to {base} (x100)")
        ax.grid(axis="x", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
