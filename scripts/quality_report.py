"""The report of bench_quality.py: the methods and the paired differences it compares, the table
of the dev metrics over seeds, the Markdown text around it, and the figure of the per-task
training losses. The table and the text are pure: tests/test_bench_scripts.py checks them on
crafted numbers.

Not a module of the package: imported by the scripts beside it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_results as br  # noqa: E402

METHODS = {
    "hf-single": "transformers.Trainer (AutoModelForSequenceClassification), one task at a time, "
                 "dynamic padding + group_by_length",
    "mtdnn-single": "mtdnn train, one task at a time",
    "mtdnn-multi": "mtdnn train, all tasks together, proportional sampler (the same examples per "
                   "task as single)",
    "mtdnn-multi+ft": "mtdnn-multi's final checkpoint fine-tuned per task "
                      "(mtdnn.finetune.finetune_spec)",
}
# Paired differences reported below the methods: (minuend, subtrahend), where both ran.
DIFFERENCES = [("mtdnn-multi", "mtdnn-single"), ("mtdnn-multi+ft", "mtdnn-single"),
               ("mtdnn-multi+ft", "mtdnn-multi"), ("mtdnn-single", "hf-single")]
COLORS = {"hf-single": "#6699cc", "mtdnn-single": "#999999", "mtdnn-multi": "#cc6633",
          "mtdnn-multi+ft": "#339966"}


def quality_table(values: dict[str, dict[int, dict[str, float]]], methods: list[str],
                  tasks: list[str], times: dict[str, dict[str, list[float]]]) -> str:
    """Methods as rows, task metrics as columns (x100, mean ± std over seeds), then one row per
    paired difference of DIFFERENCES whose two methods both ran."""
    columns = [f"{t}/{m}" for t, m in br.metric_columns(tasks)] + ["mean"]
    header = ["method", "seeds"] + [f"{t} {br.METRIC_SHORT.get(m, m)}"
                                    for t, m in br.metric_columns(tasks)] + \
        ["mean", "train s", "wall s"]
    rows = []
    for method in methods:
        per_seed = values.get(method, {})
        t = times.get(method, {})
        rows.append([method, len(per_seed)] +
                    [br.fmt_mean_std([v[c] for v in per_seed.values()]) for c in columns] +
                    [br.fmt_mean_std(t.get("train_s", []), 1.0, 0),
                     br.fmt_mean_std(t.get("wall_s", []), 1.0, 0)])
    for a, b in DIFFERENCES:
        if a in methods and b in methods:
            diff = br.paired_differences(values, a, b)
            rows.append([f"Δ {a} − {b}", len(diff)] +
                        [br.fmt_mean_std([v[c] for v in diff.values()], signed=True)
                         for c in columns] + ["", ""])
    return bc.markdown_table(header, rows)


def method_times(results: dict[tuple[str, int], dict[str, Any]]) -> dict[str, dict[str, list]]:
    out: dict[str, dict[str, list]] = {}
    for (method, _), r in sorted(results.items()):
        t = out.setdefault(method, {"train_s": [], "wall_s": [], "peak_rss_mb": []})
        t["train_s"].append(r["train_s"])
        t["wall_s"].append(r.get("child_wall_s", 0.0))
        t["peak_rss_mb"].append(r.get("peak_rss_mb", 0.0))
    return out


def report(values: dict[str, dict[int, dict[str, float]]], times: dict[str, dict[str, list]],
           info: dict[str, Any]) -> str:
    a = info["args"]
    methods, tasks = a["methods"], a["tasks"]
    rows = ", ".join(f"{t} ({info['train_rows'][t]:,} / {info['dev_rows'][t]:,})" for t in tasks)
    budget = sum(info["train_rows"].values()) * a["epochs"]
    legend = "\n".join(f"- `{m}`: {METHODS[m]}; peak RSS "
                       f"{br.fmt_mean_std(times.get(m, {}).get('peak_rss_mb', []), 1.0, 0)} MiB"
                       for m in methods)
    plot = (f"\n![training loss per task, seed {info['plot_seed']}]({info['plot']})\n"
            if info.get("plot") else "")
    return (
        f"### Quality: single-task vs multi-task vs multi-task + fine-tuning "
        f"({len(a['seeds'])} seed(s))\n\n"
        f"Command: `{info['command']}`\n\n"
        f"Machine: {bc.machine_line(info['machine'])}.\n\n"
        f"Encoder {a['encoder']}; tasks (training rows / dev rows): {rows}. "
        f"Learning rate {a['lr']:g}, batch {a['batch_size']}, {a['epochs']:g} epoch(s), linear "
        f"schedule with warmup ratio {a['warmup_ratio']:g}, weight decay {a['weight_decay']:g}, "
        f"max_seq_length {a['max_seq_length']}, fp32; seeds {', '.join(map(str, a['seeds']))}.\n"
        f"Budget: every method except +ft trains {budget:,.0f} examples per seed ({a['epochs']:g} "
        f"passes over each task's rows, in one run or in one run per task); mtdnn-multi+ft adds "
        f"{a['ft_epochs']:g} epoch(s) per task at learning rate {a['ft_lr']:g} "
        f"({sum(info['train_rows'].values()) * a['ft_epochs']:,.0f} examples more). Each run is "
        "evaluated once, after its last step: the kept checkpoint is the final model.\n\n"
        f"{legend}\n\n"
        f"{quality_table(values, methods, tasks, times)}\n\n"
        "Dev metrics x100 (mtdnn.metrics on the full dev sets), mean ± sample std over seeds; "
        "`mean`: the mean over tasks of each task's main metric (glue.yaml's first: MRPC "
        "accuracy), mtdnn's selection score. Δ rows: mean ± std of the per-seed paired "
        "differences. `train s`: training loops only (sum over a method's runs); `wall s`: the "
        "whole child process (model loads, tokenization, evaluation). Per-seed values: "
        f"{info['summary']}.\n{plot}")


def plot_losses(results: dict[tuple[str, int], dict[str, Any]], methods: list[str],
                tasks: list[str], seed: int, epochs: float, path: Path) -> None:
    """One panel per task: the training loss of every method (seed `seed`) against epochs of that
    task's data; mtdnn-multi+ft continues from mtdnn-multi's last epoch."""
    import matplotlib

    matplotlib.use("Agg")  # no display on benchmark machines
    import matplotlib.pyplot as plt

    cols = 2 if len(tasks) > 1 else 1
    nrows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.5 * cols, 3.6 * nrows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for method in methods:
            r = results.get((method, seed))
            if r is None:
                continue
            offset = epochs if method == "mtdnn-multi+ft" else 0.0
            points = [p for run in r["runs"] for p in run["loss"].get(task, [])]
            if points:
                ax.plot([p[0] + offset for p in points], [p[1] for p in points], label=method,
                        color=COLORS.get(method), linewidth=1.2, marker=".", markersize=3)
        ax.set_title(task)
        ax.set_xlabel("epochs of the task's training rows")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"training loss per task (seed {seed}; mean over each log interval)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
