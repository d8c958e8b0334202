"""Evaluation: dev metrics per task, trivial baselines, the results table, and checkpoint-level
`evaluate` / `predict_file` (what `mtdnn evaluate` and `mtdnn predict` call).

Under several processes each rank scores its own slice (`rank::world`) of a task's rows, and the
slices are gathered and put back in order, so every example is counted exactly once.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mtdnn.metrics import main_metric

if TYPE_CHECKING:
    from mtdnn.model import MultiTaskModel, TaskInfo


@torch.inference_mode()
def outputs_of(model: MultiTaskModel, task: str, dataset: Any, batch_size: int,
               accelerator: Any = None, collator: Any = None, instrument: Any = None
               ) -> list[np.ndarray]:
    """The head's outputs for every feature of a tokenized split, in dataset order: one array per
    feature, as the task's type keeps them (`TaskType.outputs`).

    Features are run sorted by length, longest first (each batch is padded little; an
    out-of-memory error comes at the first batch), and put back in order. Under several processes
    each rank scores its own slice (`rank::world`) and the slices are gathered, so every feature is
    counted exactly once.
    """
    from mtdnn.collate import fetch_batch

    kind = model.task_types[task]
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = accelerator.device if accelerator else next(model.parameters()).device
    collator = collator or kind.collator(model.tokenizer)
    columns = kind.columns(training=False)
    was_training = model.training
    model.eval()
    batch_size = kind.eval_batch_size(batch_size, dataset)
    lengths = np.asarray(dataset["length"])
    order = np.argsort(-lengths, kind="stable")[rank::world]
    mine: list[tuple[int, np.ndarray]] = []
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size].tolist()
        batch = fetch_batch(dataset, idx, collator, device, columns, instrument=instrument)
        with accelerator.autocast() if accelerator else contextlib.nullcontext():
            logits = model(task, **batch)["logits"]
        mine += zip(idx, kind.outputs(logits, batch))
    model.train(was_training)
    if world > 1:
        from accelerate.utils import gather_object

        mine = gather_object(mine)
    out: list[Any] = [None] * len(dataset)
    for i, values in mine:
        out[i] = values
    assert all(v is not None for v in out), "evaluation lost rows"
    return out


def logits_of(model: MultiTaskModel, task: str, dataset: Any, batch_size: int,
              accelerator: Any = None, collator: Any = None, instrument: Any = None
              ) -> np.ndarray:
    """A sentence-level task's outputs as one (N, outputs) float64 array, in row order."""
    outputs = outputs_of(model, task, dataset, batch_size, accelerator, collator, instrument)
    return np.stack(outputs).astype(np.float64) if outputs else \
        np.zeros((0, model.tasks[task].num_outputs))


def predictions(task_type: str, logits: np.ndarray) -> np.ndarray:
    """A sentence-level type's (N, outputs) logits -> what metrics compare: class ids, or the raw
    score (regression, ranking)."""
    from mtdnn.tasks import task_type as get

    return get(task_type).predictions(list(logits), None, None)


def evaluate_task(model: MultiTaskModel, info: TaskInfo, dataset: Any, rows: Any,
                  accelerator: Any, batch_size: int, collator: Any = None,
                  instrument: Any = None) -> dict[str, float]:
    """The task's metrics on one labelled split (its type decodes the outputs and scores)."""
    if rows.labels is None:
        raise ValueError(f"{rows.where}: the {rows.split} split of {info.name!r} has no labels")
    kind = model.task_types[info.name]
    outputs = outputs_of(model, info.name, dataset, batch_size, accelerator, collator,
                         instrument)
    rows = kind.calibrate(info, outputs, rows)
    return kind.score(info.metrics, kind.predictions(outputs, dataset, rows), rows)


def mean_main_metric(results: dict[str, dict[str, float]], data: dict[str, Any]) -> float:
    """The selection score: the mean over tasks of each task's main (first) metric."""
    if not results:
        return float("nan")
    return float(np.mean([results[t][main_metric(data[t].info.metrics)] for t in results]))


def majority_baseline(info: TaskInfo, train: Any, dev: Any) -> dict[str, float]:
    """What a model that ignores its input scores on dev (each task type says what that is: the
    most frequent training class, the mean training score, a random order, ...)."""
    from mtdnn.tasks import task_type

    if dev.labels is None or train.labels is None:
        return {}
    return task_type(info.type).baseline(info.metrics, train, dev)


def results_table(metrics: dict[str, dict[str, dict[str, float]]],
                  baselines: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per task and metric, dev value next to the trivial baseline."""
    lines = ["| task | metric | dev | baseline |", "|---|---|---:|---:|"]
    for task, splits in metrics.items():
        if not splits.get("dev"):  # trained, not evaluated: say so rather than leave it out
            lines.append(f"| {task} | - | no dev split | - |")
        for name, value in splits.get("dev", {}).items():
            base = baselines.get(task, {}).get(name)
            # round first: a constant's correlation of -1e-17 would print as "-0.00"
            base_text = f"{round(100 * base, 2) + 0.0:.2f}" if base is not None else "-"
            lines.append(f"| {task} | {name} | {100 * value:.2f} | {base_text} |")
    lines.append("")
    lines.append("Values x100. Baseline: what a model that ignores its input scores (each task "
                 "type's: the most frequent training class, answer or label set, the mean "
                 "training score, a random order; see mtdnn/tasks/).")
    return "\n".join(lines)


def evaluate_tasks(model: MultiTaskModel, data: dict[str, Any], accelerator: Any,
                   batch_size: int, instrument: Any = None) -> dict[str, dict[str, float]]:
    """Dev metrics of every task that has a dev split (`data`: task -> TaskData), during
    training; leaves the model in training mode."""
    results = {name: evaluate_task(model, d.info, d.dev, d.dev_rows, accelerator, batch_size,
                                   None, instrument)
               for name, d in data.items() if d.dev is not None}
    model.train()
    return results


# --------------------------------------------------------------------------------------------------
# Checkpoint-level API


def _check_tasks(checkpoint: str | Path, model: MultiTaskModel, names: list[str]) -> None:
    from mtdnn.errors import UserError
    from mtdnn.spec import unknown_name_message

    unknown = [unknown_name_message("task", n, model.tasks) for n in names if n not in model.tasks]
    if unknown:
        raise UserError(checkpoint, unknown)


def evaluate(checkpoint: str | Path, tasks: list[str] | None = None, split: str = "dev",
             data_dir: str | None = None, batch_size: int | None = None,
             trust_remote_code: bool = False) -> dict[str, dict[str, dict[str, float]]]:
    """Scores a checkpoint on a labelled split of its tasks, read from the sources of the spec it
    was trained with (`data_dir` points at another local copy). `batch_size` defaults to the
    run's `train.eval_batch_size`: the same batches as the evaluations during training, so the
    same metrics to the last digit.

    Returns:
        {task: {split: {metric: value}}}
    Raises:
        UserError: an unknown task, a split without labels, data that cannot be read.
    """
    from mtdnn.checkpoint import load_model, read_spec
    from mtdnn.data import read_split
    from mtdnn.errors import UserError

    model = load_model(checkpoint, trust_remote_code=trust_remote_code)
    names = tasks or list(model.tasks)
    _check_tasks(checkpoint, model, names)
    spec = read_spec(checkpoint, data_dir=data_dir)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        rows = read_split(spec, spec.task(name), split)
        if rows.labels is None:
            raise UserError(rows.where, f"the {split} split of task {name!r} has no labels to "
                                        "score against (GLUE test sets have none): use --split "
                                        "dev, or `mtdnn predict`")
        ds = model.task_types[name].features(rows, model.tokenizer, model.max_seq_length,
                                             for_training=False, task=spec.task(name))
        out[name] = {split: evaluate_task(model, model.tasks[name], ds, rows, None,
                                          batch_size or spec.train.eval_batch_size)}
    return out


def predict_file(checkpoint: str | Path, task: str, input_path: str | Path,
                 output_path: str | Path, text_columns: list[str] | None = None,
                 batch_size: int = 64, trust_remote_code: bool = False) -> int:
    """Writes one JSON line per input row (TSV/CSV with a header, or JSON lines, read by the
    training data readers): its id, the prediction and the scores. Returns the number of rows
    written.

    Raises:
        UserError: an unknown task, the wrong number of text columns, a bad input file.
    """
    from mtdnn.checkpoint import load_model
    from mtdnn.errors import UserError

    output_path = Path(output_path)
    if output_path.is_dir() or any(p.is_file() for p in output_path.parents):
        raise UserError("--output", f"{output_path}: is a directory, or lies under a file; give "
                                    "the path of the JSON lines file to write, e.g. "
                                    "preds/rte.jsonl")
    model = load_model(checkpoint, trust_remote_code=trust_remote_code)
    _check_tasks(checkpoint, model, [task])
    info, kind = model.tasks[task], model.task_types[task]
    default = kind.input_columns(info)
    columns = text_columns or default
    if len(columns) != len(default):
        raise UserError("--text-columns", f"task {task!r} reads {len(default)} text "
                                          f"column(s), got {columns}")
    inputs, ids = kind.read_inputs(input_path, columns)
    results = model.predict(task, inputs, batch_size=batch_size)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with open(output_path, "w", encoding="utf-8") as f:
        for row_id, result in zip(ids, results, strict=True):
            f.write(json.dumps({"id": row_id, **result}) + "\n")
    return len(results)
