"""(being written) The multilabel_classification task type."""

from __future__ import annotations

from mtdnn.tasks.base import TaskType


class MultilabelClassification(TaskType):
    name = "multilabel_classification"
    default_metrics = ("macro_f1", "micro_f1", "subset_accuracy")
    settings = ("label_separator", "threshold", "tune_threshold")
