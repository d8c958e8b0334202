"""Shared pieces of the benchmark scripts: the options they share, one clock and one batch meter
for every method, the FLOP formula, a matmul peak, per-method child processes, and Markdown/JSON
output.

Every method is measured by the same instruments, so that no method is timed by its own logging:

  * step ends: a global `torch.optim` post-step hook (fires once per optimizer step, for the HF
    Trainer's and for mtdnn's AdamW alike; Accelerate's wrapper does not fire it a second time);
  * batches: (rows, padded length, real tokens, sum of squared real lengths) of every training
    batch and the time the first batch of a training run starts. mtdnn's loop is observed through
    its public hook, `mtdnn.instrument.Instrument` (`MtdnnProbe`): the package's private names are
    never rebound. The HF Trainer's collator is wrapped (`Meter.wrap`).

The quality benchmarks (bench_quality.py, bench_strategies.py) share the rest: the spec overrides
of their runs, the rows and tokens of each task, a JSON store per unit of work (resumable runs),
aggregation over seeds (mean ± std, paired differences), and a counter of what mtdnn's loop
trained and how long it took (`TrainCounter`, an Instrument too).

Not a module of the package: imported by the scripts beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The scripts measure this checkout's package, whether it is installed or not (or elsewhere).
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

from mtdnn.instrument import Instrument  # noqa: E402  (torch-free: the parents import it too)

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


# ---------------------------------------------------------------------------------------------
# Command line: the options every script has, and those the speed (throughput, overhead) and the
# quality (quality, strategies) scripts share


def default_glue_dir() -> str:
    return os.environ.get("MTDNN_GLUE_DIR") or str(REPO.parent / "shared" / "data" / "glue")


def common_parser(description: str, *, lr: float, out: str, out_help: str,
                  lr_help: str | None = None) -> argparse.ArgumentParser:
    """A parser holding the options of every benchmark script: the data, the encoder, the
    optimizer settings they all set, where the output goes, and the hidden `--child CONFIG
    RESULT` of a child process. Each script adds its own options (`add_mix_args`,
    `add_quality_args`, then the rest)."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--glue-dir", default=default_glue_dir(),
                   help="GLUE files in their original layout ($MTDNN_GLUE_DIR if set)")
    p.add_argument("--encoder", default=MINILM, help="Hub model id or local directory")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=lr, help=lr_help)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--out", default=out, help=out_help)
    p.add_argument("--child", nargs=2, metavar=("CONFIG", "RESULT"), help=argparse.SUPPRESS)
    return p


def add_mix_args(p: argparse.ArgumentParser, *, tasks: str, tasks_help: str,
                 rows_help: str) -> None:
    """The speed scripts' options: one spec of several GLUE tasks (comma-separated), capped
    rows, one seed, a JSON file of the raw numbers."""
    p.add_argument("--tasks", default=tasks, help=tasks_help)
    p.add_argument("--max-rows-per-task", type=int, default=4000, help=rows_help)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", default=None, help="raw numbers (default: --out with .json)")


def add_quality_args(p: argparse.ArgumentParser, presets: dict[str, dict[str, Any]], *,
                     quick_help: str) -> None:
    """The quality scripts' options: a --quick preset (options left unset take the preset's
    value: `finish_args`), seeds, tasks (space-separated), epochs, rows, the schedule's warmup
    and weight decay, the Markdown report, a dry run."""
    full, quick = presets["full"], presets["quick"]
    p.add_argument("--quick", action="store_true",
                   help=f"the reduced preset{quick_help}: {quick}; explicit options win")
    p.add_argument("--seeds", nargs="+", type=int, help=f"default {full['seeds']}")
    p.add_argument("--tasks", nargs="+", default=list(QUALITY_TASKS),
                   help="tasks of task_specs/glue.yaml")
    p.add_argument("--epochs", type=float, help=f"default {full['epochs']}")
    p.add_argument("--max-train", type=int,
                   help=f"first N training rows of each task, 0: all (default {full['max_train']})")
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--markdown", help="write the report here (it is printed in any case)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "usable_cores": usable,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def peak_rss_mb() -> float:
    """This process's high-water resident set (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_high_water_mb(reset: bool = False) -> float | None:
    """VmHWM, the high-water RSS, from /proc (Linux); reset=True then restarts it from the
    current RSS (`clear_refs` 5, Linux >= 4.0), so that a later read gives the peak of a
    window. None where /proc does not allow it."""
    try:
        status = Path("/proc/self/status").read_text()
        hwm = int(next(line for line in status.splitlines() if line.startswith("VmHWM:"))
                  .split()[1]) / 1024
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
        return hwm
    except (OSError, StopIteration, ValueError):
        return None


class Meter:
    """Step-end times and per-batch token counts, grouped into training runs (a method that trains
    several tasks one after another has one run per task).

    A context manager: inside `with Meter() as meter:` a global torch.optim post-step hook
    records the step ends (removed on exit, so that a test can run a child in-process).
    Token counts of a batch on an accelerator stay there until `end_run` (no host sync per
    step inside the timed window)."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.optimizer: str | None = None  # which AdamW implementation ran (they differ in speed)
        self._hooks: list[Any] = []

    def __enter__(self) -> Meter:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._hooks.append(register_optimizer_step_post_hook(self._on_step))
        return self

    def __exit__(self, *_: Any) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    def add_hook(self, handle: Any) -> None:
        """A hook handle of the caller's, removed with the meter's own on exit."""
        self._hooks.append(handle)

    def start_run(self, name: str) -> None:
        self.runs.append({"name": name, "first_batch_t": None, "step_t": [], "batches": []})

    def _on_step(self, optimizer: Any, *_: Any) -> None:
        if self.runs:
            self.runs[-1]["step_t"].append(time.perf_counter())
        if self.optimizer is None:
            self.optimizer = optimizer_text(optimizer)

    def end_run(self) -> None:
        """Call when a training run returns: the batches' counts as numbers, and the peak RSS
        since its first batch."""
        run = self.runs[-1]
        run["batches"] = [[int(v) for v in b] for b in run["batches"]]
        run["rss_train_peak_mb"] = _rss_high_water_mb() if run.get("rss_setup_peak_mb") else None

    def peak_rss(self) -> dict[str, float | None]:
        """{"train": peak RSS from a run's first batch to its end (the highest over runs),
        "process": the peak of the whole process, setup (model load, tokenization) included}."""
        train = [r["rss_train_peak_mb"] for r in self.runs if r.get("rss_train_peak_mb")]
        setup = [r["rss_setup_peak_mb"] for r in self.runs if r.get("rss_setup_peak_mb")]
        return {"train": max(train, default=None),
                "process": max([peak_rss_mb(), *train, *setup])}

    def record(self, batch: dict[str, Any], started: float) -> None:
        """One training batch: [rows, padded length, real tokens, sum of squared real lengths]
        (the last two as tensors until `end_run`); `started`: when making it began."""
        run = self.runs[-1]
        if run["first_batch_t"] is None:
            run["first_batch_t"] = started
            # Peak so far (setup), then restart the high-water mark for the training window.
            run["rss_setup_peak_mb"] = _rss_high_water_mb(reset=True)
        mask = batch["attention_mask"]
        lengths = mask.sum(1)
        b, t = mask.shape
        run["batches"].append([b, t, lengths.sum(), (lengths * lengths).sum()])

    def wrap(self, collate: Any) -> Any:
        """A collator that records what `collate` returns (the HF Trainer's)."""
        def counting(features: list[dict[str, Any]]) -> dict[str, Any]:
            started = time.perf_counter()
            batch = collate(features)
            self.record(batch, started)
            return batch
        return counting


def optimizer_text(optimizer: Any) -> str:
    """'AdamW(fused=True, foreach=None)': the class and the implementation it was built for
    (None: torch picks at step time: foreach on CUDA, the per-tensor loop on CPU)."""
    d = optimizer.defaults
    return f"{type(optimizer).__name__}(fused={d.get('fused')}, foreach={d.get('foreach')})"


class MtdnnProbe(Instrument):
    """What the speed scripts observe of `mtdnn.trainer.train`, through its public hook
    (`train(spec, instrument=MtdnnProbe(meter))`):

      fetch      (started, ready) of each training batch: from the start of its fetch (sampler,
                 Arrow read, collation, copy to the device) to the batch ready on the device
      collate_s  the collation time of each training batch (evaluation batches left out)
      tasks      the task of each training batch
      evaluations  (step, started, ended) of each dev evaluation

    and the meter, if given, records every training batch (`Meter.record`)."""

    def __init__(self, meter: Meter | None = None):
        self.meter = meter
        self.fetch: list[tuple[float, float]] = []
        self.collate_s: list[float] = []
        self.tasks: list[str] = []
        self.evaluations: list[tuple[int, float, float]] = []
        self._collated = float("nan")

    def on_collate(self, seconds: float) -> None:
        # A training batch is collated inside its fetch, right before on_train_batch: the last
        # collation seen then is the batch's own.
        self._collated = seconds

    def on_train_batch(self, task: str, batch: dict[str, Any], started: float) -> None:
        ready = time.perf_counter()
        self.fetch.append((started, ready))
        self.collate_s.append(self._collated)
        self._collated = float("nan")
        self.tasks.append(task)
        if self.meter is not None:
            self.meter.record(batch, started)

    def on_evaluation(self, step: int, started: float, ended: float) -> None:
        self.evaluations.append((step, started, ended))


# ---------------------------------------------------------------------------------------------
# FLOPs. Forward matmul FLOPs of a BERT encoder, per sequence of length T:
#   2 * L * (4 H^2 + 2 H I) * T      projections Q, K, V, O and the two FFN matrices
#   + 4 * L * H * T^2                attention scores QK^T and the weighted sum with V
#   + 2 * H^2                        the head's dense layer on the first token (the C outputs of
#                                    the last layer, C <= 3, are left out)
# Training = 3 x forward (the backward pass costs two forwards). The embedding lookup, softmax,
# LayerNorm, GELU and the optimizer are not matmuls and are not counted. "computed" counts every
# position the model was given (pads included: they are computed); "useful" counts the real tokens
# only, so useful <= computed, and their ratio is the cost of padding.


def model_dims(config: Any) -> dict[str, int]:
    return {"layers": config.num_hidden_layers, "hidden": config.hidden_size,
            "intermediate": config.intermediate_size}


def batch_flops(batch: list[int], dims: dict[str, int]) -> tuple[float, float]:
    """(computed, useful) training FLOPs of one batch record [rows, padded T, real, sum real^2]."""
    rows, t, real, sumsq = batch
    L, H, inter = dims["layers"], dims["hidden"], dims["intermediate"]
    per_token, attn, head = 2 * L * (4 * H * H + 2 * H * inter), 4 * L * H, 2 * H * H
    computed = per_token * rows * t + attn * rows * t * t + head * rows
    useful = per_token * real + attn * sumsq + head * rows
    return 3.0 * computed, 3.0 * useful


def matmul_peak(dims: dict[str, int], rows: tuple[int, ...], seconds: float = 0.3
                ) -> dict[str, Any]:
    """Best fp32 `torch.mm` FLOP/s at the encoder's shapes: (rows, H) x (H, I), (rows, I) x (I, H),
    (rows, H) x (H, H), rows = batch size x a typical padded length. This is the peak the model's
    own matmuls could reach on this machine now, with torch's default threads; MFU is relative
    to it (a spec-sheet peak would need the CPU's AVX width and clock under load)."""
    import torch

    H, inter = dims["hidden"], dims["intermediate"]
    shapes, best = {}, 0.0
    with torch.no_grad():
        for m in rows:
            for k, n in ((H, inter), (inter, H), (H, H)):
                a, b = torch.randn(m, k), torch.randn(k, n)
                torch.mm(a, b)  # first call: thread pool and kernel selection
                count, start = 0, time.perf_counter()
                while (elapsed := time.perf_counter() - start) < seconds:
                    torch.mm(a, b)
                    count += 1
                rate = 2.0 * m * k * n * count / elapsed
                shapes[f"({m},{k})x({k},{n})"] = rate
                best = max(best, rate)
    return {"flops_per_s": best, "shapes": shapes}


# ---------------------------------------------------------------------------------------------
# From raw runs to rates


def window_totals(runs: list[dict[str, Any]], dims: dict[str, int], steady: bool
                  ) -> dict[str, float]:
    """Sums over the timed window of every run.

    steady=True: from the end of each run's first optimizer step to the end of its last one, so
    the window holds steps 2..n (the first step, with one-off costs, is left out of time AND
    counts). steady=False: from the start of the first batch's collation to the end of the last
    step (steps 1..n). Batches collated ahead of their step (a DataLoader's look-ahead) are matched
    to steps by order: batch i belongs to step i.
    """
    tot = dict.fromkeys(("seconds", "steps", "samples", "real_tokens", "padded_tokens",
                         "flops_computed", "flops_useful"), 0.0)
    for run in runs:
        n = len(run["step_t"])
        if n == 0 or (steady and n < 2):
            continue
        first = 1 if steady else 0
        start = run["step_t"][0] if steady else run["first_batch_t"]
        tot["seconds"] += run["step_t"][n - 1] - start
        for batch in run["batches"][first:n]:
            computed, useful = batch_flops(batch, dims)
            tot["steps"] += 1
            tot["samples"] += batch[0]
            tot["padded_tokens"] += batch[0] * batch[1]
            tot["real_tokens"] += batch[2]
            tot["flops_computed"] += computed
            tot["flops_useful"] += useful
    return tot


def rates(tot: dict[str, float], peak: float) -> dict[str, float]:
    s = tot["seconds"] or float("nan")
    return {"seconds": tot["seconds"], "steps": tot["steps"],
            "samples_per_s": tot["samples"] / s, "real_tokens_per_s": tot["real_tokens"] / s,
            "padded_tokens_per_s": tot["padded_tokens"] / s,
            "pad_fraction": 1 - tot["real_tokens"] / tot["padded_tokens"]
            if tot["padded_tokens"] else float("nan"),
            "s_per_step": s / tot["steps"] if tot["steps"] else float("nan"),
            "mfu_computed": tot["flops_computed"] / s / peak,
            "mfu_useful": tot["flops_useful"] / s / peak}


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------------------------------------
# Child processes: one per measurement, so that peak RSS belongs to one method and no method
# inherits another's warm caches or allocator state.


def hf_predict_in_order(trainer: Any, dataset: Any) -> Any:
    """`trainer.predict(dataset)` with the predictions in the dataset's order.

    With `train_sampling_strategy="group_by_length"` the Trainer also groups the *evaluation* set
    by length (transformers PR #33514, in 5.x), and `predict()` returns the rows in that grouped
    order with nothing that maps them back: scored against the labels in file order, they
    compare unrelated rows (STS-B Pearson ~0). Evaluation here runs in the dataset's order,
    whatever the training sampler was."""
    strategy = trainer.args.train_sampling_strategy
    trainer.args.train_sampling_strategy = "random"  # _get_eval_sampler: sequential
    try:
        return trainer.predict(dataset)
    finally:
        trainer.args.train_sampling_strategy = strategy


def run_child(script: Path, config: dict[str, Any], workdir: Path, tag: str) -> dict[str, Any]:
    config_path, result_path = workdir / f"{tag}.config.json", workdir / f"{tag}.result.json"
    log_path = workdir / f"{tag}.log"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run([sys.executable, str(script), "--child", str(config_path),
                               str(result_path)], stdout=log, stderr=subprocess.STDOUT,
                              cwd=REPO, check=False)
    if proc.returncode != 0 or not result_path.is_file():
        tail = "".join(log_path.read_text(encoding="utf-8").splitlines(True)[-30:])
        raise RuntimeError(f"{tag}: child exited with {proc.returncode}; end of {log_path}:"
                           f"\n{tail}")
    # Wall time of the whole child (imports, model loads, tokenization or its cache): context only.
    return {**json.loads(result_path.read_text(encoding="utf-8")),
            "child_wall_s": time.perf_counter() - start}


def child_env() -> None:
    """Settings every child starts with: offline, and no tokenizer threads competing with torch's
    (tokenization happens before the timed window anyway)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if v != v else f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def bar_plot(values: dict[str, list[float]], ylabel: str, title: str, path: str,
             colors: list[str] | None = None) -> None:
    """Bars at the median of each label's values, whiskers from min to max."""
    import matplotlib

    matplotlib.use("Agg")  # no display on benchmark machines
    import matplotlib.pyplot as plt

    labels = list(values)
    med = [median(values[k]) for k in labels]
    err = [[m - min(values[k]) for m, k in zip(med, labels, strict=True)],
           [max(values[k]) - m for m, k in zip(med, labels, strict=True)]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(labels, med, yerr=err, capsize=6, color=colors)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine_line(m: dict[str, Any]) -> str:
    return (f"{m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), "
            f"torch {m['torch']} with {m['torch_threads']} threads, transformers "
            f"{m['transformers']}, Python {m['python']}")


# ---------------------------------------------------------------------------------------------
# Quality benchmarks (bench_quality.py, bench_strategies.py): dev metrics of real training runs on
# GLUE, with the same spec settings, the same bookkeeping and the same tables in both scripts.

HUGE = 10**9  # an interval no run reaches: evaluate and checkpoint at the end only
QUALITY_TASKS = ("rte", "mrpc", "stsb", "cola")
# The metrics each task is reported with, in table order (values of task_specs/glue.yaml's
# metrics); the first is the task's main metric in glue.yaml (mtdnn's checkpoint selection).
REPORTED_METRICS = {"rte": ("accuracy",), "mrpc": ("accuracy", "f1"), "stsb": ("pearson",),
                    "cola": ("matthews_correlation",), "sst2": ("accuracy",),
                    "qnli": ("accuracy",), "mnli": ("accuracy",), "qqp": ("accuracy", "f1"),
                    "wnli": ("accuracy",)}
METRIC_SHORT = {"accuracy": "acc", "f1": "F1", "pearson": "Pearson", "spearmanr": "Spearman",
                "matthews_correlation": "MCC"}
# Rough rates of this project's 2-core development machine (MiniLM, batch 32, fp32), for the
# duration estimates printed before a run starts; not measurements of the run itself. Tokens, not
# rows: an RTE row costs ~6x a CoLA row.
RATE_TRAIN_TOKENS_S = 1200.0  # real training tokens per second (bench_throughput: ~1,380)
RATE_EVAL_TOKENS_S = 3600.0  # real dev tokens per second (RTE+MRPC+STS-B+CoLA dev: ~25 s)
HF_TRAINER_SLOWDOWN = 1.35  # the HF Trainer's time per token over mtdnn's (short runs, measured)
OVERHEAD_CHILD_S = 10.0  # a child process: imports
OVERHEAD_RUN_S = 5.0  # one training run inside a child: model load, data, best/ checkpoint


def check_glue_dir(glue_dir: str) -> None:
    if not (Path(glue_dir) / "RTE" / "train.tsv").is_file():
        sys.exit(f"no GLUE data in {glue_dir} (give --glue-dir or set MTDNN_GLUE_DIR)")


def finish_args(parser: Any, args: Any, presets: dict[str, dict[str, Any]]) -> Any:
    """What the quality scripts share after parsing: options left unset take the preset's value
    (--quick or full), then the seeds and tasks are checked (parser.error exits with usage)."""
    for key, value in presets["quick" if args.quick else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds repeats a seed: {args.seeds}")
    unknown = [t for t in args.tasks if t not in REPORTED_METRICS]
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choose from {list(REPORTED_METRICS)}")
    return args


def open_out(args: Any) -> tuple[Path, ResultStore, Path, Sizes]:
    """Checks the data, then prepares --out: (the directory, its result store, its log
    directory, the sizes of the splits the runs will read). The tokenized splits are cached
    under it, where every run of the benchmark finds them."""
    check_glue_dir(args.glue_dir)
    child_env()
    out = Path(args.out).absolute()
    os.environ.setdefault("MTDNN_CACHE", str(out / "cache"))
    store, logs = ResultStore(out / "results"), out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sizes = split_sizes(args.glue_dir, args.tasks, args.max_train, args.encoder,
                        args.max_seq_length)
    return out, store, logs, sizes


def base_overrides(*, glue_dir: str | None, encoder: str, seed: int, lr: float, batch_size: int,
                   max_seq_length: int, warmup_ratio: float, weight_decay: float,
                   tasks: list[str], max_train: int | None, log_every: int = 10) -> list[str]:
    """mtdnn spec overrides shared by every run of the quality benchmarks: the data, the encoder,
    the optimizer settings (written out, so that the HF Trainer runs can copy them), and evaluation
    at the end only (the best checkpoint is then the final model)."""
    overrides = [f"data_dir={glue_dir or ''}", f"encoder={encoder}", f"seed={seed}",
                 f"max_seq_length={max_seq_length}", f"train.learning_rate={lr}",
                 f"train.batch_size={batch_size}", f"train.warmup_ratio={warmup_ratio}",
                 f"train.weight_decay={weight_decay}", "train.max_grad_norm=1.0",
                 "train.scheduler=linear", f"train.eval_every={HUGE}", f"train.save_every={HUGE}",
                 f"train.log_every={log_every}",
                 # Quoted: YAML reads a bare no as false.
                 "train.report_to=[none]", "train.mixed_precision='no'"]
    if max_train:
        overrides += [f"tasks.{name}.max_train_examples={max_train}" for name in tasks]
    return overrides


def glue_spec(tasks: list[str], overrides: list[str]) -> Any:
    """task_specs/glue.yaml with `overrides`, restricted to `tasks` (raises SpecError)."""
    from mtdnn.spec import load_spec

    return load_spec(REPO / "task_specs" / "glue.yaml", overrides, tasks=tasks)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Rows and real tokens of each task's training and dev splits, as the runs read them."""

    train_rows: dict[str, int]
    train_tokens: dict[str, int]
    dev_rows: dict[str, int]
    dev_tokens: dict[str, int]


def split_sizes(glue_dir: str, tasks: list[str], max_train: int | None, encoder: str,
                max_seq_length: int) -> Sizes:
    """Reads and tokenizes the splits the runs will use, as `train()` does (mtdnn.prepare), into
    $MTDNN_CACHE, where the runs find them again: the rows and tokens that the duration estimates
    are made of."""
    from mtdnn.prepare import load_model_parts, prepare_tasks

    spec = glue_spec(tasks, [f"data_dir={glue_dir}", f"encoder={encoder}",
                             f"max_seq_length={max_seq_length}"] + (
        [f"tasks.{t}.max_train_examples={max_train}" for t in tasks] if max_train else []))
    tokenizer, encoder_model = load_model_parts(spec)
    data = prepare_tasks(spec, tokenizer, encoder_model.config)
    out: dict[str, dict[str, int]] = {k: {} for k in ("train_rows", "train_tokens", "dev_rows",
                                                      "dev_tokens")}
    for name, d in data.items():
        for split, rows, ds in (("train", d.train_rows, d.train), ("dev", d.dev_rows, d.dev)):
            out[f"{split}_rows"][name] = len(rows) if rows is not None else 0
            out[f"{split}_tokens"][name] = int(sum(ds["length"])) if ds is not None else 0
    return Sizes(**out)


def batches(rows: int, batch_size: int) -> int:
    return -(-rows // batch_size)


def metric_columns(tasks: list[str]) -> list[tuple[str, str]]:
    """(task, metric) of each reported column, in table order."""
    return [(t, m) for t in tasks for m in REPORTED_METRICS.get(t, ("accuracy",))]


def main_score(metrics: dict[str, dict[str, float]], tasks: list[str]) -> float:
    """The mean over tasks of each task's main metric (glue.yaml's first: MRPC accuracy), mtdnn's
    checkpoint selection score."""
    return sum(metrics[t][REPORTED_METRICS.get(t, ("accuracy",))[0]] for t in tasks) / len(tasks)


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); std None for fewer than two values."""
    n = len(values)
    if n == 0:
        return float("nan"), None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5


def fmt_mean_std(values: list[float], scale: float = 100.0, digits: int = 1,
                 signed: bool = False) -> str:
    """'61.2 ± 1.3' (x scale); one value: '61.2'; none: '-'. signed: '+0.4 ± 2.0'."""
    if not values:
        return "-"
    mean, std = mean_std([scale * v for v in values])
    sign = "+" if signed else ""
    # round first: -0.04 must not print as "-0.0"
    text = f"{round(mean, digits) + 0.0:{sign}.{digits}f}"
    return text if std is None else f"{text} ± {std:.{digits}f}"


def seed_values(results: dict[tuple[str, int], dict[str, Any]], tasks: list[str]
                ) -> dict[str, dict[int, dict[str, float]]]:
    """{method: {seed: {"task/metric": value, ..., "mean": main score}}} of stored results keyed
    by (method, seed), each with "metrics": {task: {metric: value}}. Results that lack a task are
    left out (a failed or partial unit)."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for (method, seed), r in results.items():
        m = r.get("metrics") or {}
        if not all(t in m for t in tasks):
            continue
        row = {f"{t}/{metric}": m[t][metric] for t, metric in metric_columns(tasks)}
        row["mean"] = main_score(m, tasks)
        out.setdefault(method, {})[seed] = row
    return out


def paired_differences(values: dict[str, dict[int, dict[str, float]]], a: str, b: str
                       ) -> dict[int, dict[str, float]]:
    """a - b per seed, column by column, over the seeds both have."""
    seeds = sorted(set(values.get(a, {})) & set(values.get(b, {})))
    return {s: {k: values[a][s][k] - values[b][s][k] for k in values[a][s]} for s in seeds}


def read_train_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of an mtdnn train_log.jsonl (empty when missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def loss_curves(records: list[dict[str, Any]], epoch_offset: float = 0.0
                ) -> dict[str, list[list[float]]]:
    """{task: [[epoch, loss], ...]} from train_log records (the loss/<task> entries)."""
    curves: dict[str, list[list[float]]] = {}
    for r in records:
        for key, value in r.items():
            if key.startswith("loss/") and "epoch" in r:
                curves.setdefault(key[5:], []).append([r["epoch"] + epoch_offset, value])
    return curves


def loop_seconds(records: list[dict[str, Any]]) -> float | None:
    """The training loop's time in a train_log: `elapsed_s` of the last step's record (logged
    before that step's evaluation, so an evaluation at the end only is not counted)."""
    times = [r["elapsed_s"] for r in records if "elapsed_s" in r]
    return times[-1] if times else None


class ResultStore:
    """One JSON file per unit of work under `root`: a rerun skips units whose file exists, so an
    interrupted benchmark goes on where it stopped. Files are written whole (temporary + rename)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(value, indent=1), encoding="utf-8")
        tmp.replace(path)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)


class TrainCounter(Instrument):
    """What mtdnn's loop trained, observed through its public hook (`train(spec,
    instrument=counter)`): training rows, tokens and batches, optimizer steps, and the training
    time (from the first training batch's fetch to the last optimizer step's end, in segments
    that an evaluation closes, so evaluations and what runs between stages are not counted)."""

    def __init__(self) -> None:
        self.rows = self.batches = self.steps = 0
        self.tokens: Any = 0  # a tensor on the run's device until `totals` (no sync per batch)
        self.seconds = 0.0
        self._start: float | None = None
        self._last_step: float | None = None

    def on_train_batch(self, task: str, batch: dict[str, Any], started: float) -> None:
        if self._start is None:
            self._start, self._last_step = started, None
        self.batches += 1
        self.rows += int(batch["attention_mask"].shape[0])
        self.tokens = self.tokens + batch["attention_mask"].sum()

    def on_step_end(self, step: int) -> None:
        self.steps += 1
        self._last_step = time.perf_counter()

    def on_evaluation(self, step: int, started: float, ended: float) -> None:
        self._close()  # the segment ended at the last step, before the evaluation started

    def _close(self) -> None:
        if self._start is not None and self._last_step is not None:
            self.seconds += self._last_step - self._start
        self._start = self._last_step = None

    def totals(self) -> dict[str, float]:
        self._close()
        return {"train_rows": self.rows, "train_tokens": int(self.tokens),
                "train_batches": self.batches, "steps": self.steps, "train_s": self.seconds}


def command_line() -> str:
    import shlex

    return "python " + " ".join(shlex.quote(a) for a in [
        os.path.relpath(sys.argv[0], REPO) if Path(sys.argv[0]).is_absolute() else sys.argv[0],
        *sys.argv[1:]])


def fmt_duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
