"""Single-label classification: one class per text or text pair (NLI, paraphrase, sentiment,
acceptability). Cross-entropy over `labels:`; metrics accuracy by default (also f1,
matthews_correlation); baseline: the most frequent training class; export:
`AutoModelForSequenceClassification` with `problem_type="single_label_classification"`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mtdnn.tasks.sequence import SequenceTask

if TYPE_CHECKING:
    from mtdnn.data import Rows
    from mtdnn.model import TaskInfo
    from mtdnn.spec import TaskSpec


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class Classification(SequenceTask):
    name = "classification"
    default_metrics = ("accuracy",)
    problem_type = "single_label_classification"

    def check(self, task: TaskSpec, report: Any) -> None:
        key = f"tasks.{task.name}"
        if len(task.text) not in self.text_columns:
            report.fail(f"{key}.text", f"expected 1 or 2 text columns, got {len(task.text)}")
        if len(task.labels) < 2:
            report.fail(f"{key}.labels", "a classification task needs a list of at least 2 "
                                         "labels, e.g. labels: [entailment, not_entailment]")
        if len(set(task.labels)) != len(task.labels):
            report.fail(f"{key}.labels", f"labels must be unique, got {list(task.labels)}")

    def num_outputs(self, labels: Sequence[str]) -> int:
        return len(labels)

    def convert_label(self, task: TaskSpec, value: Any, index: dict[str, int]
                      ) -> tuple[Any, str | None]:
        import json

        from mtdnn.records import show, typed

        text = str(value)
        if text in index:
            return index[text], None
        if isinstance(value, str):
            return None, (f"label {show(text)} is not in tasks.{task.name}.labels "
                          f"{list(task.labels)} (add it to the list or fix the row)")
        return None, (f"label {typed(value)} reads as {show(text)}, which is not in "
                      f"tasks.{task.name}.labels {list(task.labels)} (write the label as one of "
                      f"them, in a JSON string: {json.dumps(task.labels[0])})")

    def loss(self, logits: Any, labels: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), labels)

    distillable = True

    def teacher_targets(self, outputs: list[Any], dataset: Any, temperature: float) -> list[Any]:
        # the mean over teachers of their softmax at temperature T
        probs = np.mean([_softmax(np.asarray(o) / temperature) for o in outputs], axis=0)
        return [probs[i].tolist() for i in dataset["index"]]

    def distill_loss(self, logits: Any, labels: Any, batch: dict[str, Any], alpha: float,
                     temperature: float) -> Any:
        import torch.nn.functional as F

        logits = logits.float()
        soft = batch["soft_labels"].float()
        kl = F.kl_div(F.log_softmax(logits / temperature, -1), soft, reduction="batchmean")
        return alpha * F.cross_entropy(logits, labels) + (1 - alpha) * temperature ** 2 * kl

    def predictions(self, outputs: list[Any], dataset: Any, examples: Rows) -> np.ndarray:
        return np.stack(outputs).argmax(-1) if outputs else np.zeros(0, dtype=np.int64)

    def baseline(self, metrics: Sequence[str], train: Rows, dev: Rows) -> dict[str, float]:
        from mtdnn.metrics import compute_metrics

        majority = Counter(train.labels).most_common(1)[0][0]
        return compute_metrics(metrics, np.full(len(dev), majority), dev.labels)

    def decode(self, info: TaskInfo, predictions: Any, outputs: list[Any], dataset: Any,
               examples: Any) -> list[dict[str, Any]]:
        import torch

        results = []
        for row in torch.from_numpy(np.stack(outputs)).softmax(-1).tolist() if outputs else []:
            best = max(range(len(row)), key=row.__getitem__)
            results.append({"label": info.labels[best], "score": row[best],
                            "probabilities": dict(zip(info.labels, row))})
        return results

    def export_labels(self, info: TaskInfo) -> list[str]:
        return list(info.labels)
