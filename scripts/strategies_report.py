"""The report of bench_strategies.py: each strategy's dev metrics and costs over seeds next to
the baseline's, its paired per-seed differences to the baseline, and the Markdown text around
them. Pure: tests/test_bench_scripts.py checks them on crafted numbers.

Not a module of the package: imported by the scripts beside it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_results as br  # noqa: E402
from strategies_overrides import BASELINE, STRATEGIES, strategy_overrides  # noqa: E402


def short_error(text: str, limit: int = 140) -> str:
    """One line of an error for a table cell."""
    line = " ".join(text.split()).replace("|", "/")
    return line if len(line) <= limit else line[:limit - 3] + "..."


def cost_columns(results: list[dict[str, Any]]) -> list[str]:
    """s/step, batches/step, s per 1k training examples, examples trained, peak RSS: means over
    the seeds' runs."""
    def mean(key: str) -> float | None:
        values = [r[key] for r in results if r.get(key) is not None]
        return sum(values) / len(values) if values else None

    steps, rows, seconds = mean("steps"), mean("train_rows"), mean("train_s")
    batches = mean("train_batches")
    if not steps or not rows or seconds is None:
        return ["-"] * 5
    return [f"{seconds / steps:.3f}", f"{batches / steps:.2f}" if batches else "-",
            f"{1000 * seconds / rows:.1f}", f"{rows:,.0f}", f"{mean('peak_rss_mb'):,.0f}"]


def strategy_tables(results: dict[tuple[str, int], dict[str, Any]], strategies: list[str],
                    tasks: list[str]) -> str:
    """The dev metrics and costs of each strategy (x100, mean ± std over seeds), then each
    strategy's paired per-seed difference to the baseline, per task."""
    ok = {k: r for k, r in results.items() if r.get("status") == "ok"}
    values = br.seed_values(ok, tasks)
    columns = [f"{t}/{m}" for t, m in br.metric_columns(tasks)] + ["mean"]
    names = [f"{t} {br.METRIC_SHORT.get(m, m)}" for t, m in br.metric_columns(tasks)]
    rows, diff_rows = [], []
    for name in strategies:
        mine = [r for (s, _), r in sorted(results.items()) if s == name]
        per_seed = values.get(name, {})
        diff = br.paired_differences(values, name, BASELINE)
        failed = [r for r in mine if r.get("status") != "ok"]
        status = "not run" if not mine else "ok" if not failed else \
            f"failed: {short_error(failed[0].get('error', '?'))}"
        cells = [br.fmt_mean_std([v[c] for v in per_seed.values()]) for c in columns]
        delta = br.fmt_mean_std([v["mean"] for v in diff.values()], signed=True) \
            if name != BASELINE else ""
        rows.append([name, len(per_seed), *cells, delta,
                     *cost_columns([r for r in mine if r.get("status") == "ok"]), status])
        if name != BASELINE and diff:
            diff_rows.append([name, len(diff)] + [
                br.fmt_mean_std([v[c] for v in diff.values()], signed=True) for c in columns])
    main = bc.markdown_table(["strategy", "seeds", *names, "mean", f"Δ mean vs {BASELINE}",
                              "s/step", "batches/step", "s/1k examples", "examples trained",
                              "peak RSS MiB", "status"], rows)
    diffs = bc.markdown_table([f"Δ vs {BASELINE}", "seeds", *names, "mean"], diff_rows)
    return f"{main}\n\nPaired per-seed differences to `{BASELINE}`:\n\n{diffs}"


def report(results: dict[tuple[str, int], dict[str, Any]], info: dict[str, Any]) -> str:
    a, budget = info["args"], info["budget"]
    strategies, tasks = a["strategies"], a["tasks"]
    rows = ", ".join(f"{t} ({info['train_rows'][t]:,} / {info['dev_rows'][t]:,})" for t in tasks)
    legend = "\n".join(f"- `{n}`: {STRATEGIES[n][0]}; "
                       f"`{' '.join(strategy_overrides(n, budget)) or '(none)'}`"
                       for n in strategies)
    return (
        f"### Multi-task strategies vs alternating training ({len(a['seeds'])} seed(s))\n\n"
        f"Command: `{info['command']}`\n\n"
        f"Machine: {bc.machine_line(info['machine'])}.\n\n"
        f"Encoder {a['encoder']}; tasks (training rows / dev rows): {rows}. Learning rate "
        f"{a['lr']:g}, batch {a['batch_size']}, linear schedule with warmup ratio "
        f"{a['warmup_ratio']:g}, weight decay {a['weight_decay']:g}, max_seq_length "
        f"{a['max_seq_length']}, fp32; seeds {', '.join(map(str, a['seeds']))}. Budget: "
        f"{a['epochs']:g} epoch(s) = {budget.alternating_steps:,} batches: "
        f"{budget.alternating_steps:,} alternating steps, or {budget.joint_steps:,} joint steps of "
        f"{len(tasks)} batches; continual: stages of "
        f"{' + '.join(str(s['max_steps']) for s in budget.stages())} steps. Each run is "
        "evaluated once, after its last step (the kept checkpoint is the final model).\n\n"
        f"{legend}\n\n{strategy_tables(results, strategies, tasks)}\n\n"
        "Dev metrics x100 (mtdnn.metrics, full dev sets), mean ± sample std over seeds; `mean`: "
        "the mean over tasks of each task's main metric (glue.yaml's first: MRPC accuracy). "
        "Δ: mean ± std of per-seed paired differences. Costs are measured in each child from "
        "outside the package: `s/step` and `s/1k examples` over the training loop only (from "
        "the first training batch to the last optimizer step, evaluations left out), "
        "`batches/step` the training batches collated per optimizer step, `peak RSS` the "
        "child's high-water mark (model loads and tokenization included). Per-run numbers: "
        f"{info['summary']}.\n")
