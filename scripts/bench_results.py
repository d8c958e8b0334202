"""What a run leaves behind and how the benchmark scripts read it back: a JSON store per unit of
work (resumable runs), the metrics each GLUE task is reported with, aggregation over seeds
(mean ± std, paired differences), and mtdnn's train_log.jsonl (loss curves, loop time).

Not a module of the package: imported by the scripts beside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# The metrics each task is reported with, in table order (values of task_specs/glue.yaml's
# metrics); the first is the task's main metric in glue.yaml (mtdnn's checkpoint selection).
REPORTED_METRICS = {"rte": ("accuracy",), "mrpc": ("accuracy", "f1"), "stsb": ("pearson",),
                    "cola": ("matthews_correlation",), "sst2": ("accuracy",),
                    "qnli": ("accuracy",), "mnli": ("accuracy",), "qqp": ("accuracy", "f1"),
                    "wnli": ("accuracy",)}
METRIC_SHORT = {"accuracy": "acc", "f1": "F1", "pearson": "Pearson", "spearmanr": "Spearman",
                "matthews_correlation": "MCC"}


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
