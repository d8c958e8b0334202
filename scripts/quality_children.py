"""The children of bench_quality.py: one (method, seed) run in this process, from its config to
its result: one training run per task (the HF Trainer, mtdnn single-task, or mtdnn-multi's
checkpoint fine-tuned per task) or one run of all tasks together (mtdnn-multi). hf_train_task and
mtdnn_train are also what scripts/probe_hf_gap.py and scripts/study_quality.py run.

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
import bench_quality_setup as bqs  # noqa: E402
import bench_results as br  # noqa: E402

LOG_EVERY = 5  # steps per loss record of a one-task run; a K-task run logs every K * LOG_EVERY


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
