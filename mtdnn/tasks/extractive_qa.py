"""(being written) The extractive_qa task type."""

from __future__ import annotations

from mtdnn.tasks.base import TaskType


class ExtractiveQA(TaskType):
    name = "extractive_qa"
    default_metrics = ("squad_f1", "exact_match")
    settings = ("doc_stride", "max_answer_length", "n_best", "allow_no_answer", "null_threshold")
