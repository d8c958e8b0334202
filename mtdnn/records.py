"""Reading the records of local data files and checking their values, for `mtdnn.data`.

A file becomes (header, records): lists of fields for TSV and CSV, dicts for JSON lines, each with
its line number. TSV is read with quoting turned off (GLUE's files contain stray quotes that default
CSV quoting silently merges into neighbouring fields), CSV with strict quoting, and every file with
`utf-8-sig`, which drops the BOM that starts MRPC's files. No value is turned into None: the text
"NA" stays "NA". Anything a file gets wrong (not UTF-8, a NUL byte, an unclosed quote, a bad JSON
line, a missing column, a label outside the list or of the wrong JSON type) is a `DataError` naming
the file, the line, the value and the fix.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mtdnn.errors import DataError
from mtdnn.spec import Column, TaskSpec

__all__ = ["MAX_LISTED", "MISSING", "column_getter", "convert_labels", "fail", "format_of",
           "read_records", "text_problem"]

MAX_LISTED = 20  # row problems listed per file before "and N more"
_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".conll": "conll"}
# Whole documents fit in a field: csv's default limit (131072 chars) guards memory, not correctness.
# 2**31 - 1 is the largest limit every platform's C long takes.
_FIELD_LIMIT = 2**31 - 1
MISSING = object()  # a column a row does not have (short row, absent JSON key), unlike null or ""
_JSON_KINDS = {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
               dict: "object", type(None): "null"}


# --------------------------------------------------------------------------------------------------
# Reading raw records


def format_of(path: str, fmt: str, fix: str) -> str:
    """The format of a file that exists (a missing path or a directory is a DataError)."""
    if Path(path).is_dir():
        raise DataError(path, ["is a directory, not a data file (give the path of the file in it, "
                               "e.g. RTE/train.tsv)"])
    if not Path(path).exists():
        raise DataError(path, ["file not found (check the path)"])
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise DataError(path, [f"cannot tell the format from the extension '{suffix}': {fix}"])
    return _FORMATS[suffix]


def _open(path: str):
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as e:
        raise DataError(path, [f"cannot be read: {e.strerror or e}"]) from None


def _lines(f, path: str) -> Iterator[str]:
    """The lines of an open file; a NUL byte or a byte that is not UTF-8 is a DataError."""
    try:
        for n, line in enumerate(f, 1):
            if "\x00" in line:
                raise DataError(path, [f"line {n}: a NUL byte (\\x00): the file is binary or "
                                       "UTF-16, not UTF-8 text (save it as UTF-8 text)"])
            yield line
    except UnicodeDecodeError:
        # Text files are decoded in blocks, so the error does not know its line: find it.
        raise DataError(path, [_utf8_problem(path)]) from None


def _utf8_problem(path: str) -> str:
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if n == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
                    return "line 1: the file is UTF-16, not UTF-8 (save it as UTF-8)"
                near = raw[max(0, e.start - 20):e.start + 20].decode("latin-1").strip()
                return (f"line {n}: byte 0x{raw[e.start]:02x} is not UTF-8 (near {near!r}, read "
                        "as Latin-1; the file is probably Latin-1 or Windows-1252): save the file "
                        "as UTF-8")
    return "not UTF-8 text (save the file as UTF-8)"


def _next_row(reader: Any, path: str, start: int) -> list[str] | None:
    try:
        return next(reader, None)
    except csv.Error as e:
        if str(e) == "unexpected end of data":
            problem = ("a quoted field opens here and is not closed before the end of the file "
                       '(close the quote; a quote inside a quoted field is written "")')
        elif "expected after" in str(e):
            problem = (f"text after the closing quote of a field ({e}): quote the whole field "
                       'and double the quotes inside it ("")')
        else:
            problem = f"not valid CSV ({e})"
        raise DataError(path, [f"line {start}: {problem}"]) from None


def read_records(path: str, fmt: str, header: bool
                 ) -> tuple[list[str] | None, Iterator[tuple[int, Any]]]:
    """Returns (header or None, iterator of (line number, record)); a record is a list of fields
    (tsv/csv) or a dict (jsonl). Blank lines are skipped but counted."""
    f = _open(path)
    lines = _lines(f, path)
    if fmt == "jsonl":
        def jsonl() -> Iterator[tuple[int, Any]]:
            with f:
                for n, line in enumerate(lines, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(path, [f"line {n}: not valid JSON ({e.msg}): write one "
                                               "JSON object per line"]) from None
                    if not isinstance(record, dict):
                        raise DataError(path, [
                            f"line {n}: expected a JSON object ({{\"column\": value, ...}}), "
                            f"got {type(record).__name__}"])
                    yield n, record
        return None, jsonl()
    if csv.field_size_limit() < _FIELD_LIMIT:  # process-wide, so only ever raised
        csv.field_size_limit(_FIELD_LIMIT)
    if fmt == "tsv":
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:  # strict: a stray or unclosed quote is an error, not fields merged in silence
        reader = csv.reader(lines, strict=True)
    try:
        head = _next_row(reader, path, 1) if header else None
    except DataError:
        f.close()
        raise
    if header and head is None:
        f.close()
        raise DataError(path, ["the file is empty (it needs a header row, then one row per "
                               "example)"])

    def rows() -> Iterator[tuple[int, Any]]:
        with f:
            # A quoted CSV field may span lines: a record is numbered by its first line.
            start = reader.line_num + 1
            while (row := _next_row(reader, path, start)) is not None:
                if row:
                    yield start, row
                start = reader.line_num + 1
    return head, rows()


def column_getter(col: Column, header: list[str] | None, fmt: str, where: str, key: str):
    """Returns a function record -> value (`MISSING` where the record lacks the column)."""
    if fmt == "jsonl":
        if isinstance(col, int):
            raise DataError(where, [f"{key}: JSON lines are addressed by key, not position {col}"])
        return lambda rec: rec.get(col, MISSING)
    if isinstance(col, int):
        i = col
    elif header is None:
        raise DataError(where, [f"{key}: column {col!r} given by name, but the file is read "
                                "without a header (header: false): give its 0-based position "
                                "instead"])
    elif col not in header:
        raise DataError(where, [f"{key}: no column {col!r} in the header "
                                f"{header} (fix the column name, or set header: false and use "
                                "positions)"])
    else:
        i = header.index(col)
    return lambda rec: rec[i] if i < len(rec) else MISSING


# --------------------------------------------------------------------------------------------------
# Checking values


def _kind(value: Any) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)


def show(value: Any) -> str:
    """A value as the file writes it: quoted text, or JSON."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def typed(value: Any) -> str:
    """A value with its JSON type, e.g. `true (a JSON boolean)`."""
    return f"{show(value)} (a JSON {_kind(value)})"


def text_problem(name: Column, value: Any) -> str | None:
    """Why a value (from JSON or a Hub column) is not text; numbers are taken as their text."""
    if isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return None
    what = "null" if value is None else f"{show(value)}, a JSON {_kind(value)}"
    return f"text column {name!r} is {what}, not text (write the text as a string)"


def _label(task: TaskSpec, index: dict[str, int], value: Any, split: str) -> tuple[Any, str | None]:
    """A raw label -> its value (what the task's type makes of it), or (None, the problem)."""
    from mtdnn.tasks import task_type

    if value is None or value is MISSING or value == "":
        return None, f"empty label (every {split} row needs one): fill it in or drop the row"
    if isinstance(value, list | dict):
        return None, f"label {typed(value)} is not one value (give each row a single label)"
    return task_type(task.type).convert_label(task, value, index)


def convert_labels(task: TaskSpec, raw: list[Any], where: list[Any], problems: list[str],
                   split: str) -> list[Any]:
    """Raw label values -> class ids / floats / relevance; problems name the row and the fix."""
    out: list[Any] = []
    index = {name: i for i, name in enumerate(task.labels)}
    for value, at in zip(raw, where):
        label, problem = _label(task, index, value, split)
        if problem:
            problems.append(f"{_at(at)}: {problem}")
        out.append(label)
    return out


def _at(where: Any) -> str:
    return f"line {where}" if isinstance(where, int) else str(where)


def fail(where: str, problems: list[str]) -> None:
    if problems:
        more = [f"(and {len(problems) - MAX_LISTED} more)"] if len(problems) > MAX_LISTED else []
        raise DataError(where, problems[:MAX_LISTED] + more)
