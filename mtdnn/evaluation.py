"""Evaluation: dev metrics per task, trivial baselines, the results table, and checkpoint-level
`evaluate` / `predict_file` (what `mtdnn evaluate` and `mtdnn predict` call).

Under several processes each rank scores its own slice (`rank::world`) of a task's rows, and the
slices are gathered and put back in order, so every example is counted exactly once.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mtdnn.metrics import compute_metrics, main_metric

if TYPE_CHECKING:
    from mtdnn.collate import Collator
    from mtdnn.data import Rows
    from mtdnn.model import MultiTaskModel, TaskInfo


@torch.inference_mode()
def score_rows(model: MultiTaskModel, task: str, dataset: Any, collator: Collator,
               batch_size: int, accelerator: Any = None) -> np.ndarray:
    """Head outputs for every row of a tokenized split, in row order: class ids (classification)
    or scores. Rows are run longest-first, so each batch is padded little."""
    from mtdnn.heads import predictions

    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = accelerator.device if accelerator else next(model.parameters()).device
    was_training = model.training
    model.eval()
    lengths = np.asarray(dataset["length"])
    order = np.argsort(-lengths, kind="stable")[rank::world]
    mine: list[tuple[int, float]] = []
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size].tolist()
        cols = dataset[idx]
        rows = [{k: cols[k][i] for k in ("input_ids", "token_type_ids") if k in cols}
                for i in range(len(idx))]
        batch = {k: v.to(device) for k, v in collator(rows).items()}
        with accelerator.autocast() if accelerator else torch.autocast("cpu", enabled=False):
            logits = model(task, **batch)["logits"]
        mine += zip(idx, predictions(model.tasks[task].type, logits).tolist())
    model.train(was_training)
    if world > 1:
        from accelerate.utils import gather_object

        mine = gather_object(mine)
    out = np.empty(len(dataset), dtype=np.float64)
    seen = np.zeros(len(dataset), dtype=bool)
    for i, value in mine:
        out[i], seen[i] = value, True
    assert seen.all(), "evaluation lost rows"
    return out


def evaluate_task(model: MultiTaskModel, info: TaskInfo, dataset: Any, rows: Rows,
                  accelerator: Any, batch_size: int, collator: Collator) -> dict[str, float]:
    """The task's metrics on one labelled split."""
    if rows.labels is None:
        raise ValueError(f"{rows.where}: the {rows.split} split of {info.name!r} has no labels")
    preds = score_rows(model, info.name, dataset, collator, batch_size, accelerator)
    if info.type == "classification":
        preds = preds.astype(np.int64)
    return compute_metrics(info.metrics, preds, rows.labels, rows.query_ids)


def mean_main_metric(results: dict[str, dict[str, float]], data: dict[str, Any]) -> float:
    """The selection score: the mean over tasks of each task's main (first) metric."""
    if not results:
        return float("nan")
    return float(np.mean([results[t][main_metric(data[t].info.metrics)] for t in results]))


def majority_baseline(info: TaskInfo, train: Rows, dev: Rows) -> dict[str, float]:
    """What a model that ignores its input scores: the most frequent training class, the mean
    training score (a constant: correlation 0), or, for ranking, a random order (mean of 20
    seeded shuffles)."""
    if dev.labels is None or train.labels is None:
        return {}
    n = len(dev)
    if info.type == "classification":
        majority = Counter(train.labels).most_common(1)[0][0]
        return compute_metrics(info.metrics, np.full(n, majority), dev.labels)
    if info.type == "regression":
        return compute_metrics(info.metrics, np.full(n, float(np.mean(train.labels))), dev.labels)
    rng = np.random.default_rng(0)
    runs = [compute_metrics(info.metrics, rng.random(n), dev.labels, dev.query_ids)
            for _ in range(20)]
    return {m: float(np.mean([r[m] for r in runs])) for m in info.metrics}


def results_table(metrics: dict[str, dict[str, dict[str, float]]],
                  baselines: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per task and metric, dev value next to the trivial baseline."""
    lines = ["| task | metric | dev | baseline |", "|---|---|---:|---:|"]
    for task, splits in metrics.items():
        for name, value in splits.get("dev", {}).items():
            base = baselines.get(task, {}).get(name)
            # round first: a constant's correlation of -1e-17 would print as "-0.00"
            base_text = f"{round(100 * base, 2) + 0.0:.2f}" if base is not None else "-"
            lines.append(f"| {task} | {name} | {100 * value:.2f} | {base_text} |")
    lines.append("")
    lines.append("Values x100. Baseline: most frequent training class (classification), mean "
                 "training score (regression), random order (ranking).")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Checkpoint-level API


def _checkpoint_spec(checkpoint: str | Path, data_dir: str | None, overrides=()):
    from mtdnn.spec import load_spec

    overrides = list(overrides)
    if data_dir is not None:
        overrides.append(f"data_dir={data_dir}")
    return load_spec(Path(checkpoint) / "spec.yaml", overrides)


def evaluate(checkpoint: str | Path, tasks: list[str] | None = None, split: str = "dev",
             data_dir: str | None = None, batch_size: int = 128
             ) -> dict[str, dict[str, dict[str, float]]]:
    """Scores a checkpoint on a labelled split of its tasks, read from the sources of the spec it
    was trained with (`data_dir` points at another local copy).

    Returns:
        {task: {split: {metric: value}}}
    """
    from mtdnn.collate import Collator
    from mtdnn.data import read_split, tokenize
    from mtdnn.model import MultiTaskModel
    from mtdnn.spec import unknown_name_message

    model = MultiTaskModel.from_pretrained(checkpoint)
    spec = _checkpoint_spec(checkpoint, data_dir)
    names = tasks or list(model.tasks)
    for name in names:
        if name not in model.tasks:
            raise KeyError(unknown_name_message("task", name, model.tasks))
    collator = Collator(model.tokenizer.pad_token_id)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        rows = read_split(spec, spec.task(name), split)
        ds = tokenize(rows, model.tokenizer, model.max_seq_length, for_training=False)
        out[name] = {split: evaluate_task(model, model.tasks[name], ds, rows, None, batch_size,
                                          collator)}
    return out


def read_inputs(path: str | Path, columns: list[Any]) -> tuple[list[tuple[str, ...]], list[str]]:
    """Reads raw texts for prediction: TSV/CSV with a header (columns by name) or JSON lines.
    Returns (texts per row, row ids: an `id`/`idx`/`index` column when present, else the row
    number)."""
    from mtdnn.data import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), ["input file not found"])
    if path.suffix.lower() in (".jsonl", ".json"):
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                   if line.strip()]
    else:
        with open(path, encoding="utf-8-sig", newline="") as f:
            quoting = csv.QUOTE_NONE if path.suffix.lower() == ".tsv" else csv.QUOTE_MINIMAL
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
            records = list(csv.DictReader(f, delimiter=delimiter, quoting=quoting))
    if not records:
        raise DataError(str(path), ["no rows"])
    missing = [c for c in columns if str(c) not in records[0]]
    if missing:
        raise DataError(str(path), [f"no column(s) {missing}; the file has {list(records[0])} "
                                    "(rename the columns, or pass --text-columns)"])
    id_key = next((k for k in ("id", "idx", "index") if k in records[0]), None)
    texts = [tuple(str(r[str(c)]) for c in columns) for r in records]
    ids = [str(r[id_key]) if id_key else str(i) for i, r in enumerate(records)]
    return texts, ids


def predict_file(checkpoint: str | Path, task: str, input_path: str | Path,
                 output_path: str | Path, text_columns: list[str] | None = None,
                 batch_size: int = 64) -> int:
    """Writes one JSON line per input row: its id, the prediction and the scores. Returns the number
    of rows written."""
    from mtdnn.model import MultiTaskModel
    from mtdnn.spec import unknown_name_message

    model = MultiTaskModel.from_pretrained(checkpoint)
    if task not in model.tasks:
        raise KeyError(unknown_name_message("task", task, model.tasks))
    info = model.tasks[task]
    columns = text_columns or [str(c) for c in info.text_columns]
    if len(columns) != len(info.text_columns):
        raise ValueError(f"task {task!r} reads {len(info.text_columns)} text column(s), got "
                         f"{columns}")
    texts, ids = read_inputs(input_path, columns)
    results = model.predict(task, texts, batch_size=batch_size)
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with open(output_path, "w", encoding="utf-8") as f:
        for row_id, result in zip(ids, results):
            f.write(json.dumps({"id": row_id, **result}) + "\n")
    return len(results)
