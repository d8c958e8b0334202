"""How the quality benchmarks (bench_quality.py, bench_strategies.py; bench_task_types.py takes
some of it) set up their runs: the --quick preset and the options it fills, the spec overrides
every run shares, the rows and tokens of each task's splits, and the rough rates the duration
estimates printed before a run are made of.

Not a module of the package: imported by the scripts beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402  (puts this checkout's package on sys.path)
import bench_results as br  # noqa: E402

HUGE = 10**9  # an interval no run reaches: evaluate and checkpoint at the end only
QUALITY_TASKS = ("rte", "mrpc", "stsb", "cola")
# Rough rates of this project's 2-core development machine (MiniLM, batch 32, fp32), for the
# duration estimates printed before a run starts; not measurements of the run itself. Tokens, not
# rows: an RTE row costs ~6x a CoLA row.
RATE_TRAIN_TOKENS_S = 1200.0  # real training tokens per second (bench_throughput: ~1,380)
RATE_EVAL_TOKENS_S = 3600.0  # real dev tokens per second (RTE+MRPC+STS-B+CoLA dev: ~25 s)
HF_TRAINER_SLOWDOWN = 1.35  # the HF Trainer's time per token over mtdnn's (short runs, measured)
OVERHEAD_CHILD_S = 10.0  # a child process: imports
OVERHEAD_RUN_S = 5.0  # one training run inside a child: model load, data, best/ checkpoint


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


def finish_args(parser: Any, args: Any, presets: dict[str, dict[str, Any]]) -> Any:
    """What the quality scripts share after parsing: options left unset take the preset's value
    (--quick or full), then the seeds and tasks are checked (parser.error exits with usage)."""
    for key, value in presets["quick" if args.quick else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds repeats a seed: {args.seeds}")
    unknown = [t for t in args.tasks if t not in br.REPORTED_METRICS]
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choose from {list(br.REPORTED_METRICS)}")
    return args


def open_out(args: Any) -> tuple[Path, br.ResultStore, Path, Sizes]:
    """Checks the data, then prepares --out: (the directory, its result store, its log
    directory, the sizes of the splits the runs will read). The tokenized splits are cached
    under it, where every run of the benchmark finds them."""
    bc.check_glue_dir(args.glue_dir)
    bc.child_env()
    out = Path(args.out).absolute()
    os.environ.setdefault("MTDNN_CACHE", str(out / "cache"))
    store, logs = br.ResultStore(out / "results"), out / "logs"
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

    spec = bc.glue_spec(tasks, [f"data_dir={glue_dir}", f"encoder={encoder}",
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
