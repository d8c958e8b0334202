"""The checks a converted spec goes through: flat lists of small functions, run in order.

`TASK_CHECKS` (mtdnn/spec/task_checks.py) run on each task that converted (`check(task,
report)`), `CHECKS` (here) on the whole spec once everything converted (`check(spec, report)`).
Each reports every problem it finds through `report.fail(key, message)` and returns nothing; no
check calls another. The multi-task methods
are checked from their table (`mtdnn.methods`): what a chosen method `requires` of the other
`train:` keys, its `max_tasks`, and the settings that only methods which are off would read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mtdnn import methods
from mtdnn.spec.convert import unknown_name_message
from mtdnn.spec.schema import STANDALONE_TRACKERS, Spec, TaskSpec, TrainSpec
from mtdnn.spec.task_checks import Report, _default, _shown

# --------------------------------------------------------------------------------------------------
# The run


def _positive(v: Any) -> bool:
    return v > 0


def _positive_or_null(v: Any) -> bool:
    return v is None or v > 0


# train.<setting>, whether a value is valid, and what is (said as "must be <that>, got <value>").
# Checked whatever the chosen methods: a bad value is a typo even where it is unused.
_TRAIN_RANGES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("learning_rate", _positive, "> 0"),
    ("batch_size", _positive, "> 0"),
    ("eval_batch_size", _positive, "> 0"),
    ("gradient_accumulation_steps", _positive, "> 0"),
    ("max_grad_norm", _positive_or_null, "> 0 or null"),
    ("log_every", _positive, "> 0"),
    ("save_total_limit", lambda v: v >= 1, ">= 1"),
    ("max_steps", _positive_or_null, "> 0 or null"),
    ("eval_every", _positive_or_null, "> 0 or null"),
    ("save_every", _positive_or_null, "> 0 or null"),
    ("save_every_minutes", _positive_or_null, "> 0 or null"),
    ("warmup_ratio", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("temperature", _positive, "> 0"),
    ("examples_cap", _positive_or_null, "> 0 or null"),
    ("main_ratio", lambda v: v >= 0, ">= 0 (auxiliary batches per main-task batch)"),
    ("anneal_end", lambda v: 0 <= v <= 1,
     "in [0, 1] (1: proportional throughout, 0: uniform at the end)"),
    ("weighting_lr", _positive_or_null, "> 0 or null"),
    ("dwa_temperature", _positive, "> 0"),
    ("dwa_period", lambda v: v is None or v >= 1, ">= 1 or null"),
    ("gradnorm_alpha", lambda v: v >= 0, ">= 0"),
    ("cagrad_c", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("soft_sharing_weight", lambda v: v >= 0, ">= 0"),
)


def check_train_ranges(spec: Spec, report: Report) -> None:
    for name, valid, must in _TRAIN_RANGES:
        value = getattr(spec.train, name)
        if not valid(value):
            report.fail(f"train.{name}", f"must be {must}, got {value}")


def check_length(spec: Spec, report: Report) -> None:
    t = spec.train
    if t.epochs <= 0 and t.max_steps is None:
        report.fail("train.epochs", f"must be > 0 (or set train.max_steps), got {t.epochs}")
    if spec.max_seq_length < 8:
        report.fail("max_seq_length", f"must be >= 8, got {spec.max_seq_length}")


def check_report_to(spec: Spec, report: Report) -> None:
    # The names themselves are checked by their type (a typo gets "did you mean").
    chosen = spec.train.report_to
    for name in STANDALONE_TRACKERS:
        if name in chosen and len(chosen) > 1:
            report.fail("train.report_to", f"'{name}' stands alone, got {list(chosen)}: give "
                        f"[{name}], or tracker names only, e.g. [tensorboard, wandb]")


# ---- the multi-task methods, from their table

def _chosen(spec: Spec) -> dict[str, str]:
    return {kind: getattr(spec.train, kind) for kind in methods.KINDS}


def _or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _fits(m: methods.Method, chosen: dict[str, str], n_tasks: int) -> bool:
    return all(chosen[other] in allowed for other, allowed in m.requires.items()) and (
        m.max_tasks is None or n_tasks <= m.max_tasks)


def _instead(kind: str, chosen: dict[str, str], n_tasks: int) -> str:
    """The other methods of a kind that would fit this spec: "use a or b, or <kind>: none"."""
    fits = [m for m in methods.METHODS if m.kind == kind and m.name != chosen[kind]
            and _fits(m, chosen, n_tasks)]
    parts = []
    if any(m.impl is not None for m in fits):
        parts.append("use " + _or([m.name for m in fits if m.impl is not None]))
    parts += [f"{kind}: {m.name}" for m in fits if m.impl is None]  # the switch that turns it off
    return ", or ".join(parts)


# A chosen method that rules out what another one requires, in its own words: said instead of
# "<name> needs train.<kind>=..." when the requirement fails because of it.
_RULED_OUT_BY = {
    ("sharing", "soft"): "'{name}' works on the parameters every task shares; with sharing=soft "
                         "no parameter is shared: use one of them",
}


def check_method_requirements(spec: Spec, report: Report) -> None:
    """For each kind, the chosen method's `requires` of the other train: keys."""
    chosen = _chosen(spec)
    for kind in methods.KINDS:
        m = methods.method(kind, chosen[kind])
        for other, allowed in m.requires.items():
            if chosen[other] in allowed:
                continue
            words = _RULED_OUT_BY.get((other, chosen[other]))
            if words is not None:
                report.fail(f"train.{kind}", words.format(name=m.name))
                continue
            message = (f"'{m.name}' needs train.{other}={_or(list(allowed))} ({m.why}): set "
                       f"{other}: {allowed[0]}")
            instead = _instead(kind, chosen, len(spec.tasks))
            report.fail(f"train.{kind}", f"{message}, or {instead}" if instead else message)


def check_method_task_limits(spec: Spec, report: Report) -> None:
    chosen = _chosen(spec)
    for kind in methods.KINDS:
        m = methods.method(kind, chosen[kind])
        if m.max_tasks is not None and len(spec.tasks) > m.max_tasks:
            instead = _instead(kind, chosen, len(spec.tasks))
            report.fail(f"train.{kind}", f"'{m.name}' works with at most {m.max_tasks} tasks "
                        f"(this spec has {len(spec.tasks)})" + (f": {instead}" if instead else ""))


def _users(setting: str, level: str) -> list[methods.Method]:
    return [m for m in methods.METHODS if setting in getattr(m, level)]


def _settings(level: str) -> list[str]:
    """Every setting the table names at one level ("settings": train, "task_settings": tasks)."""
    return list(dict.fromkeys(s for m in methods.METHODS for s in getattr(m, level)))


def _by(users: list[methods.Method]) -> str:
    kinds = list(dict.fromkeys(m.kind for m in users))
    return " or ".join(f"{k}={_or([m.name for m in users if m.kind == k])}" for k in kinds)


def check_unused_train_settings(spec: Spec, report: Report) -> None:
    """A train: setting that only methods which are off would read, set to anything but its
    default, is a mistake (a typo in the method's name, or a method switched off and its setting
    left behind): say which method reads it."""
    chosen = _chosen(spec)
    for setting in _settings("settings"):
        users = _users(setting, "settings")
        value = getattr(spec.train, setting)
        key = f"train.{setting}"
        if any(chosen[m.kind] == m.name for m in users) or value == _default(TrainSpec, setting) \
                or report.has_problem(key):
            continue
        kinds = list(dict.fromkeys(m.kind for m in users))
        now = ", ".join(f"the {k.replace('_', ' ')} is '{chosen[k]}'" for k in kinds)
        report.fail(key, f"{_shown(value)} is used by {_by(users)} only ({now}): remove it, or "
                    f"set {users[0].kind}: {users[0].name}")


# How a task setting of a method that is off is worded, by the kind of that method (the words
# users know); other kinds get the wording of the train: settings.
_TASK_SETTING_OFF = {
    "loss_weighting": "{value} is used by train.{by} only ('{chosen}' sets the weights itself): "
                      "remove it, or set {switch}",
    "sharing": "is used by train.{by} only: remove it, or set train.{switch}",
}
_TASK_SETTING_OFF_DEFAULT = ("{value} is used by train.{by} only (the {kind} is '{chosen}'): "
                             "remove it, or set train.{switch}")


def check_unused_task_settings(spec: Spec, report: Report) -> None:
    """The rule of `check_unused_train_settings`, for tasks.<name>.<setting>s."""
    chosen = _chosen(spec)
    for setting in _settings("task_settings"):
        users = _users(setting, "task_settings")
        if any(chosen[m.kind] == m.name for m in users):
            continue
        kind = users[0].kind
        words = _TASK_SETTING_OFF.get(kind, _TASK_SETTING_OFF_DEFAULT)
        for task in spec.tasks:
            value = getattr(task, setting)
            key = f"tasks.{task.name}.{setting}"
            if value == _default(TaskSpec, setting) or report.has_problem(key):
                continue
            report.fail(key, words.format(
                value=_shown(value), by=_by(users), chosen=chosen[kind],
                kind=kind.replace("_", " "), switch=f"{kind}: {users[0].name}"))


def check_bpp_beta(spec: Spec, report: Report) -> None:
    beta = spec.train.bpp_beta
    if not 0 <= beta < 1:
        report.fail("train.bpp_beta", f"must be in [0, 1), got {beta}")
    elif beta != _default(TrainSpec, "bpp_beta") and not any(t.bpp_weight > 0 for t in spec.tasks):
        report.fail("train.bpp_beta", f"{_shown(beta)} is used by SMART's Bregman proximal point "
                    "term only (no task sets bpp_weight > 0): set tasks.<name>.bpp_weight, or "
                    "remove it")


def check_distill(spec: Spec, report: Report) -> None:
    """The distill section: its numbers, teachers that exist and cover tasks of the spec, task
    types that can be distilled, and per-task settings only on distilled tasks."""
    from mtdnn.distill import coverage

    d = spec.distill
    if d is not None:
        if not 0 <= d.alpha <= 1:
            report.fail("distill.alpha", f"must be in [0, 1] (1: the gold labels only), got "
                                         f"{d.alpha}")
        if not d.temperature > 0:
            report.fail("distill.temperature", f"must be > 0, got {d.temperature}")
        for problem in coverage(spec)[1]:
            report.fail(*problem)
    covered = coverage(spec)[0] if d is not None else {}
    for task in spec.tasks:
        for name in ("distill_alpha", "distill_temperature"):
            value = getattr(task, name)
            if value is None:
                continue
            key = f"tasks.{task.name}.{name}"
            if task.name not in covered:
                report.fail(key, f"{_shown(value)} is used by distillation only (no teacher of "
                                 "the distill section covers this task): remove it, or add a "
                                 "teacher")
            elif name == "distill_alpha" and not 0 <= value <= 1:
                report.fail(key, f"must be in [0, 1], got {value}")
            elif name == "distill_temperature" and not value > 0:
                report.fail(key, f"must be > 0, got {value}")


def check_main_task(spec: Spec, report: Report) -> None:
    t = spec.train
    if t.sampler != "main_ratio":
        return
    names = [task.name for task in spec.tasks]
    if t.main_task is None:
        report.fail("train.main_task", "sampler=main_ratio needs the main task: set "
                    f"train.main_task to one of {', '.join(names)}")
    elif t.main_task not in names:
        report.fail("train.main_task", unknown_name_message("task", t.main_task, names))


def check_soft_sharing_groups(spec: Spec, report: Report) -> None:
    if spec.train.sharing != "soft":
        return
    groups = {task.encoder_group or task.name for task in spec.tasks}
    if len(groups) < 2:
        report.fail("train.sharing", f"soft sharing needs at least two encoder groups, got "
                    f"{sorted(groups)}: give tasks different encoder_group values (or none)")


def check_soft_sharing_without_stages(spec: Spec, report: Report) -> None:
    if spec.train.sharing == "soft" and spec.stages:
        report.fail("train.sharing", "soft sharing does not compose with stages (a stage's new "
                    "task would start an encoder copy of its own from scratch while the earlier "
                    "ones carry over): use sharing: hard with stages")


def check_stages(spec: Spec, report: Report) -> None:
    if not spec.stages:
        return
    names = [task.name for task in spec.tasks]
    seen: dict[str, int] = {}
    for i, stage in enumerate(spec.stages, 1):
        key = f"stages[{i - 1}]"
        if not stage.tasks:
            report.fail(f"{key}.tasks", "a stage adds at least one task")
        for name in stage.tasks:
            if name not in names:
                report.fail(f"{key}.tasks", unknown_name_message("task", name, names))
            elif name in seen:
                report.fail(f"{key}.tasks", f"task '{name}' is already added by stage "
                            f"{seen[name]} (later stages keep training it)")
            else:
                seen[name] = i
        for setting in ("epochs", "max_steps", "learning_rate"):
            value = getattr(stage, setting)
            if value is not None and value <= 0:
                report.fail(f"{key}.{setting}", f"must be > 0 or null, got {value}")
    missing = [n for n in names if n not in seen]
    if missing:
        report.fail("stages", f"tasks {missing} are in no stage: add them to a stage, or leave "
                    "them out with use_tasks")


def check_files(spec: Spec, report: Report) -> None:
    """data_dir exists, and so does every file a task reads (paths already resolved)."""
    if spec.data_dir is not None and not Path(spec.data_dir).is_dir():
        what = f"{spec.data_dir} is a file, not a directory" if Path(spec.data_dir).exists() \
            else f"directory not found: {spec.data_dir}"
        report.fail("data_dir", f"{what} (set it to the folder that holds the task files, or "
                    "leave it empty to read from the Hub)")
        return
    for task in spec.tasks:
        if not spec.uses_files(task):
            continue
        for split, f in task.files.items():
            key = f"tasks.{task.name}.files.{split}"
            if Path(f.path).is_dir():
                report.fail(key, f"{f.path} is a directory, not a data file (give the path of "
                            "the file in it, e.g. RTE/train.tsv)")
            elif not Path(f.path).is_file():
                report.fail(key, f"file not found: {f.path} (fix the path, or set data_dir to "
                            "the folder it is relative to)")


def check_output_dir(spec: Spec, report: Report) -> None:
    """output_dir, or the nearest part of it that exists, is a directory: a file there would
    only fail when the run first writes, after the data is read and the model is loaded."""
    path = Path(spec.output_dir).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    if path.exists() and not path.is_dir():
        where = "" if path == Path(spec.output_dir).absolute() else f" (in {spec.output_dir})"
        report.fail("output_dir", f"{path} is a file{where}, not a folder: give a new or "
                    "existing folder for the run's output, e.g. runs/my-run")


CHECKS: tuple[Callable[[Spec, Report], None], ...] = (
    check_train_ranges, check_length, check_report_to,
    check_method_requirements, check_method_task_limits,
    check_unused_train_settings, check_unused_task_settings,  # after the ranges: one problem a key
    check_bpp_beta, check_distill, check_main_task, check_soft_sharing_groups,
    check_soft_sharing_without_stages,
    check_stages, check_files, check_output_dir,
)
