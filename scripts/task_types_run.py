"""The child of bench_task_types.py: one (unit, arm, seed or repeat) run in this process, from
its config to its result: the mtdnn arm, the HF arm (task_types_hf), the throughput of both
(bench_meter's Meter), and the one scoring path both arms' final models go through.

Not a module of the package: imported by the scripts beside it.
"""

from __future__ import annotations

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
import bench_meter as bm  # noqa: E402
import task_types_units as tu  # noqa: E402
from task_types_hf import HfCounter, hf_as_task, hf_trainer  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Scoring: one path for both arms


def score_outputs(kind: Any, metrics: list[str], outputs: list[Any], dataset: Any,
                  examples: Any) -> dict[str, float]:
    """Per-feature outputs (`kind.outputs`-shaped arrays, dataset order) -> the task's metrics:
    the scoring path of both arms."""
    return kind.score(metrics, kind.predictions(outputs, dataset, examples), examples)


def score_tasks(spec: Any, model: Any, tokenizer: Any) -> dict[str, Any]:
    """Every task of the spec scored on its dev features (read and tokenized as mtdnn does), the
    model run by mtdnn's own evaluation loop; the trivial baselines; the split sizes."""
    from mtdnn.evaluation import outputs_of
    from mtdnn.tasks import task_type

    metrics, baselines, sizes, eval_s = {}, {}, {}, 0.0
    for task in spec.tasks:
        kind = task_type(task.type)
        names = list(task.metrics or kind.default_metrics)
        train_rows, train_ds = tu.split_features(spec, task, tokenizer, "train")
        dev_rows, dev_ds = tu.split_features(spec, task, tokenizer, "dev")
        started = time.perf_counter()
        outputs = outputs_of(model, task.name, dev_ds, spec.train.eval_batch_size,
                             collator=kind.collator(tokenizer))
        metrics[task.name] = score_outputs(kind, names, outputs, dev_ds, dev_rows)
        eval_s += time.perf_counter() - started
        baselines[task.name] = kind.baseline(names, train_rows, dev_rows)
        sizes[task.name] = {"train_rows": len(train_rows), "train_features": len(train_ds),
                            "dev_rows": len(dev_rows), "dev_features": len(dev_ds)}
    return {"metrics": metrics, "baselines": baselines, "sizes": sizes, "eval_s": eval_s}


# ---------------------------------------------------------------------------------------------
# The HF arm (its Trainer: task_types_hf)


def quality_hf(cfg: dict[str, Any], spec: Any) -> dict[str, Any]:
    from mtdnn.tasks import task_type

    task = spec.tasks[0]
    tokenizer = tu.encoder_tokenizer(spec)
    _, train_ds = tu.split_features(spec, task, tokenizer, "train")
    counter = HfCounter()
    trainer, model, steps = hf_trainer(spec, task, tokenizer, train_ds, Path(cfg["run_dir"]),
                                       cfg["hf_sampling"], counter.wrap)
    with counter:
        trainer.train()
    scored = score_tasks(spec, hf_as_task(model, task.name, task_type(task.type)), tokenizer)
    del trainer, model
    gc.collect()
    shutil.rmtree(cfg["run_dir"], ignore_errors=True)  # the Trainer's output: nothing kept
    return {**scored, "train": counter.totals(), "planned_steps": steps}


# ---------------------------------------------------------------------------------------------
# The mtdnn arm


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def quality_mtdnn(cfg: dict[str, Any], spec: Any) -> dict[str, Any]:
    from mtdnn.checkpoint import load_model
    from mtdnn.trainer import train

    run_dir = Path(cfg["run_dir"])
    counter = bm.TrainCounter()
    train(tu.train_only(spec, run_dir), progress=False, instrument=counter)
    model = load_model(run_dir / "best", device=device())
    scored = score_tasks(spec, model, tu.encoder_tokenizer(spec))
    del model
    gc.collect()
    if not cfg["keep_checkpoints"]:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {**scored, "train": counter.totals()}


# ---------------------------------------------------------------------------------------------
# Throughput: bench_meter's Meter for both arms


def speed_arm(cfg: dict[str, Any], spec: Any) -> dict[str, Any]:
    from transformers import AutoConfig

    from mtdnn.model import resolve_encoder

    task, run_dir = spec.tasks[0], Path(cfg["run_dir"])
    with bm.Meter() as meter:
        if cfg["arm"] == "mtdnn":
            from mtdnn.trainer import train

            meter.start_run(task.name)
            train(tu.train_only(spec, run_dir), progress=False, instrument=bm.MtdnnProbe(meter))
        else:
            tokenizer = tu.encoder_tokenizer(spec)
            _, train_ds = tu.split_features(spec, task, tokenizer, "train")

            def counted(collator: Any) -> Any:
                inner = meter.wrap(collator)
                return lambda features: inner([{k: v for k, v in f.items() if k != "length"}
                                               for f in features])

            trainer, model, _ = hf_trainer(spec, task, tokenizer, train_ds, run_dir,
                                           cfg["hf_sampling"], counted)
            meter.start_run(task.name)
            trainer.train()
            del trainer, model
        meter.end_run()
    shutil.rmtree(run_dir, ignore_errors=True)
    gc.collect()
    dims = bm.model_dims(AutoConfig.from_pretrained(resolve_encoder(spec.encoder)))
    every = bm.window_totals(meter.runs, dims, steady=False)
    steady = bm.rates(bm.window_totals(meter.runs, dims, steady=True), math.nan)
    return {"steady": {k: v for k, v in steady.items() if not k.startswith("mfu")},
            "totals": {k: every[k] for k in ("steps", "samples", "real_tokens", "padded_tokens",
                                             "seconds")},
            "optimizer": meter.optimizer}


# ---------------------------------------------------------------------------------------------
# The child: one (unit, arm, seed)


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Runs one (unit, arm, seed or repeat) in this process and returns its result."""
    spec = tu.unit_spec(cfg)
    if tu.UNITS[cfg["unit"]].part == "speed":
        result = speed_arm(cfg, spec)
    elif cfg["arm"] == "hf":
        result = quality_hf(cfg, spec)
    else:
        result = quality_mtdnn(cfg, spec)
    return {"unit": cfg["unit"], "arm": cfg["arm"], "n": cfg["n"], "settings": cfg["settings"],
            "grouped": tu.grouped_tasks(cfg), **result, "peak_rss_mb": bc.peak_rss_mb()}


def child(config_path: str, result_path: str) -> None:
    bc.child_env()
    cfg = json.loads(Path(config_path).read_text(encoding="utf-8"))
    Path(result_path).write_text(json.dumps(run(cfg)), encoding="utf-8")
