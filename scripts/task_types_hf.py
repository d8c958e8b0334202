"""The HF arm of bench_task_types.py: a transformers.Trainer set up as mtdnn's run is (the
spec's optimizer settings and step count, the task type's AutoModelFor* class and the collator of
its example script, the same training features with the columns renamed), the counter of what
it trained, and the trained model behind the interface mtdnn's evaluation loop scores.

Not a module of the package: imported by the scripts beside it.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality_setup as bqs  # noqa: E402
from task_types_units import HF_ARMS, LOG_EVERY  # noqa: E402


class HfCounter:
    """What the HF Trainer trained, counted as bench_meter.TrainCounter counts mtdnn's loop:
    features (rows of the batch), real tokens (attention mask) and batches of the training
    batches, optimizer steps (a global torch.optim post-step hook), and the training time from
    the first batch's collation to the last step's end. Batches are matched to steps by order,
    so one the DataLoader collated ahead of a step that never came is not counted."""

    def __init__(self) -> None:
        self.step_t: list[float] = []
        self.batches: list[tuple[int, int]] = []
        self.first: float | None = None
        self._hook: Any = None

    def __enter__(self) -> HfCounter:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._hook = register_optimizer_step_post_hook(
            lambda *_: self.step_t.append(time.perf_counter()))
        return self

    def __exit__(self, *_: Any) -> None:
        self._hook.remove()

    def wrap(self, collate: Any) -> Any:
        """The collator, counting what it returns; the `length` column (kept for the Trainer's
        length grouping) is dropped before collation."""
        def counting(features: list[dict[str, Any]]) -> dict[str, Any]:
            started = time.perf_counter()
            if self.first is None:
                self.first = started
            batch = collate([{k: v for k, v in f.items() if k != "length"} for f in features])
            mask = batch["attention_mask"]
            self.batches.append((int(mask.shape[0]), int(mask.sum())))
            return batch
        return counting

    def totals(self) -> dict[str, float]:
        used = self.batches[:len(self.step_t)]
        return {"train_rows": sum(b[0] for b in used), "train_tokens": sum(b[1] for b in used),
                "train_batches": len(used), "steps": len(self.step_t),
                "train_s": self.step_t[-1] - self.first if self.step_t and self.first is not None
                else 0.0}


def hf_train_dataset(type_name: str, features: Any) -> Any:
    """The training features with the columns the HF model and collator expect: the same rows,
    renamed (QA's [start, end] labels -> start_positions, end_positions) or retyped (multi-hot
    labels as floats: BCEWithLogitsLoss takes float targets); `length` is kept for
    group_by_length and dropped by the collator (HfCounter.wrap)."""
    keep = [c for c in ("input_ids", "token_type_ids", "length") if c in features.column_names]
    if type_name == "extractive_qa":
        features = features.map(lambda b: {"start_positions": [x[0] for x in b["labels"]],
                                           "end_positions": [x[1] for x in b["labels"]]},
                                batched=True, keep_in_memory=True)
        return features.select_columns(keep + ["start_positions", "end_positions"])
    if type_name == "multilabel_classification":
        import datasets

        features = features.cast_column("labels", datasets.List(datasets.Value("float32")))
    return features.select_columns(keep + ["labels"])


def hf_model_and_collator(task: Any, tokenizer: Any, path: str) -> tuple[Any, Any]:
    import transformers

    cls_name, collator_name, _ = HF_ARMS[task.type]
    kwargs: dict[str, Any] = {}
    if task.type == "token_classification":
        kwargs = {"num_labels": len(task.labels)}
    elif task.type == "multilabel_classification":
        kwargs = {"num_labels": len(task.labels), "problem_type": "multi_label_classification"}
    model = getattr(transformers, cls_name).from_pretrained(path, **kwargs)
    return model, getattr(transformers, collator_name)(tokenizer)


def hf_trainer(spec: Any, task: Any, tokenizer: Any, train_ds: Any, run_dir: Path,
               sampling: str, collate: Any) -> tuple[Any, Any, int]:
    """(Trainer, model, steps): the spec's optimizer settings and mtdnn's step count
    (ceil(epochs x batches per epoch), warmup int(warmup_ratio x steps)), the task's batch size
    (CommonsenseQA: questions)."""
    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    from mtdnn.model import resolve_encoder

    t = spec.train
    per_step = spec.batch_size(task)
    steps = math.ceil(t.epochs * bqs.batches(len(train_ds), per_step))
    set_seed(spec.seed)  # the new head's initialization
    model, collator = hf_model_and_collator(task, tokenizer, resolve_encoder(spec.encoder))
    args = TrainingArguments(
        output_dir=str(run_dir), seed=spec.seed, per_device_train_batch_size=per_step,
        learning_rate=t.learning_rate, weight_decay=t.weight_decay, adam_beta1=t.adam_betas[0],
        adam_beta2=t.adam_betas[1], adam_epsilon=t.adam_epsilon,
        max_grad_norm=t.max_grad_norm or 0.0, lr_scheduler_type=t.scheduler,
        warmup_steps=int(t.warmup_ratio * steps), max_steps=steps,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True, save_strategy="no",
        eval_strategy="no", logging_strategy="steps", logging_steps=LOG_EVERY, report_to="none",
        train_sampling_strategy=sampling, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=hf_train_dataset(task.type, train_ds),
                      processing_class=tokenizer, data_collator=collate(collator))
    return trainer, model, steps


# ---------------------------------------------------------------------------------------------
# Scoring: the trained model behind the interface of mtdnn's evaluation loop


def hf_as_task(model: Any, task: str, kind: Any) -> Any:
    """A trained HF model behind the interface mtdnn.evaluation.outputs_of runs a MultiTaskModel
    through (`model(task, **batch)["logits"]`), its logits made by the task type's own bridge from
    the plain transformers class (`exported_logits`: e.g. QA's start and end stacked, padding
    masked), a missing choice masked as mtdnn's multiple-choice head masks it."""
    import torch

    class HFTask(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hf, self.task_types = model, {task: kind}

        def forward(self, name: str, **batch: Any) -> dict[str, Any]:
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")
                      if k in batch}
            logits = self.task_types[name].exported_logits(self.hf, inputs)
            if "choice_mask" in batch:
                logits = logits.masked_fill(~batch["choice_mask"], float("-inf"))
            return {"logits": logits}

    return HFTask()
