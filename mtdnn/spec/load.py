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
from mtdnn.spec.checks import CHECKS, check_files
from mtdnn.spec.convert import BAD, _Converter, expand_env, unknown_name_message
from mtdnn.spec.schema import Spec, TaskSpec
from mtdnn.spec.task_checks import TASK_CHECKS


def _resolve_paths(spec: Spec, base_dir: Path) -> Spec:
    """Makes data paths absolute: data_dir against the working directory (as a shell would), task
    files against data_dir, or against the spec file's folder when the run has no data_dir."""
    data_dir = str(Path(spec.data_dir).absolute()) if spec.data_dir else None
    spec = dataclasses.replace(spec, data_dir=data_dir)
    if spec.distill is not None:  # teacher paths, as a shell would read them
        teachers = tuple(dataclasses.replace(t, path=str(Path(t.path).absolute()))
                         for t in spec.distill.teachers)
        spec = dataclasses.replace(spec, distill=dataclasses.replace(spec.distill,
                                                                     teachers=teachers))
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
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            if part in node and node[part] is not None:
                path = ".".join(parts[:i + 1])
                raise SpecError("command line", [
                    f"override {assignment!r}: '{path}' is not a mapping (it is "
                    f"{node[part]!r}): set it whole with {path}=VALUE, or fix the key"])
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
                # a split set to null is no split: it removes one an included spec gives
                raw = dict(raw, files={s: {"path": f} if isinstance(f, str) else f
                                       for s, f in raw["files"].items() if f is not None})
            task = c.dataclass(TaskSpec, raw, f"tasks.{name}", extra={"name": str(name)})
            if task is not BAD:
                for check in TASK_CHECKS:
                    check(task, c)
                tasks.append(task)
    distill = data.get("distill")
    if isinstance(distill, dict) and isinstance(distill.get("teachers"), list):
        # a teacher given as a plain path: an mtdnn checkpoint
        data["distill"] = dict(distill, teachers=[{"path": t} if isinstance(t, str) else t
                                                  for t in distill["teachers"]])
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


def _yaml_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list (`- ` items)"
    return f"{type(value).__name__} {value!r}"[:80]


def _yaml_problem(e: yaml.YAMLError, text: str) -> str:
    """A YAML syntax error as one line: where, what, and the usual fix."""
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow
        line = text[:e.position].count("\n") + 1
        return (f"line {line}: character {chr(e.character)!r} is not allowed in YAML (a control "
                "character: the file is binary or damaged; save it as plain UTF-8 text)")
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e)
    context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    started = f" ({context} that starts at line {context_mark.line + 1})" \
        if context and context_mark is not None else ""
    return (f"not valid YAML{where}: {problem}{started} (fix the syntax there: quote a value that "
            "holds ': ' or starts with [, {, *, & or !)")


def _read_yaml(path: Path, seen: tuple[Path, ...]) -> dict:
    """Reads a spec file; `include: [other.yaml, ...]` (relative to this file) are read first and
    this file's keys are merged over them, mapping by mapping."""
    where = f" (included from {seen[-1]})" if seen else ""
    if path.is_dir():
        raise SpecError(str(path), [f"is a directory, not a spec file{where} (give the path of a "
                                    "YAML task spec, e.g. task_specs/demo.yaml)"])
    if not path.is_file():
        raise SpecError(str(path), [f"spec file not found{where} (give the path of a YAML task "
                                    "spec, e.g. task_specs/demo.yaml)"])
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise SpecError(str(path), [f"include loop: {chain} (remove one of these includes)"])
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506
    except OSError as e:
        raise SpecError(str(path), [f"cannot be read: {e.strerror or e} (check the path and its "
                                    "permissions)"]) from None
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise SpecError(str(path), [f"line {line}: byte 0x{raw[e.start]:02x} is not UTF-8 (the "
                                    "file is probably Latin-1 or Windows-1252): save it as "
                                    "UTF-8"]) from None
    except _DuplicateKey as e:
        raise SpecError(str(path), [str(e)]) from None
    except yaml.YAMLError as e:
        raise SpecError(str(path), [_yaml_problem(e, text)]) from None
    if not isinstance(data, dict):
        got = "the file is empty" if data is None else f"got {_yaml_kind(data)}"
        raise SpecError(str(path), [f"expected a mapping at the top level (keys such as "
                                    f"encoder:, tasks:), {got}"])
    includes = data.pop("include", None) or []
    includes = [includes] if isinstance(includes, str) else includes
    if not isinstance(includes, list) or not all(isinstance(n, str) for n in includes):
        raise SpecError(str(path), [f"include: expected a spec file or a list of them, got "
                                    f"{includes!r} (e.g. include: [glue.yaml, wikiqa.yaml])"])
    merged: dict = {}
    for name in includes:
        merged = _merge(merged, _read_yaml(path.parent / name, (*seen, path.resolve())))
    return _merge(merged, data)


def _use_tasks(data: dict, tasks: typing.Sequence[str] | None, source: str) -> None:
    """Keeps the selected tasks (the argument, else the spec's `use_tasks`), in that order."""
    use = data.pop("use_tasks", None)
    key = "--tasks"  # the CLI's name for the argument
    if tasks is None and use is not None:
        if not isinstance(use, list):
            raise SpecError(source, [f"use_tasks: expected a list of task names, got {use!r}"])
        tasks, key = [str(t) for t in use], "use_tasks"
    if tasks is None or not isinstance(data.get("tasks"), dict):
        return
    missing = [t for t in tasks if t not in data["tasks"]]
    if missing:
        raise SpecError(source, [f"{key}: {unknown_name_message('task', t, data['tasks'])}"
                                 for t in missing])
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
