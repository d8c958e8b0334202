"""Training throughput: the HF Trainer one task at a time vs mtdnn's multi-task loop, same rows.

    python scripts/bench_throughput.py --steps 60 --repeats 3 --plot /tmp/throughput.png

Three methods, each in its own child process, run in alternation (a b c a b c ...) so that machine
drift hits all of them alike; the report gives medians over the repeats:

  hf-padded   (a) transformers.Trainer as run_glue runs it: AutoModelForSequenceClassification,
                  every row padded to max_seq_length, one training per task, one after another
  hf-dynamic  (b) the same, with DataCollatorWithPadding and train_sampling_strategy=group_by_length
  mtdnn       (c) mtdnn.trainer.train on one spec holding all the tasks (dynamic padding and
                  length grouping inside each task are its defaults)

and, opt-in (--methods), mtdnn-unfused: (c) with `train.optimizer=adamw_torch`, torch's default
AdamW implementation instead of the fused kernel (the per-tensor loop on CPU); mtdnn-full: (c)
with `train.compute_cut=false`, every layer computed at every position (mtdnn/encoding.py);
mtdnn-smart: (c) with SMART on every task (`adv_weight=1`, one adversarial step), for its cost.
FLOPs and MFU count the full computation for every method (the work a forward pass does for
these heads without the cut), so with the cut on they measure useful work per second.

The same encoder, GLUE training rows (read by mtdnn.data.read_split for all three), batch size,
learning rate and fp32. c runs --steps optimizer steps; its sampler's plan for those steps says
how many steps each task gets, and a and b train each task for exactly that many steps. No
evaluation, no checkpoints, no logging inside the timed window. Timing, token counts and FLOPs are
taken by the same instruments for all three (see bench_meter.py): mtdnn is observed through its
public hook, `mtdnn.instrument.Instrument`.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_meter as bm  # noqa: E402

METHODS = {"hf-padded": "(a) HF Trainer, padded to max_seq_length, one task at a time",
           "hf-dynamic": "(b) HF Trainer, dynamic padding + group_by_length, one task at a time",
           "mtdnn": "(c) mtdnn multi-task",
           # Opt-in (--methods): mtdnn with torch's default AdamW implementation instead of the
           # fused kernel it uses by default, to measure what that lever gives.
           "mtdnn-unfused": "(c') mtdnn multi-task, train.optimizer=adamw_torch (per-tensor "
                            "AdamW loop on CPU)",
           # Opt-in: mtdnn without the compute cut (mtdnn/encoding.py), the full forward.
           "mtdnn-full": "(c'') mtdnn multi-task, train.compute_cut=false (every layer, every "
                         "position)",
           # Opt-in: SMART on every task (one adversarial step, no proximal term), for its cost.
           "mtdnn-smart": "(c+smart) mtdnn multi-task, SMART on every task (adv_weight=1, "
                          "adv_steps=1)"}
# The spec overrides of each mtdnn method over the common spec (build_spec).
MTDNN_OVERRIDES = {"mtdnn": [], "mtdnn-unfused": ["train.optimizer=adamw_torch"],
                   "mtdnn-full": ["train.compute_cut=false"]}
DEFAULT_METHODS = "hf-padded,hf-dynamic,mtdnn"
COLORS = {"hf-padded": "#999999", "hf-dynamic": "#6699cc", "mtdnn": "#cc6633",
          "mtdnn-unfused": "#dd9955", "mtdnn-full": "#996644", "mtdnn-smart": "#aa4466"}
DEFAULT_TASKS = "rte,mrpc,stsb,cola,sst2"
HUGE = 10**9  # an interval no run reaches: mtdnn evaluates, saves and logs only after the loop


# ---------------------------------------------------------------------------------------------
# Setup in the parent: the spec, the per-task plan, the matmul peak


def build_spec(args: argparse.Namespace, workdir: Path):
    """The mtdnn spec of the run, written to workdir/spec.yaml. Only train files are kept: a task
    with a dev split would be evaluated after the last step."""
    from mtdnn.spec import load_spec, save_spec

    overrides = [f"data_dir={args.glue_dir}", f"encoder={args.encoder}", f"seed={args.seed}",
                 f"max_seq_length={args.max_seq_length}", f"output_dir={workdir / 'mtdnn-out'}",
                 f"train.learning_rate={args.lr}", f"train.batch_size={args.batch_size}",
                 f"train.max_steps={args.steps}",
                 # The HF Trainer's defaults, so that the two optimizers do the same work.
                 "train.warmup_ratio=0.0", "train.weight_decay=0.0", "train.max_grad_norm=1.0",
                 f"train.eval_every={HUGE}", f"train.save_every={HUGE}", f"train.log_every={HUGE}",
                 # Quoted: YAML reads a bare no as false.
                 "train.report_to=[none]", "train.mixed_precision='no'"]
    tasks = args.tasks.split(",")
    if args.max_rows_per_task:
        overrides += [f"tasks.{name}.max_train_examples={args.max_rows_per_task}" for name in tasks]
    spec = load_spec(bc.REPO / "task_specs" / "glue.yaml", overrides, tasks=tasks)
    spec = dataclasses.replace(spec, tasks=tuple(
        dataclasses.replace(task, files={"train": task.files["train"]}, hub=None)
        for task in spec.tasks))
    path = workdir / "spec.yaml"
    save_spec(spec, path)
    return spec, path


def task_plan(spec) -> tuple[dict[str, int], dict[str, int]]:
    """(rows per task, steps per task in c's first max_steps steps): mtdnn's own sampler, built by
    the trainer's step mode (mtdnn.steps.AlternatingStep). Length grouping reorders examples,
    never the task schedule, so no lengths are needed."""
    from mtdnn.data import read_split
    from mtdnn.steps import AlternatingStep

    t = spec.train
    sizes = {task.name: len(read_split(spec, task, "train")) for task in spec.tasks}
    sampler = AlternatingStep(spec, sizes, {}).sampler
    sampler.set_run_length(t.max_steps * t.gradient_accumulation_steps)
    counts: Counter[str] = Counter()
    while sum(counts.values()) < t.max_steps:
        for batch in sampler:  # one epoch; the next loop turn starts the next one
            counts[batch.task] += 1
            if sum(counts.values()) == t.max_steps:
                break
    return sizes, {task.name: counts[task.name] for task in spec.tasks}


def child_config(method: str, spec_path: Path, plan: dict[str, int], workdir: Path,
                 args: argparse.Namespace, repeat: int) -> dict[str, Any]:
    """What the child of one method and round is given."""
    return {"method": method, "spec": str(spec_path), "plan": plan, "workdir": str(workdir),
            "encoder": args.encoder, "hf_optim": args.hf_optim,
            "overrides": MTDNN_OVERRIDES.get(method, []) + (
                [f"tasks.{t}.adv_weight=1.0" for t in args.tasks.split(",")]
                if method == "mtdnn-smart" else []),
            "output_dir": str(workdir / f"mtdnn-out-{repeat}")}


def mtdnn_spec(cfg: dict[str, Any]) -> Any:
    """The spec an mtdnn child trains: the common one with the method's overrides."""
    from mtdnn.spec import load_spec

    return dataclasses.replace(load_spec(cfg["spec"], cfg["overrides"]),
                               output_dir=cfg["output_dir"])


# ---------------------------------------------------------------------------------------------
# The children: one method each, measured by bm.Meter


def hf_dataset(rows: Any, tokenizer: Any, max_len: int, padding: bool | str) -> Any:
    """run_glue's preprocessing: one tokenizer call per batch of rows, labels as they are."""
    from datasets import Dataset

    texts = {"text_a": rows.text_a, **({"text_b": rows.text_b} if rows.text_b else {})}
    return Dataset.from_dict({**texts, "labels": rows.labels}).map(
        lambda b: tokenizer(*(b[c] for c in texts), truncation=True, padding=padding,
                            max_length=max_len), batched=True, remove_columns=list(texts))


def train_hf(cfg: dict[str, Any], meter: bm.Meter, dynamic: bool) -> dict[str, Any]:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    from mtdnn.data import read_split
    from mtdnn.model import resolve_encoder
    from mtdnn.spec import load_spec

    spec = load_spec(cfg["spec"])
    t = spec.train
    path = resolve_encoder(spec.encoder)
    tokenizer = AutoTokenizer.from_pretrained(path)
    padding = False if dynamic else "max_length"
    runtimes = {}
    for task in spec.tasks:
        steps = cfg["plan"][task.name]
        if not steps:
            continue
        ds = hf_dataset(read_split(spec, task, "train"), tokenizer, spec.max_seq_length, padding)
        # num_labels=1 makes the model a regressor (MSE), as run_glue does for STS-B.
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=task.num_labels)
        args = TrainingArguments(
            output_dir=str(Path(cfg["workdir"]) / f"hf-{task.name}"), seed=spec.seed,
            per_device_train_batch_size=t.batch_size, learning_rate=t.learning_rate,
            max_steps=steps, max_grad_norm=1.0, use_cpu=True, disable_tqdm=True,
            save_strategy="no", eval_strategy="no", logging_strategy="no", report_to="none",
            train_sampling_strategy="group_by_length" if dynamic else "random",
            **({"optim": cfg["hf_optim"]} if cfg["hf_optim"] else {}))
        collate = DataCollatorWithPadding(tokenizer) if dynamic else default_data_collator
        trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                          data_collator=meter.wrap(collate))
        meter.start_run(task.name)
        runtimes[task.name] = trainer.train().metrics["train_runtime"]
        meter.end_run()
        del trainer, model, ds
        gc.collect()  # the next task starts from a fresh model, as a separate run_glue would
    return {"hf_train_runtime_s": runtimes}


def child(config_path: str, result_path: str) -> None:
    bc.child_env()
    import torch

    cfg = json.loads(Path(config_path).read_text(encoding="utf-8"))
    extra: dict[str, Any] = {}
    with bm.Meter() as meter:
        if cfg["method"].startswith("mtdnn"):
            from mtdnn.trainer import train

            probe = bm.MtdnnProbe(meter)
            meter.start_run("mixture")
            train(mtdnn_spec(cfg), progress=False, instrument=probe)
            meter.end_run()
            extra = {"tasks": dict(Counter(probe.tasks))}  # the steps each task got: the plan
        else:
            extra = train_hf(cfg, meter, dynamic=cfg["method"] == "hf-dynamic")
    rss = meter.peak_rss()
    result = {"method": cfg["method"], "peak_rss_mb": rss["process"],
              "peak_rss_train_mb": rss["train"], "optimizer": meter.optimizer,
              "torch_threads": torch.get_num_threads(), "runs": meter.runs, **extra}
    Path(result_path).write_text(json.dumps(result), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Report


def summarize(results: list[dict[str, Any]], methods: list[str], peak: float) -> dict[str, Any]:
    for r in results:
        r["steady"] = bm.rates(bm.window_totals(r["runs"], r["dims"], steady=True), peak)
        r["all_steps"] = bm.rates(bm.window_totals(r["runs"], r["dims"], steady=False), peak)
    summary: dict[str, Any] = {}
    for m in methods:
        mine = [r for r in results if r["method"] == m]
        summary[m] = {win: {k: bc.median([r[win][k] for r in mine]) for k in mine[0][win]}
                      for win in ("steady", "all_steps")}
        for key in ("peak_rss_mb", "peak_rss_train_mb"):
            summary[m][key] = bc.median([r[key] or float("nan") for r in mine])
        summary[m]["optimizer"] = mine[0]["optimizer"]
    # Ratios are taken within each round (a, b, c ran back to back), then the median over rounds.
    rounds = sorted({r["repeat"] for r in results})
    by = {(r["method"], r["repeat"]): r for r in results}

    def ratio(ours: str, base: str, win: str, key: str) -> float:
        return bc.median([by[(ours, i)][win][key] / by[(base, i)][win][key] for i in rounds])
    pairs = [(c, b) for c in methods if c.startswith("mtdnn")
             for b in methods if b.startswith("hf")]
    # a lever against mtdnn without it (the same batches: what the lever alone gives)
    pairs += [("mtdnn", b) for b in ("mtdnn-full", "mtdnn-unfused") if "mtdnn" in methods
              and b in methods]
    pairs += [("mtdnn-smart", "mtdnn")] if {"mtdnn", "mtdnn-smart"} <= set(methods) else []
    for ours, base in pairs:
        summary[f"{ours}/{base}"] = {
            "samples_per_s": ratio(ours, base, "steady", "samples_per_s"),
            "real_tokens_per_s": ratio(ours, base, "steady", "real_tokens_per_s"),
            "samples_per_s_all_steps": ratio(ours, base, "all_steps", "samples_per_s")}
    return summary


def report(summary: dict[str, Any], methods: list[str], info: dict[str, Any]) -> str:
    rows = []
    for m in methods:
        s, a = summary[m]["steady"], summary[m]["all_steps"]
        rows.append([m, int(s["steps"]), s["s_per_step"], s["samples_per_s"],
                     s["real_tokens_per_s"], s["padded_tokens_per_s"], 100 * s["pad_fraction"],
                     a["seconds"], summary[m]["peak_rss_train_mb"], summary[m]["peak_rss_mb"],
                     100 * s["mfu_computed"], 100 * s["mfu_useful"]])
    table = bc.markdown_table(["method", "steps timed", "s/step", "samples/s", "real tok/s",
                               "padded tok/s", "pad %", "loop s (all steps)",
                               "peak RSS MiB training", "peak RSS MiB process",
                               "MFU computed %", "MFU useful %"], rows)
    ratio_rows = [[k, v["samples_per_s"], v["real_tokens_per_s"], v["samples_per_s_all_steps"]]
                  for k, v in summary.items() if "/" in k]
    ratios = bc.markdown_table(["ratio (median of per-round ratios)", "samples/s",
                                "real tok/s", "samples/s, all steps"], ratio_rows)
    tasks = ", ".join(f"{k} ({info['sizes'][k]}, {v})" for k, v in info["plan"].items())
    peaks = " / ".join(f"{p['flops_per_s'] / 1e9:.1f}" for p in info["peaks"])
    legend = "\n".join(f"- `{m}`: {METHODS[m]}; optimizer {summary[m]['optimizer']}"
                       for m in methods)
    return (f"### Training throughput ({info['steps']} steps, batch {info['batch_size']}, "
            f"{info['repeats']} repeat(s), medians)\n\n"
            f"Machine: {bc.machine_line(info['machine'])}. fp32 matmul peak at the model's "
            f"shapes: {info['peak'] / 1e9:.1f} GFLOP/s (before / after the runs: {peaks}; far "
            "apart means a busy machine).\n"
            f"Tasks (training rows, steps): {tasks}.\n\n"
            f"{legend}\n\n{table}\n\n{ratios}\n\n"
            "Rates are over steps 2..n of each training run (first step excluded from time and "
            "counts); 'loop s (all steps)' includes every first step. MFU = training FLOP/s "
            "over the measured fp32 matmul peak; 'computed' counts pads, 'useful' real tokens; "
            "both count the full forward/backward (mtdnn's compute cut does less of it). "
            "Peak RSS 'training': from each run's first batch to its end; 'process': the "
            "whole child, model loading and tokenization included.\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bc.common_parser(__doc__.split("\n\n")[0], lr=5e-5,
                         out="/tmp/BENCHMARKS-throughput.md", out_help="Markdown fragment")
    bc.add_mix_args(p, tasks=DEFAULT_TASKS, tasks_help="task names of task_specs/glue.yaml",
                    rows_help="first N training rows of each task (0: all); keeps SST-2 from "
                              "taking most of the steps, as in task_specs/tour.yaml")
    p.add_argument("--steps", type=int, default=60, help="optimizer steps in total, per method")
    p.add_argument("--repeats", type=int, default=3, help="rounds of a b c; medians reported")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"in run order, from {', '.join(METHODS)}")
    p.add_argument("--hf-optim", default="",
                   help="TrainingArguments.optim for a and b (empty: the Trainer's default; "
                        "'adamw_torch' matches mtdnn's torch.optim.AdamW defaults)")
    p.add_argument("--plot", default=None, help="PNG bar plot of samples/s per method")
    p.add_argument("--keep-workdir", action="store_true", help="keep specs, logs, checkpoints")
    p.add_argument("--report-from", metavar="JSON",
                   help="rebuild the report of an earlier run from its --json file (no runs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        return child(*args.child)
    if args.report_from:
        stored = json.loads(Path(args.report_from).read_text(encoding="utf-8"))
        methods = stored["args"]["methods"].split(",")
        peak = max(p["flops_per_s"] for p in stored["matmul_peak"])
        info = {"machine": stored["machine"], "steps": stored["args"]["steps"],
                "batch_size": stored["args"]["batch_size"], "repeats": stored["args"]["repeats"],
                "peak": peak, "peaks": stored["matmul_peak"], "sizes": stored["rows"],
                "plan": stored["plan"]}
        text = report(summarize(stored["results"], methods, peak), methods, info)
        print(text)
        Path(args.out).write_text(text, encoding="utf-8")
        return None
    bc.child_env()
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    bc.check_glue_dir(args.glue_dir)
    workdir = Path(tempfile.mkdtemp(prefix="mtdnn-bench-"))
    os.environ["MTDNN_CACHE"] = str(workdir / "cache")  # children tokenize here, not in ~/.cache
    from transformers import AutoConfig

    from mtdnn.model import resolve_encoder

    spec, spec_path = build_spec(args, workdir)
    sizes, plan = task_plan(spec)
    dims = bm.model_dims(AutoConfig.from_pretrained(resolve_encoder(args.encoder)))
    machine = bc.machine_info()
    print(f"machine: {bc.machine_line(machine)}\nworkdir: {workdir}\nplan: {plan}", flush=True)
    # Measured before and after the runs; the higher one is the peak (the machine is shared).
    peak_rows = (args.batch_size * 64, args.batch_size * args.max_seq_length)
    peaks = [bm.matmul_peak(dims, peak_rows)]
    results = []
    for repeat in range(args.repeats):
        for m in methods:
            cfg = child_config(m, spec_path, plan, workdir, args, repeat)
            r = bc.run_child(Path(__file__), cfg, workdir, f"{m}-{repeat}")
            r.update(repeat=repeat, dims=dims)
            results.append(r)
            if "tasks" in r and r["tasks"] != {k: v for k, v in plan.items() if v}:
                print(f"warning: {m} trained {r['tasks']} batches per task, not the plan the "
                      "HF Trainer runs follow", flush=True)
            quick = bm.rates(bm.window_totals(r["runs"], r["dims"], steady=True), 1.0)
            print(f"round {repeat + 1}/{args.repeats} {m}: {quick['samples_per_s']:.1f} "
                  f"samples/s, peak RSS {r['peak_rss_mb']:.0f} MiB", flush=True)
    peaks.append(bm.matmul_peak(dims, peak_rows))
    peak = max(p["flops_per_s"] for p in peaks)
    summary = summarize(results, methods, peak)
    info = {"machine": machine, "steps": args.steps, "batch_size": args.batch_size,
            "repeats": args.repeats, "peak": peak, "peaks": peaks, "sizes": sizes, "plan": plan}
    text = report(summary, methods, info)
    print("\n" + text)
    Path(args.out).write_text(text, encoding="utf-8")
    json_path = args.json or str(Path(args.out).with_suffix(".json"))
    Path(json_path).write_text(json.dumps(
        {"machine": machine, "args": vars(args), "spec": spec.to_dict(), "rows": sizes,
         "plan": plan, "dims": dims, "matmul_peak": peaks, "summary": summary,
         "results": results}, indent=1), encoding="utf-8")
    if args.plot:
        bc.bar_plot({m: [r["steady"]["samples_per_s"] for r in results if r["method"] == m]
                     for m in methods}, "training samples/s (median, min-max)",
                    f"{args.steps} steps, batch {args.batch_size}; {machine['cpu']}", args.plot,
                    [COLORS[m] for m in methods])
    print(f"wrote {args.out}, {json_path}" + (f", {args.plot}" if args.plot else ""))
    if not args.keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
