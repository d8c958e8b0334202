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
import math
import shutil
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_meter as bm  # noqa: E402
import bench_quality_setup as bqs  # noqa: E402
import bench_results as br  # noqa: E402

PRESETS = {"full": {"seeds": [1], "max_train": 0, "epochs": 3.0},
           "quick": {"seeds": [1], "max_train": 1000, "epochs": 2.0}}
BASELINE = "alternating"


@dataclass(frozen=True)
class Budget:
    """The training budget of every strategy, from the tasks' batches per pass."""

    tasks: tuple[str, ...]
    batches: dict[str, int]  # batches of one pass over each task's training rows
    epochs: float

    @property
    def alternating_steps(self) -> int:
        """B: alternating optimizer steps, one batch each."""
        return math.ceil(self.epochs * sum(self.batches.values()))

    @property
    def joint_steps(self) -> int:
        """Joint optimizer steps (K batches each) that process about B batches."""
        return math.ceil(self.epochs * math.ceil(sum(self.batches.values()) / len(self.tasks)))

    @property
    def main_task(self) -> str:
        return "rte" if "rte" in self.tasks else self.tasks[0]

    @property
    def low_task(self) -> str:
        """The hierarchical strategy's task on a lower layer: CoLA (syntax), else the last."""
        return "cola" if "cola" in self.tasks else self.tasks[-1]

    @property
    def dwa_period(self) -> int:
        """About ten loss-averaging periods over the run (DWA's default, one epoch, gives a
        one-epoch run no period to compare)."""
        return max(1, self.alternating_steps // 10)

    def groups(self) -> dict[str, str]:
        """Soft sharing in two groups: the sentence-pair inference tasks and the others."""
        return {t: "nli" if t in ("rte", "mrpc", "mnli", "qnli", "wnli") else "sim"
                for t in self.tasks}

    def stages(self) -> list[dict[str, Any]]:
        """Two stages (STS-B and MRPC first, then the rest), splitting the B steps in proportion
        to the batches of one pass over the tasks each stage trains (stage 2 trains all)."""
        first = [t for t in ("stsb", "mrpc") if t in self.tasks] or list(self.tasks[:1])
        rest = [t for t in self.tasks if t not in first]
        if not rest:
            return [{"tasks": first, "max_steps": self.alternating_steps}]
        one = sum(self.batches[t] for t in first)
        both = sum(self.batches.values())
        steps1 = max(1, round(self.alternating_steps * one / (one + both)))
        return [{"tasks": first, "max_steps": steps1},
                {"tasks": rest, "max_steps": max(1, self.alternating_steps - steps1)}]


def _flow(value: Any) -> str:
    """A value as one line of YAML flow style (overrides are parsed as YAML)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value)


# name -> (what it is, its overrides given the budget). The order is the run and table order.
STRATEGIES: dict[str, tuple[str, Callable[[Budget], list[str]]]] = {
    "alternating": ("one task per step, proportional sampler (MT-DNN); the baseline",
                    lambda b: []),
    "joint": ("one batch of every task per step, losses summed",
              lambda b: ["train.step_mode=joint"]),
    "uncertainty": ("learned loss weights exp(-s_i) L_i + s_i (Kendall et al. 2018)",
                    lambda b: ["train.loss_weighting=uncertainty", "train.weighting_lr=1e-2"]),
    "dwa": ("dynamic weight average over loss ratios (Liu et al. 2019)",
            lambda b: ["train.loss_weighting=dwa", f"train.dwa_period={b.dwa_period}"]),
    "gradnorm": ("joint; weights that balance gradient norms (Chen et al. 2018)",
                 lambda b: ["train.step_mode=joint", "train.loss_weighting=gradnorm",
                            "train.weighting_lr=1e-2"]),
    "pcgrad": ("joint; conflicting gradients projected (Yu et al. 2020)",
               lambda b: ["train.step_mode=joint", "train.gradient_surgery=pcgrad"]),
    "cagrad": ("joint; conflict-averse gradient, c = 0.5 (Liu et al. 2021)",
               lambda b: ["train.step_mode=joint", "train.gradient_surgery=cagrad"]),
    "main_ratio": ("every main-task batch plus as many auxiliary ones (MT-DNN --ratio)",
                   lambda b: ["train.sampler=main_ratio", f"train.main_task={b.main_task}",
                              "train.main_ratio=1.0"]),
    "annealed": ("sampling p_i ~ n_i^a, a from 1 down to 0.2 (Stickland and Murray 2019)",
                 lambda b: ["train.sampler=annealed"]),
    "soft": ("soft sharing: one encoder copy per task, pulled together by an L2 penalty",
             lambda b: ["train.sharing=soft"]),
    "soft_groups": ("soft sharing in two groups: pair inference tasks / the others",
                    lambda b: ["train.sharing=soft"] + [f"tasks.{t}.encoder_group={g}"
                                                        for t, g in b.groups().items()]),
    "hierarchical": ("a low-level task's head on encoder layer 3 of 6, the others on the last",
                     lambda b: [f"tasks.{b.low_task}.layer=3"]),
    "task_embedding": ("a learned vector per task added to the input embeddings (ERNIE 2.0)",
                       lambda b: ["task_embedding=true"]),
    "continual": ("two stages: STS-B + MRPC, then all tasks (ERNIE 2.0 continual training)",
                  lambda b: [f"stages={_flow(b.stages())}"]),
}
# Rough cost per batch relative to alternating, for the duration estimate only.
COST = {"gradnorm": 1.2, "pcgrad": 1.2, "cagrad": 1.2, "soft": 1.15, "soft_groups": 1.1}


def is_joint(overrides: list[str]) -> bool:
    return "train.step_mode=joint" in overrides


def strategy_overrides(name: str, budget: Budget) -> list[str]:
    """The strategy's own overrides (as listed in the report)."""
    return STRATEGIES[name][1](budget)


def budget_overrides(own: list[str], budget: Budget) -> list[str]:
    """The step count that gives a strategy the common budget (see the module docstring)."""
    if any(o.startswith("stages=") for o in own):
        return [f"train.epochs={budget.epochs}"]  # the stages carry their own max_steps
    steps = budget.joint_steps if is_joint(own) else budget.alternating_steps
    return [f"train.epochs={budget.epochs}", f"train.max_steps={steps}"]


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
# Report (pure: tested on crafted numbers in tests/test_bench_scripts.py)


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
