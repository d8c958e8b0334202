"""(being written) The multiple_choice task type."""

from __future__ import annotations

from mtdnn.tasks.base import TaskType


class MultipleChoice(TaskType):
    name = "multiple_choice"
    default_metrics = ("accuracy",)
    settings = ()
