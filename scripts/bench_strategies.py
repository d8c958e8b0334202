"""Multi-task strategies on GLUE: each strategy's dev metrics next to plain alternating training
with the same budget, and what it costs per step.

    python scripts/bench_strategies.py --quick --markdown /tmp/strategies.md

Every strategy is a list of mtdnn spec overrides (README "Multi-task strategies") on top of the
same run: task_specs/glue.yaml's tasks (default RTE, MRPC, STS-B, CoLA), the same training rows,
optimizer settings and seed. `alternating` (one task per step, proportional sampler: MT-DNN) is
the baseline.

The same budget: B = ceil(epochs x the batches of one pass over every task), the number of batches
alternating training processes. Alternating-step strategies run B optimizer steps of one batch;
joint-step strategies (one batch of every task per step) run ceil(epochs x ceil(batches / K))
steps of K batches, which is how the trainer defines a joint epoch; `continual`'s stages split the
B steps in proportion to the batches of the tasks each stage trains. Every count is set with
train.max_steps (or the stages' max_steps), so that a sampler whose epoch is defined otherwise
(main_ratio) still gets the same budget; the table shows the batches and examples each run did
process.

Each strategy runs in its own child process (a peak RSS of its own); its result is stored as JSON
under --out and skipped on a rerun with the same settings. A strategy that fails (a feature not
built yet, a spec error, a crash) is recorded with its error and the benchmark goes on; failed
strategies are tried again by the next run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_meter as bm  # noqa: E402
import bench_quality_setup as bqs  # noqa: E402
import bench_results as br  # noqa: E402

# _flow and strategy_tables are re-exported (`x as x`): tests/test_bench_scripts.py reaches them
# through this module.
from strategies_overrides import (  # noqa: E402
    BASELINE,
    COST,
    STRATEGIES,
    Budget,
    budget_overrides,
    strategy_overrides,
)
from strategies_overrides import _flow as _flow  # noqa: E402
from strategies_report import report, short_error  # noqa: E402
from strategies_report import strategy_tables as strategy_tables  # noqa: E402

PRESETS = {"full": {"seeds": [1], "max_train": 0, "epochs": 3.0},
           "quick": {"seeds": [1], "max_train": 1000, "epochs": 2.0}}


# ---------------------------------------------------------------------------------------------
# The child: one strategy and seed


def final_metrics(result: Any) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} of a TrainResult, or of the last stage of a staged run's
    StagesResult (mtdnn.continual)."""
    stages = getattr(result, "stages", None)
    if isinstance(stages, list) and stages:
        result = stages[-1]
    return {task: m["dev"] for task, m in result.metrics.items()}


def child(config_path: str, result_path: str) -> None:
    bc.child_env()
    cfg = json.loads(Path(config_path).read_text(encoding="utf-8"))
    counter = bm.TrainCounter()
    out = Path(cfg["output_dir"])
    result: dict[str, Any] = {"strategy": cfg["strategy"], "seed": cfg["seed"],
                              "settings": cfg["settings"]}
    try:
        spec = bc.glue_spec(cfg["tasks"], cfg["overrides"])
        if spec.stages:
            from mtdnn.continual import train_stages

            trained = train_stages(spec, progress=False, instrument=counter)
        else:
            from mtdnn.trainer import train

            trained = train(spec, progress=False, instrument=counter)
        result["metrics"] = final_metrics(trained)
        if spec.stages:  # every stage's dev metrics: forgetting of the early tasks
            result["stage_metrics"] = trained.metrics
        result["status"] = "ok"
    except Exception as e:  # recorded in the table; the benchmark goes on with the next strategy
        traceback.print_exc()
        result["status"] = "failed"
        result["error"] = f"{type(e).__name__}: {e}"
    records = br.read_train_log(out / "train_log.jsonl")
    result.update(counter.totals(), loop_s=br.loop_seconds(records),
                  peak_rss_mb=bc.peak_rss_mb())
    if not cfg["keep_checkpoints"]:
        for best in out.rglob("best"):
            shutil.rmtree(best, ignore_errors=True)
    Path(result_path).write_text(json.dumps(result), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bc.common_parser(__doc__.split("\n\n")[0], lr=1e-4, out="runs/bench_strategies",
                         out_help="results (one JSON per strategy and seed), logs, run "
                                  "directories",
                         lr_help="a small encoder takes a larger step than BERT-base "
                                 "(task_specs/demo.yaml)")
    bqs.add_quality_args(p, PRESETS, quick_help="")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES),
                   help=f"{BASELINE} is always run (the baseline)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep every run's best/")
    args = bqs.finish_args(p, p.parse_args(argv), PRESETS)
    if len(args.tasks) < 2:
        p.error("multi-task strategies need at least two --tasks")
    # The baseline first, then the table order.
    args.strategies = [s for s in STRATEGIES if s in args.strategies or s == BASELINE]
    return args


def estimate_run(name: str, budget: Budget, sizes: bqs.Sizes) -> float:
    """Seconds one strategy takes, from the development machine's rates (bench_quality_setup)."""
    tokens = budget.epochs * sum(sizes.train_tokens.values())
    return (bqs.OVERHEAD_CHILD_S + bqs.OVERHEAD_RUN_S * (2 if name == "continual" else 1)
            + COST.get(name, 1.0) * tokens / bqs.RATE_TRAIN_TOKENS_S
            + sum(sizes.dev_tokens.values()) / bqs.RATE_EVAL_TOKENS_S)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        return child(*args.child)
    from mtdnn.spec import SpecError

    out, store, logs, sizes = bqs.open_out(args)
    train_rows, dev_rows = sizes.train_rows, sizes.dev_rows
    budget = Budget(tuple(args.tasks), {t: bqs.batches(n, args.batch_size)
                                         for t, n in train_rows.items()}, args.epochs)

    units = [(s, seed) for seed in args.seeds for s in args.strategies]
    configs: dict[tuple[str, int], dict[str, Any]] = {}
    for name, seed in units:
        own = strategy_overrides(name, budget)
        overrides = bqs.base_overrides(
            glue_dir=str(Path(args.glue_dir).absolute()), encoder=args.encoder, seed=seed,
            lr=args.lr, batch_size=args.batch_size, max_seq_length=args.max_seq_length,
            warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, tasks=args.tasks,
            max_train=args.max_train) + budget_overrides(own, budget) + own
        run_dir = out / "runs" / name / f"seed{seed}"
        overrides.append(f"output_dir={run_dir}")
        configs[(name, seed)] = {
            "strategy": name, "seed": seed, "tasks": args.tasks, "overrides": overrides,
            "output_dir": str(run_dir), "keep_checkpoints": args.keep_checkpoints,
            "settings": {"tasks": args.tasks, "overrides": overrides}}
    stored = {u: store.get(f"{u[0]}/seed{u[1]}") for u in units}
    stale = [f"{u[0]}/seed{u[1]}" for u, r in stored.items()
             if r is not None and r.get("settings") != configs[u]["settings"]]
    if stale:
        sys.exit(f"{out} holds results made with other settings ({', '.join(stale)}): give "
                 "another --out, or delete them to run them again")
    todo = [u for u in units if (stored[u] or {}).get("status") != "ok"]
    estimate = {u: estimate_run(u[0], budget, sizes) for u in units}
    print(f"machine: {bc.machine_line(bc.machine_info())}\nout: {out}\n"
          f"budget: {budget.alternating_steps} alternating / {budget.joint_steps} joint steps\n"
          f"plan: {len(units)} runs, {len(units) - len(todo)} already stored:")
    for u in units:
        state = "stored" if u not in todo else f"~{estimate[u] / 60:.1f} min" + (
            " (failed before: trying again)" if stored[u] else "")
        print(f"  {u[0]:<15} seed {u[1]}: {state}")
    print(f"estimated duration: {bc.fmt_duration(sum(estimate[u] for u in todo))} (rates of the "
          "2-core development machine)", flush=True)
    if args.dry_run:
        return

    for name, seed in todo:
        key, tag, cfg = f"{name}/seed{seed}", f"{name}-seed{seed}", configs[(name, seed)]
        try:  # a spec error is found here, without starting a child
            bc.glue_spec(args.tasks, cfg["overrides"])
        except SpecError as e:
            r = {"strategy": name, "seed": seed, "settings": cfg["settings"],
                 "status": "failed", "error": f"SpecError: {'; '.join(e.problems)}"}
        else:
            print(f"{key}: running (log: {logs / tag}.log)", flush=True)
            try:
                r = bc.run_child(Path(__file__), cfg, logs, tag)
            except RuntimeError as e:  # the child died (killed, out of memory)
                r = {"strategy": name, "seed": seed, "settings": cfg["settings"],
                     "status": "failed", "error": str(e).splitlines()[0]}
        store.put(key, r)
        if r["status"] == "ok":
            print(f"{key}: mean {100 * br.main_score(r['metrics'], args.tasks):.1f}, "
                  f"{r['train_s'] / max(r['steps'], 1):.3f} s/step, {r['steps']} steps, "
                  f"{r['train_rows']} examples", flush=True)
        else:
            print(f"{key}: FAILED: {short_error(r['error'], 400)}", flush=True)

    results = {u: r for u in units if (r := store.get(f"{u[0]}/seed{u[1]}")) is not None}
    summary_path = out / "summary.json"
    info = {"args": vars(args), "budget": budget, "machine": bc.machine_info(),
            "command": bc.command_line(), "train_rows": train_rows, "dev_rows": dev_rows,
            "summary": summary_path}
    text = report(results, info)
    summary_path.write_text(json.dumps(
        {"machine": info["machine"], "command": info["command"], "args": vars(args),
         "train_rows": train_rows, "dev_rows": dev_rows,
         "budget": {"alternating_steps": budget.alternating_steps,
                    "joint_steps": budget.joint_steps, "stages": budget.stages()},
         "overrides": {n: strategy_overrides(n, budget) for n in args.strategies},
         "results": {f"{s}/seed{seed}": r for (s, seed), r in results.items()}}, indent=1),
        encoding="utf-8")
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    print(f"wrote {summary_path}" + (f", {args.markdown}" if args.markdown else ""))


if __name__ == "__main__":
    main()
