"""Reading spec files: strict YAML, `include:`, `key=value` overrides, `use_tasks:`, and the path
from plain data to a checked `Spec` (`spec_from_dict`); `save_spec` writes one back."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from mtdnn.errors import SpecError
from mtdnn.spec.checks import CHECKS, TASK_CHECKS, check_files
from mtdnn.spec.convert import BAD, _Converter, expand_env, unknown_name_message
from mtdnn.spec.schema import Spec, TaskSpec


def _resolve_paths(spec: Spec, base_dir: Path) -> Spec:
    """Makes data paths absolute: data_dir against the working directory (as a shell would), task
    files against data_dir, or against the spec file's folder when the run has no data_dir."""
    data_dir = str(Path(spec.data_dir).absolute()) if spec.data_dir else None
    spec = dataclasses.replace(spec, data_dir=data_dir)
    tasks = []
    for task in spec.tasks:
        if spec.uses_files(task):
            root = Path(data_dir) if data_dir else base_dir.absolute()
            files = {s: dataclasses.replace(f, path=str(root / f.path)) for s, f in
                     task.files.items()}
            task = dataclasses.replace(task, files=files)
        tasks.append(task)
    return dataclasses.replace(spec, tasks=tuple(tasks))


def set_override(data: dict, assignment: str) -> None:
    """Applies `a.b.c=value` (value parsed as YAML) to nested dicts, creating levels as needed."""
    if "=" not in assignment:
        raise SpecError("command line", [f"override {assignment!r} is not key=value, e.g. "
                                         "train.learning_rate=3e-5"])
    key, raw = assignment.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            if part in node and node[part] is not None:
                raise SpecError("command line", [f"override {assignment!r}: '{part}' is not a "
                                                 "mapping"])
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def spec_from_dict(data: Any, source: str = "<spec>", base_dir: str | Path = ".") -> Spec:
    """Builds a `Spec` from plain data (parsed YAML) and runs every check on it.

    Args:
        data: the spec as a mapping (`Spec.to_dict()` gives one back).
        source: where it came from, for messages.
        base_dir: the folder task files are relative to when the spec has no data_dir.

    Raises:
        SpecError: listing every problem (key, value, fix).
    """
    c = _Converter(source)
    if not isinstance(data, dict):
        raise SpecError(source, [f"expected a mapping at the top level, got {type(data).__name__}"])
    data = expand_env(dict(data))
    raw_tasks = data.pop("tasks", None)
    tasks: list[TaskSpec] = []
    if not isinstance(raw_tasks, dict):
        c.fail("tasks", "expected a mapping of task name -> task settings, e.g. "
               "tasks: {rte: {type: classification, ...}}")
    elif not raw_tasks:  # checked here: tasks that fail to convert are reported, not "no tasks"
        c.fail("tasks", "no tasks: add at least one under `tasks:`")
    else:
        for name, raw in raw_tasks.items():
            if not re.fullmatch(r"[A-Za-z0-9_\-]+", str(name)):
                c.fail(f"tasks.{name}", "task names use letters, digits, '_' and '-' only")
                continue
            if isinstance(raw, dict) and isinstance(raw.get("files"), dict):
                raw = dict(raw, files={s: {"path": f} if isinstance(f, str) else f
                                       for s, f in raw["files"].items()})
            task = c.dataclass(TaskSpec, raw, f"tasks.{name}", extra={"name": str(name)})
            if task is not BAD:
                for check in TASK_CHECKS:
                    check(task, c)
                tasks.append(task)
    spec = c.dataclass(Spec, data, "", extra={"tasks": tuple(tasks)})
    if spec is not BAD:
        spec = _resolve_paths(dataclasses.replace(spec, source=source), Path(base_dir))
        for check in CHECKS:
            check(spec, c)
    elif tasks and isinstance(data.get("data_dir"), (str, type(None))):
        # Other keys are wrong, but the task files can be checked all the same: a typo elsewhere
        # must not hide a missing file until the next run.
        stand_in = Spec(encoder="", tasks=tuple(tasks), data_dir=data.get("data_dir"))
        check_files(_resolve_paths(stand_in, Path(base_dir)), c)
    if c.problems:
        raise SpecError(source, c.problems)
    return spec


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _DuplicateKey(yaml.YAMLError):
    """A key given twice in one mapping: reported as a spec problem, not as invalid YAML."""


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, except that a key given twice in one mapping is an error: PyYAML
    keeps the last value without a word, so a second `train:` block would silently replace the
    first one whole. Keys merged in with `<<:` may still be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node,
                                                                           yaml.ScalarNode):
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise _DuplicateKey(f"'{key}' appears twice in one mapping (lines {lines[key]} "
                                    f"and {line}): merge the two into one")
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, seen: tuple[Path, ...]) -> dict:
    """Reads a spec file; `include: [other.yaml, ...]` (relative to this file) are read first and
    this file's keys are merged over them, mapping by mapping."""
    if not path.is_file():
        where = f" (included from {seen[-1]})" if seen else ""
        raise SpecError(str(path), [f"spec file not found{where} (give the path of a YAML task "
                                    "spec, e.g. task_specs/demo.yaml)"])
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise SpecError(str(path), [f"include loop: {chain}"])
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506
    except _DuplicateKey as e:
        raise SpecError(str(path), [str(e)]) from None
    except yaml.YAMLError as e:
        raise SpecError(str(path), [f"not valid YAML: {e}"]) from None
    if not isinstance(data, dict):
        raise SpecError(str(path), ["expected a mapping at the top level"])
    includes = data.pop("include", None) or []
    merged: dict = {}
    for name in [includes] if isinstance(includes, str) else includes:
        merged = _merge(merged, _read_yaml(path.parent / str(name), (*seen, path.resolve())))
    return _merge(merged, data)


def _use_tasks(data: dict, tasks: typing.Sequence[str] | None, source: str) -> None:
    """Keeps the selected tasks (the argument, else the spec's `use_tasks`), in that order."""
    use = data.pop("use_tasks", None)
    if tasks is None and use is not None:
        if not isinstance(use, list):
            raise SpecError(source, [f"use_tasks: expected a list of task names, got {use!r}"])
        tasks = [str(t) for t in use]
    if tasks is None or not isinstance(data.get("tasks"), dict):
        return
    missing = [t for t in tasks if t not in data["tasks"]]
    if missing:
        raise SpecError(source, [unknown_name_message("task", t, data["tasks"]) for t in missing])
    left_out = [t for t in data["tasks"] if t not in tasks]
    data["tasks"] = {t: data["tasks"][t] for t in tasks}
    staged = [(i, t) for i, stage in enumerate(data.get("stages") or [])
              if isinstance(stage, dict) for t in stage.get("tasks") or [] if t in left_out]
    if staged:
        raise SpecError(source, [
            f"stages[{i}].tasks: task '{t}' is left out by use_tasks/--tasks ({list(tasks)}): "
            "select it too, or remove it from the stage" for i, t in staged])


def load_spec(path: str | Path, overrides: typing.Sequence[str] = (),
              tasks: typing.Sequence[str] | None = None) -> Spec:
    """Reads a YAML spec file, applies `key=value` overrides, and checks it.

    Args:
        path: the YAML file.
        overrides: e.g. ["train.learning_rate=3e-5", "tasks.rte.loss_weight=2"].
        tasks: keep only these tasks (in this order); None keeps those named by the spec's
            `use_tasks` list, or all.

    Returns:
        The frozen `Spec`.

    Raises:
        SpecError: listing every problem (file, key, value, fix).
    """
    path = Path(path)
    data = _read_yaml(path, ())
    for assignment in overrides:
        set_override(data, assignment)
    _use_tasks(data, tasks, str(path))
    return spec_from_dict(data, source=str(path), base_dir=path.parent)


def save_spec(spec: Spec, path: str | Path) -> None:
    """Writes a spec as YAML that `load_spec` reads back to an equal spec."""
    Path(path).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False), encoding="utf-8")
