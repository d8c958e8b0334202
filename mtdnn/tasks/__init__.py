"""Task types: one module per type, one class each, registered by name here.

A task type owns everything that differs between kinds of task: which spec fields it takes and
their checks, how a file row or Hub example becomes a typed example, tokenization and collation,
the head and its loss, decoding outputs into predictions, default metrics and a trivial baseline,
the plain transformers class it exports to, and what `mtdnn predict` writes. The loop, the sampler,
evaluation, export, push, finetune, stages and the strategies call its methods and know nothing of
a particular type (see `mtdnn.tasks.base.TaskType`).

The table is torch-free: loading a spec checks task types without importing torch (each type's
module imports torch only inside the methods that build or run a model).

Adding a task type: one module under mtdnn/tasks/ with one `TaskType` subclass, plus one line here.

Example:
    >>> names()
    ('classification', 'regression', 'ranking', ...)
    >>> task_type("ranking").default_metrics
    ('map', 'mrr', 'p@1')
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mtdnn.tasks.base import TaskType

# name -> "module:Class"
TASK_TYPES: dict[str, str] = {
    "classification": "mtdnn.tasks.classification:Classification",
    "regression": "mtdnn.tasks.regression:Regression",
    "ranking": "mtdnn.tasks.ranking:Ranking",
    "token_classification": "mtdnn.tasks.token_classification:TokenClassification",
    "extractive_qa": "mtdnn.tasks.extractive_qa:ExtractiveQA",
    "multiple_choice": "mtdnn.tasks.multiple_choice:MultipleChoice",
    "multilabel_classification": "mtdnn.tasks.multilabel:MultilabelClassification",
}


def names() -> tuple[str, ...]:
    """Every task type's name, in the table's order."""
    return tuple(TASK_TYPES)


@cache
def task_type(name: str) -> TaskType:
    """The task type called `name` (one shared, stateless instance).

    Raises:
        ValueError: an unknown name (with the closest known one).
    """
    if name not in TASK_TYPES:
        raise ValueError(f"unknown task type {name!r}")
    module, _, cls = TASK_TYPES[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
