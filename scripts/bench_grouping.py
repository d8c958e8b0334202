"""Length-grouped against random training batches, mtdnn only, paired by seed: what grouping costs
or gives in quality, and what it saves in time, per task type.

    MTDNN_MORE_DIR=../shared/data/more python scripts/bench_grouping.py --only pos \\
        --train-rows conll=0 --seeds 1 2 3

Each (unit, batches, seed) is one mtdnn run of bench_task_types.py's quality or conll units (its
options: --only, --seeds, --epochs, --train-rows, --dev-rows, ...; the same child, spec, budget and
scoring), with every task's `group_by_length` set explicitly: `grouped` (length-grouped batches
inside each task, windows of 50 batches) or `random` (plain shuffled batches), whatever the task
type's default is. Both arms train the same examples in the same number of optimizer steps; only
the batches' composition differs. Results are stored one JSON per run under --out (a rerun goes on
where it stopped); the report gives each arm's mean ± std over seeds, the paired difference
random − grouped with its 95% t-interval over seeds, and training seconds per arm.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_results as br  # noqa: E402
import bench_task_types as btt  # noqa: E402
from task_types_report import fmt_interval, metric_values, paired, summary_line  # noqa: E402
from task_types_units import REPORTED, SHORT, UNITS, unit_config  # noqa: E402

BATCHES = ("grouped", "random")


def grouping_config(args: Any, unit: str, batches: str, seed: int, out: Path) -> dict[str, Any]:
    """bench_task_types' mtdnn config of (unit, seed), every task's grouping set explicitly."""
    cfg = unit_config(args, unit, "mtdnn", seed, out)
    flag = "true" if batches == "grouped" else "false"
    overrides = [o for o in cfg["overrides"] if not o.startswith("train.group_by_length=")]
    overrides += [f"tasks.{t}.group_by_length={flag}" for t in UNITS[unit].tasks]
    settings = {**cfg["settings"], "overrides": overrides, "batches": batches}
    return {**cfg, **settings, "settings": settings,
            "run_dir": str(out / "runs" / f"{unit}-{batches}-seed{seed}")}


def result_key(unit: str, batches: str, seed: int) -> str:
    return f"{unit}/{batches}/seed{seed}"


def report(results: dict[tuple[str, str, int], dict[str, Any]], units: list[str]) -> str:
    lines = ["| unit | metric | seeds | grouped | random | Δ random − grouped | 95% CI of Δ "
             "| train s grouped | train s random |", "|---|" + "---:|" * 8]
    for unit in units:
        arms = {b: {n: r for (u, bb, n), r in results.items() if u == unit and bb == b}
                for b in BATCHES}
        secs = {b: br.fmt_mean_std([r["train"]["train_s"] for r in arms[b].values()], 1.0, 0)
                for b in BATCHES}
        for task in UNITS[unit].tasks:
            for metric in REPORTED.get(task, ()):
                values = {b: metric_values(arms[b], task, metric) for b in BATCHES}
                diffs = paired(values["random"], values["grouped"])
                delta = f"{100 * sum(diffs) / len(diffs):+.1f}" if diffs else "-"
                lines.append(f"| {unit if len(UNITS[unit].tasks) == 1 else f'{unit}:{task}'} "
                             f"| {SHORT.get(metric, metric)} | {len(diffs)} "
                             f"| {br.fmt_mean_std(list(values['grouped'].values()))} "
                             f"| {br.fmt_mean_std(list(values['random'].values()))} | {delta} "
                             f"| {fmt_interval(diffs)} | {secs['grouped']} | {secs['random']} |")
    return "\n".join(lines) + (
        "\n\nDev metrics x100, mean ± sample std over seeds; Δ: mean of the per-seed paired "
        "differences, its 95% t-interval over seeds ('-' with one seed); train s: from the "
        "first training batch to the last optimizer step, mean ± std.")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:  # children are bench_task_types' own
        return btt.main(argv)
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv = [*argv, "--out", "runs/bench_grouping"]
    args = btt.parse_args(argv)
    units = [u for u in args.units if UNITS[u].part != "speed"]
    if not units:
        sys.exit("--only names no quality or conll unit")
    bc.child_env()
    out = Path(args.out).absolute()
    store, logs = br.ResultStore(out / "results"), out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MTDNN_CACHE", str(out / "cache"))
    runs = [(u, b, s) for s in args.seeds for u in units for b in BATCHES]
    print(f"machine: {bc.machine_line(bc.machine_info())}\nout: {out}\nplan: {len(runs)} runs",
          flush=True)
    if args.dry_run:
        for r in runs:
            print("  " + "/".join(map(str, r)))
        return
    failed = []
    for unit, batches, seed in runs:
        cfg, key = grouping_config(args, unit, batches, seed, out), result_key(unit, batches, seed)
        stored = store.get(key)
        if stored is not None and stored.get("settings") == cfg["settings"]:
            continue
        if stored is not None:
            sys.exit(f"{store.path(key)} was made with other settings: give another --out")
        print(f"{key}: running", flush=True)
        try:
            result = bc.run_child(Path(__file__), cfg, logs, key.replace("/", "-"))
        except RuntimeError as e:
            print(f"{key}: FAILED\n{e}", flush=True)
            failed.append(key)
            continue
        store.put(key, result)  # the child's result holds its settings
        print(f"{key}: {summary_line(result)}", flush=True)
    results = {r: stored for r in runs if (stored := store.get(result_key(*r))) is not None}
    text = report(results, units)
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")
    if failed:
        sys.exit(f"failed runs (see {logs}): {', '.join(failed)}; rerun to retry them")


if __name__ == "__main__":
    main()
