"""(being written) The token_classification task type."""

from __future__ import annotations

from mtdnn.tasks.base import TaskType


class TokenClassification(TaskType):
    name = "token_classification"
    default_metrics = ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")
    settings = ("tag_scheme",)
