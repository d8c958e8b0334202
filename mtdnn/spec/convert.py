"""Plain data (parsed YAML) into typed dataclasses, collecting every problem on the way.

`_Converter` walks a value against a type hint (dataclasses, `X | None`, `Literal`, tuples, dicts,
scalars) and records one line per problem ("key: what is wrong, the value, the fix") instead of
stopping at the first. It knows nothing of the spec's own classes: `mtdnn.spec.load` drives it, and
the checks of `mtdnn.spec.checks` report through its `fail`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")

BAD = object()  # what `convert` returns after recording a problem


def unknown_name_message(kind: str, name: str, known: typing.Iterable[str]) -> str:
    """`unknown task 'rtee'; did you mean 'rte'? (known: cola, rte, stsb)`."""
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'{hint} (known: {', '.join(known) or 'none'})"


def expand_env(value: Any) -> Any:
    """`${VAR}` and `${VAR:-default}` in strings; a value that expands to "" becomes None."""
    if isinstance(value, str) and "${" in value:
        # As in a shell, `:-` falls back to the default when VAR is unset *or* empty.
        expanded = _ENV.sub(lambda m: os.environ.get(m.group(1)) or m.group(3) or "", value)
        return expanded or None
    if isinstance(value, dict):
        return {k: expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (tuple, list):
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, str(tp)
    )


class _Converter:
    """Converts values and collects problems; also the report the spec's checks write to."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}" if key else message)

    def has_problem(self, key: str) -> bool:
        """Whether a problem of this exact key is reported already (one problem per key: a value
        out of range is reported as such, not also as unused)."""
        return any(p.startswith(f"{key}: ") for p in self.problems)

    def convert(self, value: Any, tp: Any, key: str) -> Any:
        """Returns the converted value, or `BAD` after recording a problem."""
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            args = get_args(tp)
            if value is None and type(None) in args:
                return None
            for arg in args:
                if arg is type(None):
                    continue
                sub = _Converter(self.source)
                out = sub.convert(value, arg, key)
                if not sub.problems:
                    return out
            non_null = [a for a in args if a is not type(None)]
            if len(non_null) == 1:  # Optional[X]: report X's own, more precise problem
                return self.convert(value, non_null[0], key)
            self.fail(key, f"expected {_type_name(tp)}, got {value!r}")
            return BAD
        if origin is Literal:
            choices = get_args(tp)
            if value in choices:
                return value
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            self.fail(key, f"{value!r} is not valid{hint} (choose one of: "
                      f"{', '.join(map(str, choices))})")
            return BAD
        if origin in (tuple, list):
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                value = [value]  # a lone value where a list is expected: `text: sentence`
            if not isinstance(value, list):
                self.fail(key, f"expected a list, got {value!r}")
                return BAD
            args = get_args(tp)
            if origin is tuple and len(args) == 2 and args[1] is not Ellipsis:  # fixed length
                if len(value) != len(args):
                    self.fail(key, f"expected a list of {len(args)} values, got {value!r}")
                    return BAD
                item_types = args
            else:
                item_types = [args[0]] * len(value)
            items = [self.convert(v, t, f"{key}[{i}]") for i, (v, t) in
                     enumerate(zip(value, item_types))]
            return BAD if any(x is BAD for x in items) else tuple(items)
        if origin is dict:
            if not isinstance(value, dict):
                self.fail(key, f"expected a mapping, got {value!r}")
                return BAD
            _, vt = get_args(tp)
            out = {str(k): self.convert(v, vt, f"{key}.{k}") for k, v in value.items()}
            return BAD if any(v is BAD for v in out.values()) else out
        if dataclasses.is_dataclass(tp):
            return self.dataclass(tp, value, key)
        if tp is bool:
            if isinstance(value, bool):
                return value
        elif tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            # YAML 1.1 (PyYAML) reads `3e-5` (no dot) as a string; it is meant as a number.
            if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
                return float(value)
        elif tp is str:
            if isinstance(value, str):
                return value
        elif tp is Any:
            return value
        hint = " (YAML reads yes/no/on/off as true/false: quote it, e.g. 'yes')" \
            if tp is str and isinstance(value, bool) else ""
        self.fail(key, f"expected {_type_name(tp)}, got {value!r}{hint}")
        return BAD

    def dataclass(self, cls: type, value: Any, key: str, extra: dict | None = None) -> Any:
        """Builds `cls` from a mapping: unknown keys (with the closest known one), missing
        required keys and bad values are all reported. `extra` holds fields given by the
        structure (a task's name is its key under `tasks:`)."""
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {value!r}")
            return BAD
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
        kwargs = dict(extra or {})
        prefix = f"{key}." if key else ""
        for k, v in value.items():
            if k in kwargs:  # given by the structure, e.g. a task's name is its key in `tasks`
                self.fail(f"{prefix}{k}", f"'{k}' is set by the spec's structure, not as a key")
                continue
            if k not in fields:
                self.fail(f"{prefix}{k}", unknown_name_message("key", k, fields))
                continue
            kwargs[k] = self.convert(v, hints[k], f"{prefix}{k}")
        missing = [name for name, f in fields.items() if name not in kwargs and
                   f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        for name in missing:
            self.fail(f"{prefix}{name}", "required key is missing")
        if missing or any(v is BAD for v in kwargs.values()):
            return BAD
        return cls(**kwargs)
