"""The plan of bench_task_types.py and its time estimate: which (unit, arm, seed or repeat) run
in which order, the rows, features and tokens of each unit's splits, the tokens each arm computes
per epoch (pads included), and the seconds a run takes at the development machine's rates.

Not a module of the package: imported by the scripts beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality_setup as bqs  # noqa: E402
from task_types_units import (  # noqa: E402
    UNITS,
    encoder_tokenizer,
    grouped_tasks,
    split_features,
    unit_spec,
)


def plan(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(unit, arm, seed or repeat) in run order: whole seeds first, each unit's arms in turn;
    then the speed units, repeat by repeat, alternating the arms."""
    todo = [(u, arm, s) for s in args.seeds for u in args.units if UNITS[u].part != "speed"
            for arm in UNITS[u].arms]
    return todo + [(u, arm, r) for r in range(1, args.repeats + 1) for u in args.units
                   if UNITS[u].part == "speed" for arm in UNITS[u].arms]


def padded_tokens(lengths: list[list[int]], batch: int, grouped: bool, seed: int = 0,
                  megabatch: int = 50) -> int:
    """Tokens computed (pads included) over one epoch of batches of `batch` items, each item a
    list of sequence lengths (a multiple-choice question: one per choice), in a seeded random
    order; grouped: each window of `megabatch` batches sorted longest first (mtdnn's and the
    Trainer's length grouping)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(lengths))
    if grouped:
        window = batch * megabatch
        order = np.concatenate([
            w[np.argsort([-max(lengths[i]) for i in w], kind="stable")]
            for w in (order[s:s + window] for s in range(0, len(order), window))] or [order])
    total = 0
    for s in range(0, len(order), batch):
        items = [lengths[i] for i in order[s:s + batch]]
        total += sum(len(x) for x in items) * max(max(x) for x in items)
    return total


def plan_sizes(cfg: dict[str, Any]) -> dict[str, Any]:
    """Rows, features and tokens of a unit's splits (tokenized into $MTDNN_CACHE, where its runs
    find them again), with the tokens each arm computes per epoch, pads included."""
    spec = unit_spec(cfg)
    tokenizer = encoder_tokenizer(spec)
    speed = UNITS[cfg["unit"]].part == "speed"
    out = {}
    for task in spec.tasks:
        train_rows, train_ds = split_features(spec, task, tokenizer, "train")
        if task.type == "multiple_choice":
            lengths = [[len(s) for s in row] for row in train_ds["input_ids"]]
        else:
            lengths = [[n] for n in train_ds["length"]]
        per_step = spec.batch_size(task)
        sizes = {"train_rows": len(train_rows), "train_features": len(train_ds),
                 "train_tokens": int(sum(train_ds["length"])),
                 "steps_per_epoch": bqs.batches(len(train_ds), per_step),
                 "padded_grouped": padded_tokens(lengths, per_step, True),
                 "padded_random": padded_tokens(lengths, per_step, False)}
        if not speed:
            dev_rows, dev_ds = split_features(spec, task, tokenizer, "dev")
            sizes.update(dev_rows=len(dev_rows), dev_features=len(dev_ds),
                         dev_tokens=int(sum(dev_ds["length"])))
        out[task.name] = sizes
    return out


def estimate_run(cfg: dict[str, Any], sizes: dict[str, Any], epochs: float) -> float:
    """Seconds one (unit, arm, seed) takes, from the development machine's rates (bench_common):
    the tokens computed per epoch (pads included: the HF arm's random batches pad more), the dev
    tokens, the child's start and the run's setup."""
    speed = UNITS[cfg["unit"]].part == "speed"
    grouped = grouped_tasks(cfg)
    train = sum(s["padded_grouped" if t in grouped else "padded_random"]
                for t, s in sizes.items())
    dev = sum(s.get("dev_tokens", 0) for s in sizes.values())
    return (bqs.OVERHEAD_CHILD_S + bqs.OVERHEAD_RUN_S
            + (1.0 if speed else epochs) * train / bqs.RATE_TRAIN_TOKENS_S
            + dev / bqs.RATE_EVAL_TOKENS_S)
