"""Regression: one score per text or text pair (STS-B similarity). Mean squared error; metrics
pearson and spearmanr; baseline: the mean training score (a constant: correlation 0); export:
`AutoModelForSequenceClassification` with one output named "score", `problem_type="regression"`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mtdnn.tasks.sequence import SequenceTask

if TYPE_CHECKING:
    from mtdnn.data import Rows
    from mtdnn.spec import TaskSpec


class Regression(SequenceTask):
    name = "regression"
    default_metrics = ("pearson", "spearmanr")

    def convert_label(self, task: TaskSpec, value: Any, index: dict[str, int]
                      ) -> tuple[Any, str | None]:
        from mtdnn.records import show, typed

        if isinstance(value, bool):
            return None, (f"label {typed(value)} is not a number (write the score as a number, "
                          "e.g. 3.5)")
        try:
            score = float(value)
        except ValueError:
            return None, (f"label {show(value)} is not a number (regression tasks need numeric "
                          "labels: write the score as a number, e.g. 3.5)")
        if not math.isfinite(score):
            return None, (f"label {show(value)} is not a finite number (a regression label is a "
                          "score such as 3.5: fix the row or drop it)")
        return score, None

    def loss(self, logits: Any, labels: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        return F.mse_loss(logits.float().squeeze(-1), labels.float())

    def card_usage(self, info: Any, repo_id: str) -> tuple[list[str], str]:
        code, note = super().card_usage(info, repo_id)
        return code, note + (" The score is the predicted value (no function is applied to a "
                             "regression output).")

    distillable = True

    def teacher_targets(self, outputs: list[Any], dataset: Any, temperature: float) -> list[Any]:
        scores = np.mean([np.asarray(o)[:, 0] for o in outputs], axis=0)  # the mean score
        return [float(scores[i]) for i in dataset["index"]]

    def distill_loss(self, logits: Any, labels: Any, batch: dict[str, Any], alpha: float,
                     temperature: float) -> Any:
        import torch.nn.functional as F

        scores = logits.float().squeeze(-1)
        return alpha * F.mse_loss(scores, labels.float()) + \
            (1 - alpha) * F.mse_loss(scores, batch["soft_labels"].float())

    def divergence(self, a: Any, b: Any, batch: dict[str, Any]) -> Any:
        from mtdnn.smart import at_least_fp32

        return (at_least_fp32(a) - at_least_fp32(b)).pow(2).mean()  # squared score difference

    def baseline(self, metrics: Sequence[str], train: Rows, dev: Rows) -> dict[str, float]:
        from mtdnn.metrics import compute_metrics

        return compute_metrics(metrics, np.full(len(dev), float(np.mean(train.labels))),
                               dev.labels)
