"""Where mtdnn's training step time goes besides the model, and whether it grows with the number
of tasks.

    python scripts/bench_overhead.py --steps 20 --ks 1,2,5,10,20,50

Both parts run the real `mtdnn.trainer.train` in a child process, observed through its public
hook (`mtdnn.instrument.Instrument`, bench_meter.MtdnnProbe) and torch's optimizer step hooks,
with a log record written every step (`log_every=1`, the worst case; the default is 10). Each
step k (k >= 2; the first, with its one-off costs, is left out) is cut into:

  data         from the start of the batch's fetch to the batch ready on the device
               (`on_train_batch`): the sampler picks task and indices, one Arrow read,
               collation (also shown on its own: `on_collate`), the move to the device
  bookkeeping  from the end of step k-1's optimizer step to the start of step k's data: scheduler
               and zero_grad, the log record (loss sync, JSON line, flush), the eval/save checks
  optimizer    `optimizer.step()` (torch.optim pre- and post-step hooks)
  model        the rest: forward, backward, gradient clipping

Part 1 (breakdown): the GLUE task mix of bench_throughput.py.
Part 2 (task scaling): --scaling-rows rows of one task, all of nearly the same length, dealt
round-robin into K synthetic tasks (K heads, full batches only), K = --ks. The overhead per step
should not grow with K: the sampler's plan is per epoch, a step runs one head, and heads without
gradients are skipped by the optimizer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_meter as bm  # noqa: E402
import bench_throughput as bt  # noqa: E402

COMPONENTS = ("step", "model", "optimizer", "data", "collate", "bookkeeping")


def child(config_path: str, result_path: str) -> None:
    bc.child_env()
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from mtdnn.spec import load_spec
    from mtdnn.trainer import train

    cfg = json.loads(Path(config_path).read_text(encoding="utf-8"))
    opt_start: list[float] = []
    spec = load_spec(cfg["spec"])
    spec = dataclasses.replace(spec, output_dir=cfg["output_dir"], train=dataclasses.replace(
        spec.train, log_every=cfg["log_every"]))
    with bm.Meter() as meter:
        meter.add_hook(register_optimizer_step_pre_hook(
            lambda *_: opt_start.append(time.perf_counter())))
        probe = bm.MtdnnProbe(meter)
        meter.start_run("mixture")
        train(spec, progress=False, instrument=probe)
        meter.end_run()
    rss = meter.peak_rss()
    result = {"runs": meter.runs, "collate_s": probe.collate_s, "fetch": probe.fetch,
              "opt_start": opt_start, "peak_rss_mb": rss["process"],
              "peak_rss_train_mb": rss["train"], "optimizer": meter.optimizer}
    Path(result_path).write_text(json.dumps(result), encoding="utf-8")


def breakdown(r: dict[str, Any]) -> dict[str, float]:
    """Mean milliseconds per step of each component over steps 2..n, and real tokens/s."""
    step_t = r["runs"][0]["step_t"]
    n = len(step_t)
    sums = dict.fromkeys(COMPONENTS, 0.0)
    for k in range(1, n):
        parts = {"step": step_t[k] - step_t[k - 1],
                 "data": r["fetch"][k][1] - r["fetch"][k][0],
                 "collate": r["collate_s"][k],
                 "bookkeeping": r["fetch"][k][0] - step_t[k - 1],
                 "optimizer": step_t[k] - r["opt_start"][k]}
        parts["model"] = parts["step"] - parts["data"] - parts["bookkeeping"] - parts["optimizer"]
        for key, v in parts.items():
            sums[key] += v
    ms = {key: 1000 * v / max(n - 1, 1) for key, v in sums.items()}
    ms["overhead_pct"] = 100 * (ms["data"] + ms["bookkeeping"]) / ms["step"] if n > 1 else 0.0
    real = sum(b[2] for b in r["runs"][0]["batches"][1:n])
    ms["real_tokens_per_s"] = real / sums["step"] if sums["step"] else float("nan")
    return ms


def scaling_rows(args: argparse.Namespace, workdir: Path) -> tuple[Any, Any, Any, list[int]]:
    """The rows to deal: the --scaling-rows rows of --scaling-task whose token length is closest
    to the task's median. Every batch of every K then has nearly the same shape, so the model
    work per step is the same for all K, and a cost that grows with K is not lost in the noise
    of sampled lengths. Returns (spec, task, rows, indices kept, in file order)."""
    import numpy as np
    from transformers import AutoTokenizer

    from mtdnn.data import read_split
    from mtdnn.model import resolve_encoder

    spec, _ = bt.build_spec(argparse.Namespace(**{**vars(args), "tasks": args.scaling_task,
                                                  "max_rows_per_task": 0}), workdir)
    task = spec.tasks[0]
    rows = read_split(spec, task, "train")
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(spec.encoder))
    texts = (rows.text_a, rows.text_b) if rows.text_b else (rows.text_a,)
    lengths = np.array([len(ids) for ids in tokenizer(*texts, truncation=True,
                                                      max_length=spec.max_seq_length)["input_ids"]])
    keep = np.sort(np.argsort(np.abs(lengths - np.median(lengths)), kind="stable")
                   [:args.scaling_rows])
    print(f"scaling rows: {len(keep)} of {len(rows)}, {lengths[keep].min()}-"
          f"{lengths[keep].max()} tokens", flush=True)
    return spec, task, rows, keep.tolist()


def synthetic_spec(args: argparse.Namespace, k: int, workdir: Path, base: Any, task: Any,
                   rows: Any, keep: list[int]) -> Path:
    """K tasks of `task`'s type, dealt round-robin from rows[keep], each a JSON-lines file."""
    from mtdnn.spec import save_spec, spec_from_dict

    per_task = len(keep) // k // args.batch_size * args.batch_size  # full batches only
    if per_task == 0:
        sys.exit(f"--scaling-rows {args.scaling_rows}: too few rows for {k} tasks of at least "
                 f"one batch ({args.batch_size}) each")
    columns = ["text", "text_b"] if rows.text_b else ["text"]
    tasks = {}
    for i in range(k):
        path = workdir / f"synthetic-{k}" / f"t{i:02d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for j in keep[i:per_task * k:k]:
                label = task.labels[rows.labels[j]] if task.labels else rows.labels[j]
                texts = [rows.text_a[j]] + ([rows.text_b[j]] if rows.text_b else [])
                f.write(json.dumps({**dict(zip(columns, texts, strict=True)), "label": label})
                        + "\n")
        tasks[f"t{i:02d}"] = {"type": task.type, "text": columns, "labels": list(task.labels),
                              "files": {"train": str(path)}}
    data = {**base.to_dict(), "tasks": tasks, "data_dir": None}
    spec_path = workdir / f"synthetic-{k}" / "spec.yaml"
    save_spec(spec_from_dict(data, source=str(spec_path), base_dir=workdir), spec_path)
    return spec_path


def run(args: argparse.Namespace, spec_path: Path, workdir: Path, tag: str) -> dict[str, Any]:
    cfg = {"spec": str(spec_path), "log_every": args.log_every,
           "output_dir": str(workdir / f"out-{tag}")}
    r = bc.run_child(Path(__file__), cfg, workdir, tag)
    shutil.rmtree(workdir / f"out-{tag}", ignore_errors=True)  # the final checkpoint, 90 MB
    return r


def medians(results: list[dict[str, Any]]) -> dict[str, float]:
    parts = [breakdown(r) for r in results]
    out = {key: bc.median([p[key] for p in parts]) for key in parts[0]}
    for key in ("peak_rss_mb", "peak_rss_train_mb"):
        out[key] = bc.median([r[key] or float("nan") for r in results])
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bc.common_parser(__doc__.split("\n\n")[0], lr=5e-5, out="/tmp/BENCHMARKS-overhead.md",
                         out_help="Markdown fragment")
    bc.add_mix_args(p, tasks=bt.DEFAULT_TASKS, tasks_help="part 1: task mix",
                    rows_help="part 1: rows per task")
    p.add_argument("--scaling-task", default="sst2", help="part 2: the task whose rows are dealt")
    p.add_argument("--scaling-rows", type=int, default=4000,
                   help="part 2: rows dealt (those closest to the median length)")
    p.add_argument("--ks", default="1,2,5,10,20,50", help="part 2: numbers of synthetic tasks")
    p.add_argument("--parts", default="breakdown,scaling", help="which parts to run")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    p.add_argument("--log-every", type=int, default=1, help="steps between log records")
    p.add_argument("--repeats", type=int, default=1, help="runs per configuration; medians")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        return child(*args.child)
    bc.child_env()
    parts = args.parts.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="mtdnn-overhead-"))
    os.environ["MTDNN_CACHE"] = str(workdir / "cache")
    machine = bc.machine_info()
    print(f"machine: {bc.machine_line(machine)}\nworkdir: {workdir}", flush=True)
    text = [f"### mtdnn step overhead ({args.steps} steps per run, batch {args.batch_size}, "
            f"a log record every {args.log_every} step(s), {args.repeats} repeat(s))\n",
            f"Machine: {bc.machine_line(machine)}.\n"]
    raw: dict[str, Any] = {"machine": machine, "args": vars(args)}
    if "breakdown" in parts:
        spec, spec_path = bt.build_spec(args, workdir)
        results = [run(args, spec_path, workdir, f"mix-{i}") for i in range(args.repeats)]
        m = medians(results)
        names = {"step": "step (total)", "model": "forward + backward + clip",
                 "optimizer": f"optimizer step: {results[0]['optimizer']}",
                 "data": "data: sampler + Arrow read + collation + to(device)",
                 "collate": "  of which collation", "bookkeeping":
                 "bookkeeping: scheduler, zero_grad, log record, eval/save checks"}
        rows = [[names[c], m[c], 100 * m[c] / m["step"]] for c in COMPONENTS]
        rows.append(["overhead (data + bookkeeping)", m["data"] + m["bookkeeping"],
                     m["overhead_pct"]])
        text += [f"Task mix {args.tasks} ({args.max_rows_per_task} rows max per task):\n",
                 bc.markdown_table(["component", "ms/step", "% of step"], rows) + "\n"]
        raw["breakdown"] = {"median": m, "results": results}
        print(f"breakdown: {m['step']:.0f} ms/step, overhead {m['overhead_pct']:.2f} %",
              flush=True)
    if "scaling" in parts:
        from transformers import AutoConfig

        from mtdnn.model import resolve_encoder

        dims = bm.model_dims(AutoConfig.from_pretrained(resolve_encoder(args.encoder)))
        head = dims["hidden"] ** 2 + 3 * dims["hidden"] + 2  # dense + bias, out_proj (2 labels)
        rows, raw["scaling"] = [], {}
        selection = scaling_rows(args, workdir)
        specs = {k: synthetic_spec(args, k, workdir, *selection)
                 for k in map(int, args.ks.split(","))}
        results: dict[int, list] = {k: [] for k in specs}
        for i in range(args.repeats):  # all K in turn, then again: drift spreads over all K
            for k, spec_path in specs.items():
                results[k].append(run(args, spec_path, workdir, f"k{k}-{i}"))
                print(f"scaling: K={k} done ({i + 1}/{args.repeats})", flush=True)
        for k, rs in results.items():
            m = medians(rs)
            rows.append([k, k * head / 1e6, m["step"], m["model"], m["optimizer"], m["data"],
                         m["bookkeeping"], m["data"] + m["bookkeeping"], m["overhead_pct"],
                         m["real_tokens_per_s"], m["peak_rss_train_mb"], m["peak_rss_mb"]])
            raw["scaling"][k] = {"median": m, "results": rs}
        text += [f"Task scaling: {args.scaling_rows} rows of {args.scaling_task} of nearly one "
                 "length (its median) dealt into K tasks (K heads):\n", bc.markdown_table(
                     ["K tasks", "head params (M)", "step ms", "model ms", "optimizer ms",
                      "data ms", "bookkeeping ms", "overhead ms", "overhead %", "real tok/s",
                      "peak RSS MiB training", "peak RSS MiB process"], rows) + "\n",
                 "Every batch has nearly the same shape, so model time should be flat too; a "
                 "cost that grows with K would show in data, bookkeeping or optimizer.\n"]
    report = "\n".join(text)
    print("\n" + report)
    Path(args.out).write_text(report, encoding="utf-8")
    json_path = args.json or str(Path(args.out).with_suffix(".json"))
    Path(json_path).write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")
    print(f"wrote {args.out}, {json_path}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
