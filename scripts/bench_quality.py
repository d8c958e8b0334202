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
import gc
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_quality_setup as bqs  # noqa: E402
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
# --quick fits ~30 minutes on the 2-core development machine (see the printed estimate).
PRESETS = {"full": {"seeds": [1, 2, 3], "max_train": 0, "epochs": 3.0, "ft_epochs": 1.0},
           "quick": {"seeds": [1, 2], "max_train": 600, "epochs": 2.0, "ft_epochs": 1.0}}
LOG_EVERY = 5  # steps per loss record of a one-task run; a K-task run logs every K * LOG_EVERY


def slug(method: str) -> str:
    return method.replace("+", "-")


def unit_key(method: str, seed: int) -> str:
    return f"{slug(method)}/seed{seed}"


# ---------------------------------------------------------------------------------------------
# The children: one (method, seed) each; one training run per task, or one for all tasks


def hf_train_task(spec: Any, task: Any, run_dir: Path, epochs: float,
                  sampling: str = "group_by_length", reinit_pooler: bool = False) -> dict[str, Any]:
    """One task with the HF Trainer, the spec's optimizer settings, scored on the spec's dev rows
    with mtdnn's metric functions. `sampling` is the Trainer's train_sampling_strategy;
    `reinit_pooler` re-initialises the pretrained pooler as mtdnn initialises its head's dense
    layer (normal, std 0.02; zero bias). Both are for scripts/probe_hf_gap.py."""
    import numpy as np
    from bench_throughput import hf_dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from mtdnn.data import read_split
    from mtdnn.metrics import DEFAULT_METRICS, compute_metrics
    from mtdnn.model import resolve_encoder

    t = spec.train
    path = resolve_encoder(spec.encoder)
    tokenizer = AutoTokenizer.from_pretrained(path)
    train_rows, dev_rows = read_split(spec, task, "train"), read_split(spec, task, "dev")
    train_ds = hf_dataset(train_rows, tokenizer, spec.max_seq_length, False)
    dev_ds = hf_dataset(dev_rows, tokenizer, spec.max_seq_length, False)
    # mtdnn's schedule: ceil(epochs * batches per epoch) steps, int(warmup_ratio * steps) warmup.
    steps = math.ceil(epochs * bqs.batches(len(train_rows), t.batch_size))
    # num_labels=1 makes the model a regressor (MSE), as run_glue does for STS-B.
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=task.num_labels)
    if reinit_pooler:
        import torch

        pooler = model.base_model.pooler.dense
        with torch.no_grad():
            torch.manual_seed(spec.seed)
            pooler.weight.normal_(0.0, 0.02)
            pooler.bias.zero_()
    args = TrainingArguments(
        output_dir=str(run_dir), seed=spec.seed, per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size, learning_rate=t.learning_rate,
        weight_decay=t.weight_decay, adam_beta1=t.adam_betas[0], adam_beta2=t.adam_betas[1],
        adam_epsilon=t.adam_epsilon, max_grad_norm=t.max_grad_norm or 0.0,
        lr_scheduler_type=t.scheduler, warmup_steps=int(t.warmup_ratio * steps), max_steps=steps,
        use_cpu=True, disable_tqdm=True, save_strategy="no", eval_strategy="no",
        logging_strategy="steps", logging_steps=LOG_EVERY, report_to="none",
        train_sampling_strategy=sampling)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer))
    train_s = trainer.train().metrics["train_runtime"]
    started = time.perf_counter()
    logits = np.asarray(bc.hf_predict_in_order(trainer, dev_ds).predictions)
    eval_s = time.perf_counter() - started
    preds = logits.argmax(-1) if task.type == "classification" else logits.reshape(-1)
    metrics = compute_metrics(list(task.metrics or DEFAULT_METRICS[task.type]), preds,
                              dev_rows.labels)
    # HF's "epoch" counts from 0 at the start, as mtdnn's does.
    loss = [[r["epoch"], r["loss"]] for r in trainer.state.log_history if "loss" in r]
    del trainer, model
    gc.collect()
    return {"metrics": {task.name: metrics}, "train_s": train_s, "eval_s": eval_s,
            "steps": steps, "loss": {task.name: loss}, "predictions": preds.tolist(),
            "examples": int(epochs * len(train_rows))}


def mtdnn_train(spec: Any, keep_checkpoint: bool) -> dict[str, Any]:
    """One mtdnn run; the loss curves and loop time come from its train_log.jsonl."""
    from mtdnn.trainer import train

    result = train(spec, progress=False)
    records = br.read_train_log(Path(spec.output_dir) / "train_log.jsonl")
    if not keep_checkpoint:
        shutil.rmtree(Path(spec.output_dir) / "best", ignore_errors=True)
    return {"metrics": {k: v["dev"] for k, v in result.metrics.items()},
            "train_s": br.loop_seconds(records),
            "steps": max((r["step"] for r in records), default=0),
            "loss": br.loss_curves(records)}


def child(config_path: str, result_path: str) -> None:
    bc.child_env()
    cfg = json.loads(Path(config_path).read_text(encoding="utf-8"))
    method, tasks, run_dir = cfg["method"], cfg["tasks"], Path(cfg["run_dir"])
    store = br.ResultStore(cfg["partial_dir"])  # per-task results: an interrupted unit resumes
    train_over = [f"train.epochs={cfg['epochs']}"]
    runs: list[dict[str, Any]] = []
    if method == "mtdnn-multi":
        spec = bc.glue_spec(tasks, cfg["overrides"] + train_over + [
            f"output_dir={run_dir}", f"train.log_every={LOG_EVERY * len(tasks)}"])
        started = time.perf_counter()
        runs.append({"tasks": tasks, **mtdnn_train(spec, keep_checkpoint=True),
                     "wall_s": time.perf_counter() - started})
    else:
        for name in tasks:
            done = store.get(name)
            if done is not None and done.get("settings") == cfg["settings"]:
                runs.append(done)
                continue
            started = time.perf_counter()
            task_dir = run_dir / name
            if method == "hf-single":
                spec = bc.glue_spec([name], cfg["overrides"])
                run = hf_train_task(spec, spec.tasks[0], task_dir, cfg["epochs"])
                shutil.rmtree(task_dir, ignore_errors=True)  # the Trainer's output: nothing kept
            elif method == "mtdnn-single":
                spec = bc.glue_spec([name], cfg["overrides"] + train_over +
                                    [f"output_dir={task_dir}"])
                run = mtdnn_train(spec, cfg["keep_checkpoints"])
            else:  # mtdnn-multi+ft
                from mtdnn.finetune import finetune_spec

                spec = finetune_spec(cfg["multi_best"], name, cfg["ft_overrides"],
                                     output_dir=str(task_dir))
                run = mtdnn_train(spec, cfg["keep_checkpoints"])
            run = {"tasks": [name], **run, "wall_s": time.perf_counter() - started,
                   "settings": cfg["settings"]}
            store.put(name, run)
            runs.append(run)
    metrics = {task: m for run in runs for task, m in run["metrics"].items()}
    result = {"method": method, "seed": cfg["seed"], "settings": cfg["settings"],
              "metrics": metrics,
              "train_s": sum(r["train_s"] or 0.0 for r in runs), "runs": runs,
              "peak_rss_mb": bc.peak_rss_mb()}
    Path(result_path).write_text(json.dumps(result), encoding="utf-8")


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
# Aggregation and report (pure: tested on crafted numbers in tests/test_bench_scripts.py)


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
