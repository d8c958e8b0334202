"""The checks each converted task goes through (`TASK_CHECKS`, run in order by
`mtdnn.spec.load.spec_from_dict`): flat, small functions that report every problem through
`report.fail(key, message)`; no check calls another. The checks of the whole spec are in
mtdnn/spec/checks.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from mtdnn.spec.convert import unknown_name_message
from mtdnn.spec.schema import SPLITS, TaskSpec


class Report(Protocol):
    """What the checks write to (`mtdnn.spec.convert._Converter` is one)."""

    def fail(self, key: str, message: str) -> None: ...

    def has_problem(self, key: str) -> bool: ...


def _default(cls: type, name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)




def check_task_type(task: TaskSpec, report: Report) -> None:
    """What the task's type asks of its settings (text columns, labels, ...: mtdnn/tasks)."""
    from mtdnn.tasks import task_type

    task_type(task.type).check(task, report)


def check_metrics(task: TaskSpec, report: Report) -> None:
    from mtdnn.metrics import check_metric_names
    from mtdnn.tasks import task_type

    for p in check_metric_names(task.metrics or task_type(task.type).default_metrics):
        report.fail(f"tasks.{task.name}.metrics", p)


def check_type_settings(task: TaskSpec, report: Report) -> None:
    """A setting only other task types read (positive_label on a classification task, ...) is an
    error naming them, as for the settings of methods that are off."""
    from mtdnn.tasks import names, task_type

    users: dict[str, list[str]] = {}
    for name in names():
        for setting in task_type(name).settings:
            users.setdefault(setting, []).append(name)
    for setting, types in users.items():
        key = f"tasks.{task.name}.{setting}"
        value = getattr(task, setting)
        if task.type in types or value == _default(TaskSpec, setting) or report.has_problem(key):
            continue
        report.fail(key, f"{_shown(value)} is used by task types {' or '.join(types)} only (this "
                         f"task is a {task.type} task): remove it")


def check_file_formats(task: TaskSpec, report: Report) -> None:
    """A format only some task types read (conll, squad) on a task of another type would be read
    as something it is not."""
    from mtdnn.tasks import names, task_type

    readers = {f: [n for n in names() if f in task_type(n).file_formats]
               for n in names() for f in task_type(n).file_formats}
    for split, source in task.files.items():
        types = readers.get(source.format)
        if types and task.type not in types:
            report.fail(f"tasks.{task.name}.files.{split}.format",
                        f"'{source.format}' files are read by task types {' or '.join(types)} "
                        f"only (this task is a {task.type} task): use tsv, csv or jsonl")


_SMART_SETTINGS = ("adv_steps", "adv_step_size", "adv_noise", "adv_epsilon", "adv_norm")


def check_smart(task: TaskSpec, report: Report) -> None:
    """SMART's settings: in range, and only with adv_weight > 0 (one rule for settings of a
    method that is off)."""
    key = f"tasks.{task.name}"
    ranges = {"adv_weight": (task.adv_weight >= 0, ">= 0 (0: off)"),
              "adv_steps": (task.adv_steps >= 1, ">= 1"),
              "adv_step_size": (task.adv_step_size > 0, "> 0"),
              "adv_noise": (task.adv_noise >= 0, ">= 0"),
              "adv_epsilon": (task.adv_epsilon > 0, "> 0"),
              "bpp_weight": (task.bpp_weight >= 0, ">= 0 (0: off)")}
    for name, (ok, rule) in ranges.items():
        if not ok:
            report.fail(f"{key}.{name}", f"must be {rule}, got {getattr(task, name)}")
    if task.adv_weight > 0:
        return
    for name in _SMART_SETTINGS:
        value = getattr(task, name)
        if value != _default(TaskSpec, name) and not report.has_problem(f"{key}.{name}"):
            report.fail(f"{key}.{name}", f"{_shown(value)} is used by SMART's adversarial term "
                        f"only ({key}.adv_weight is 0): set adv_weight > 0, or remove it")


def check_task_numbers(task: TaskSpec, report: Report) -> None:
    key = f"tasks.{task.name}"
    if task.loss_weight < 0:
        report.fail(f"{key}.loss_weight", f"must be >= 0, got {task.loss_weight}")
    if not 0 <= task.dropout < 1:
        report.fail(f"{key}.dropout", f"must be in [0, 1), got {task.dropout}")
    # A negative limit would keep the last rows, and 0 would leave a task that is evaluated but
    # never trained: both are typos, not requests.
    for name in ("batch_size", "max_train_examples", "max_eval_examples"):
        value = getattr(task, name)
        if value is not None and value < 1:
            report.fail(f"{key}.{name}", f"must be >= 1 or null, got {value}")


def check_layer(task: TaskSpec, report: Report) -> None:
    if task.layer == 0:
        report.fail(f"tasks.{task.name}.layer", "0 is the embedding output, not an encoder layer: "
                    "give 1 (the lowest layer) up to the number of layers, a negative number to "
                    "count from the top (-1: the last), or null")


def check_head_init(task: TaskSpec, report: Report) -> None:
    from mtdnn.tasks import task_type

    if task.head_init == "pooler" and not task_type(task.type).dense_head:
        report.fail(f"tasks.{task.name}.head_init", f"'pooler' starts a head's dense layer from "
                    f"the encoder's pooler, and a {task.type} head has none (it is a linear layer "
                    "on every token): remove head_init")


def check_split_names(task: TaskSpec, report: Report) -> None:
    key = f"tasks.{task.name}"
    for split in task.files:
        if split not in SPLITS:
            report.fail(f"{key}.files.{split}", unknown_name_message("split", split, SPLITS))
    if task.hub is not None:
        for split in task.hub.splits:
            if split not in SPLITS:
                report.fail(f"{key}.hub.splits.{split}",
                            unknown_name_message("split", split, SPLITS))


def check_task_data(task: TaskSpec, report: Report) -> None:
    key = f"tasks.{task.name}"
    if not task.files and task.hub is None:
        report.fail(key, "no data: give `files` (local tsv/csv/jsonl per split) or `hub` "
                    "(a Hugging Face dataset)")
    elif "train" not in task.files and (task.hub is None or "train" not in task.hub.splits):
        report.fail(key, "no train split: add files.train or hub.splits.train")


TASK_CHECKS: tuple[Callable[[TaskSpec, Report], None], ...] = (
    check_task_type, check_metrics, check_type_settings, check_file_formats, check_smart,
    check_task_numbers, check_layer, check_head_init,
    check_split_names, check_task_data,
)
