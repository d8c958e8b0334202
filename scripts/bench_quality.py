"""Quality: single-task vs multi-task vs multi-task + per-task fine-tuning, on GLUE dev sets.

    python scripts/bench_quality.py --quick --markdown /tmp/quality.md --plot-dir /tmp

Four methods per seed, each on the same training rows (the first --max-train rows of each task)
and with the same optimizer settings (learning rate, batch size, epochs, warmup, weight decay,
max_seq_length), scored by mtdnn's metric functions on the same full dev sets:

  hf-single       transformers.Trainer, AutoModelForSequenceClassification, one task at a time
                  (dynamic padding, group_by_length), as run_glue does it with these settings
  mtdnn-single    mtdnn `train` with one task, one task at a time
  mtdnn-multi     mtdnn `train` with all the tasks at once, proportional sampler: an epoch runs
                  every batch of every task once, so each task sees its rows exactly as often as in
                  its single run: the same budget per task
  mtdnn-multi+ft  mtdnn-multi's checkpoint, fine-tuned per task (mtdnn.finetune.finetune_spec) for
                  --ft-epochs more: an extra budget, stated in the report

Runs evaluate once, after their last step (evaluating on the way costs ~20 s per pass here), so
the checkpoint each method keeps is its final model, not the best of several evaluations.

Each (method, seed) runs in its own child process (isolated memory, a peak RSS per method) and
its result is stored as JSON under --out; a rerun skips what is stored, so an interrupted
benchmark goes on where it stopped (per task inside a unit, too). The report: per task, the mean
and spread over seeds of each method's dev metrics, paired per-seed differences (multi vs single,
mtdnn vs the HF Trainer), training and wall time, and a figure of the per-task training losses.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_quality_setup as bqs  # noqa: E402
import bench_results as br  # noqa: E402

# hf_train_task, mtdnn_train and quality_table are re-exported (`x as x`): probe_hf_gap.py,
# study_quality.py and tests/test_bench_scripts.py reach them through this module.
from quality_children import LOG_EVERY, child  # noqa: E402
from quality_children import hf_train_task as hf_train_task  # noqa: E402
from quality_children import mtdnn_train as mtdnn_train  # noqa: E402
from quality_report import DIFFERENCES, METHODS, method_times, plot_losses, report  # noqa: E402
from quality_report import quality_table as quality_table  # noqa: E402

# --quick fits ~30 minutes on the 2-core development machine (see the printed estimate).
PRESETS = {"full": {"seeds": [1, 2, 3], "max_train": 0, "epochs": 3.0, "ft_epochs": 1.0},
           "quick": {"seeds": [1, 2], "max_train": 600, "epochs": 2.0, "ft_epochs": 1.0}}


def slug(method: str) -> str:
    return method.replace("+", "-")


def unit_key(method: str, seed: int) -> str:
    return f"{slug(method)}/seed{seed}"


# ---------------------------------------------------------------------------------------------
# Plan and time estimate


def estimate_unit(method: str, sizes: bqs.Sizes, epochs: float, ft_epochs: float) -> float:
    """Seconds one (method, seed) takes, from the development machine's rates
    (bench_quality_setup)."""
    runs = 1 if method == "mtdnn-multi" else len(sizes.train_tokens)
    e = ft_epochs if method == "mtdnn-multi+ft" else epochs
    train = e * sum(sizes.train_tokens.values()) / bqs.RATE_TRAIN_TOKENS_S
    if method == "hf-single":
        train *= bqs.HF_TRAINER_SLOWDOWN
    return (bqs.OVERHEAD_CHILD_S + runs * bqs.OVERHEAD_RUN_S + train
            + sum(sizes.dev_tokens.values()) / bqs.RATE_EVAL_TOKENS_S)


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bc.common_parser(__doc__.split("\n\n")[0], lr=1e-4, out="runs/bench_quality",
                         out_help="results (one JSON per method and seed), logs, run directories",
                         lr_help="a small encoder takes a larger step than BERT-base "
                                 "(task_specs/demo.yaml)")
    bqs.add_quality_args(p, PRESETS, quick_help=" (~30 min on 2 cores)")
    full = PRESETS["full"]
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--ft-epochs", type=float,
                   help=f"mtdnn-multi+ft's extra epochs per task (default {full['ft_epochs']})")
    p.add_argument("--ft-lr", type=float, help="fine-tuning learning rate (default --lr)")
    p.add_argument("--plot-dir", default="docs", help="where quality_loss.png goes")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep every run's best/ (by default only until it is no longer needed)")
    args = bqs.finish_args(p, p.parse_args(argv), PRESETS)
    if args.ft_lr is None:
        args.ft_lr = args.lr
    args.methods = [m for m in METHODS if m in args.methods]  # run order: ft after multi
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        return child(*args.child)
    out, store, logs, sizes = bqs.open_out(args)
    train_rows, dev_rows = sizes.train_rows, sizes.dev_rows
    base = dict(glue_dir=str(Path(args.glue_dir).absolute()), encoder=args.encoder,
                batch_size=args.batch_size, max_seq_length=args.max_seq_length,
                warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay,
                tasks=args.tasks, max_train=args.max_train)

    units = [(m, s) for s in args.seeds for m in args.methods]  # seed-major: whole seeds first
    configs = {u: unit_config(args, *u, out, base) for u in units}
    stale = [unit_key(*u) for u in units if (r := store.get(unit_key(*u))) is not None
             and r.get("settings") != configs[u]["settings"]]
    if stale:
        sys.exit(f"{out} holds results made with other settings ({', '.join(stale)}): give "
                 "another --out, or delete them to run them again")
    todo = [u for u in units if store.get(unit_key(*u)) is None]
    estimate = {u: estimate_unit(u[0], sizes, args.epochs, args.ft_epochs) for u in units}
    listing = ", ".join(f"{t} {train_rows[t]}/{dev_rows[t]}" for t in args.tasks)
    print(f"machine: {bc.machine_line(bc.machine_info())}\nout: {out}\n"
          f"tasks (train/dev rows): {listing}\n"
          f"plan: {len(units)} units, {len(units) - len(todo)} already stored:")
    for u in units:
        state = "stored" if u not in todo else f"~{estimate[u] / 60:.1f} min"
        print(f"  {u[0]:<15} seed {u[1]}: {state}")
    print(f"estimated duration: {bc.fmt_duration(sum(estimate[u] for u in todo))} (rates of the "
          "2-core development machine)", flush=True)
    if args.dry_run:
        return

    failed = []
    for method, seed in todo:
        key = unit_key(method, seed)
        multi_best = Path(configs[(method, seed)]["multi_best"])
        if method == "mtdnn-multi+ft" and not (multi_best / "spec.yaml").is_file():
            print(f"{key}: mtdnn-multi's checkpoint is gone; training mtdnn-multi seed {seed} "
                  "again", flush=True)
            store.delete(unit_key("mtdnn-multi", seed))
            if not run_unit(store, logs, unit_config(args, "mtdnn-multi", seed, out, base),
                            args.tasks):
                failed.append(key)
                continue
        if not run_unit(store, logs, configs[(method, seed)], args.tasks):
            failed.append(key)
            continue
        # mtdnn-multi's checkpoint is kept until its fine-tuning is done.
        last_user = "mtdnn-multi+ft" if "mtdnn-multi+ft" in args.methods else "mtdnn-multi"
        if method == last_user and not args.keep_checkpoints:
            shutil.rmtree(multi_best, ignore_errors=True)

    results = {u: r for u in units if (r := store.get(unit_key(*u))) is not None}
    values = br.seed_values(results, args.tasks)
    times = method_times(results)
    summary_path = out / "summary.json"
    plot = None
    if args.plot_dir and results:
        Path(args.plot_dir).mkdir(parents=True, exist_ok=True)
        plot = Path(args.plot_dir) / "quality_loss.png"
        plot_losses(results, args.methods, args.tasks, args.seeds[0], args.epochs, plot)
    info = {"args": vars(args), "machine": bc.machine_info(), "command": bc.command_line(),
            "train_rows": train_rows, "dev_rows": dev_rows, "summary": summary_path,
            "plot": plot, "plot_seed": args.seeds[0]}
    text = report(values, times, info)
    summary_path.write_text(json.dumps(
        {"machine": info["machine"], "command": info["command"], "args": vars(args),
         "train_rows": train_rows, "dev_rows": dev_rows,
         "per_seed": {m: {str(s): v for s, v in per.items()} for m, per in values.items()},
         "differences": {f"{a} - {b}": {str(s): v for s, v in
                                        br.paired_differences(values, a, b).items()}
                         for a, b in DIFFERENCES if a in values and b in values},
         "times": times}, indent=1), encoding="utf-8")
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    print(f"wrote {summary_path}" + (f", {args.markdown}" if args.markdown else "") +
          (f", {plot}" if plot else ""))
    if failed:
        sys.exit(f"failed units (see {logs}): {', '.join(failed)}; rerun the same command to "
                 "retry them")


def unit_config(args: argparse.Namespace, method: str, seed: int, out: Path,
                base: dict[str, Any]) -> dict[str, Any]:
    """What a child needs to run one (method, seed); "settings" is stored with its result, and a
    stored result is reused only by a run with the same settings."""
    overrides = bqs.base_overrides(seed=seed, lr=args.lr, log_every=LOG_EVERY, **base)
    ft = method == "mtdnn-multi+ft"
    # finetune_spec starts from the default training settings: every one is given again.
    ft_overrides = [o for o in bqs.base_overrides(seed=seed, lr=args.ft_lr, log_every=LOG_EVERY,
                                                  **base) if o.startswith("train.")] + \
        [f"train.epochs={args.ft_epochs}"] if ft else []
    return {"method": method, "seed": seed, "tasks": args.tasks, "epochs": args.epochs,
            "overrides": overrides, "ft_overrides": ft_overrides,
            "multi_best": str(out / "runs" / slug("mtdnn-multi") / f"seed{seed}" / "best"),
            "run_dir": str(out / "runs" / slug(method) / f"seed{seed}"),
            "partial_dir": str(out / "partial" / slug(method) / f"seed{seed}"),
            "keep_checkpoints": args.keep_checkpoints,
            "settings": {"method": method, "seed": seed, "tasks": args.tasks,
                         "epochs": args.epochs, "overrides": overrides,
                         "ft_overrides": ft_overrides}}


def run_unit(store: br.ResultStore, logs: Path, cfg: dict[str, Any], tasks: list[str]) -> bool:
    """Runs one (method, seed) in a child and stores its result; False when the child failed."""
    method, seed = cfg["method"], cfg["seed"]
    key, tag = unit_key(method, seed), f"{slug(method)}-seed{seed}"
    print(f"{key}: running (log: {logs / tag}.log)", flush=True)
    try:
        r = bc.run_child(Path(__file__), cfg, logs, tag)
    except RuntimeError as e:
        print(f"{key}: FAILED\n{e}", flush=True)
        return False
    store.put(key, r)
    shutil.rmtree(cfg["partial_dir"], ignore_errors=True)
    scores = ", ".join(f"{t} {100 * r['metrics'][t][br.REPORTED_METRICS[t][0]]:.1f}"
                       for t in tasks if t in r["metrics"])
    print(f"{key}: {scores}; train {r['train_s']:.0f} s, wall {r['child_wall_s']:.0f} s",
          flush=True)
    return True


if __name__ == "__main__":
    main()
