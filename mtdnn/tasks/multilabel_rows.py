"""The rows of multilabel classification (`mtdnn.tasks.multilabel`): the typed `LabelSets`, a
row's raw labels -> a multi-hot list (`label_set`), and the file and Hub readers of a split's
texts, ids and raw label sets (`read_file`, `read_hub`), with .tsv files read with CSV quoting.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mtdnn.data import Rows

if TYPE_CHECKING:
    from mtdnn.spec import Spec, TaskSpec


@dataclass(frozen=True)
class LabelSets(Rows):
    """Rows whose `labels` are multi-hot lists (one 0/1 per label of `names`), with how they are
    decided: per-label `thresholds` when fixed (tuned on dev, kept in the checkpoint), else tuned
    on these rows (`tune`, dev only), else `threshold` for every label."""

    names: tuple[str, ...] = ()
    threshold: float = 0.5
    tune: bool = False
    thresholds: tuple[float, ...] | None = None


# --------------------------------------------------------------------------------------------------
# Reading label sets


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdecimal()


def label_set(task: TaskSpec, value: Any, index: dict[str, int]) -> tuple[Any, str | None]:
    """A row's raw labels -> (a multi-hot list, None) or (None, the problem)."""
    from mtdnn.records import MISSING, show, typed

    if value is None or value is MISSING or (isinstance(value, str) and not value.strip()):
        return None, ("empty label set (every row needs its labels: fill them in or drop the row; "
                      "a row with no label is written as [] in JSON lines)")
    if isinstance(value, str):
        items: list[Any] = [part.strip() for part in value.split(task.label_separator)]
    elif isinstance(value, list):
        items = value
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    else:
        return None, (f"labels {typed(value)} are not a list or text (write a JSON list, e.g. "
                      f'["{task.labels[0]}"], or names/positions joined by '
                      f"{task.label_separator!r})")
    positions = not any(_is_number(n) for n in task.labels)
    hot = [0] * len(task.labels)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int):
            return None, (f"label {typed(item)} in {show(value)} is not a name or position (write "
                          "a label name or its 0-based position in the list)")
        text = str(item)
        if text in index:
            i = index[text]
        elif positions and _is_number(text) and int(text) < len(task.labels):
            i = int(text)
        else:
            known = f"tasks.{task.name}.labels" + (
                f" or a position 0..{len(task.labels) - 1} in it" if positions else
                " (positions are not read: some label names are numbers)")
            what = "an empty label (two separators in a row, or one at an end?)" if text == "" \
                else f"label {show(item)}"
            return None, (f"{what} in {show(value)} is not one of {known}: fix the row, or add "
                          "the label to the list")
        if hot[i]:
            return None, f"label {show(task.labels[i])} is given twice in {show(value)}"
        hot[i] = 1
    return hot, None


def _quoted_tsv(where: str, header: bool) -> tuple[list[str] | None, Iterator[tuple[int, Any]]]:
    """A .tsv file with CSV quoting (pandas' default, GoEmotions): the lines as the TSV reader
    splits them (so that blank lines, encoding errors and line numbers are the shared reader's),
    each re-read with CSV quoting."""
    from mtdnn.errors import DataError
    from mtdnn.records import read_records

    def unquote(fields: list[str], n: int) -> list[str]:
        line = "\t".join(fields)
        if '"' not in line:
            return fields
        try:
            return next(csv.reader([line], delimiter="\t", strict=True))
        except csv.Error as e:
            what = "a quoted field is not closed on its line" if str(e) == "unexpected " \
                "end of data" else "text after the closing quote of a field" \
                if "expected after" in str(e) else f"not valid CSV ({e})"
            raise DataError(where, [f"line {n}: {what} (a .tsv file read as csv: quote the whole "
                                    'field and double the quotes inside it (""); a field cannot '
                                    "span lines)"]) from None

    head, records = read_records(where, "tsv", header)
    return (unquote(head, 1) if head is not None else None), \
        ((n, unquote(rec, n)) for n, rec in records)


# A split as read: (where, text columns, ids, raw labels or None, "line N"/"row N" of each row,
# problems so far)
_Split = tuple[str, list[list[str]], list[str], list[Any] | None, list[str], list[str]]


def read_file(task: TaskSpec, split: str) -> _Split:
    from mtdnn.data import scan
    from mtdnn.errors import DataError
    from mtdnn.records import MISSING, column_getter, format_of, read_records

    source = task.files[split]
    where, key = source.path, f"tasks.{task.name}.files.{split}"
    fmt = format_of(where, source.format, "set format: tsv, csv or jsonl")
    if fmt not in ("tsv", "csv", "jsonl"):  # .conll by its extension
        raise DataError(where, [f"{fmt!r} files hold no label sets: set format: tsv, csv or "
                                "jsonl"])
    header, records = _quoted_tsv(where, source.header) \
        if fmt == "csv" and where.lower().endswith(".tsv") \
        else read_records(where, fmt, source.header)

    def getter(col: Any, what: str) -> Any:
        return column_getter(col, header, fmt, where, f"{key}.{what}")

    label_col = source.label if source.label is not None else task.label
    id_col = source.id if source.id is not None else task.id
    get_label = None
    if label_col is not None:
        try:
            get_label = getter(label_col, "label")
        except DataError:
            if split != "test":  # test files may come without labels
                raise
    cols, raw, ids, lines, problems = scan(
        where, fmt, header, records, {c: getter(c, "text") for c in source.text or task.text},
        id_col, getter(id_col, "id") if id_col is not None else None, get_label,
        f"fix the row, or set {key}.text",
        f"an empty {split} split: fill the file, or remove {key} from the spec")
    if get_label is None or (split == "test" and all(v is None or v is MISSING
                                                     for v in raw)):
        raw = None
    return where, cols, ids, raw, [f"line {n}" for n in lines], problems


def read_hub(spec: Spec, task: TaskSpec, split: str) -> _Split:

    from mtdnn.data import load_hub_split, read_rows
    from mtdnn.errors import DataError

    hub = task.hub
    assert hub is not None
    # Texts and ids as for every type (without labels, which the shared reader takes one
    # value at a time, and without the row limit, applied once the labels are read).
    bare = dataclasses.replace(task, label=None, hub=dataclasses.replace(hub, label=None),
                               max_train_examples=None, max_eval_examples=None)
    rows = read_rows(spec, bare, split)
    cols = [rows.text_a] + ([rows.text_b] if rows.text_b is not None else [])
    label_col = hub.label if hub.label is not None else task.label
    ds = load_hub_split(hub, split)  # cached by the read above
    if label_col is None or label_col not in ds.column_names:
        if label_col is None or split == "test":
            return rows.where, cols, rows.ids, None, [], []
        raise DataError(rows.where, [f"tasks.{task.name}.hub: no label column "
                                     f"{label_col!r} in split {hub.splits[split]!r}; it has "
                                     f"{ds.column_names} (set tasks.{task.name}.hub.label)"])
    raw = list(ds[label_col])
    feature = ds.features[label_col]
    inner = getattr(feature, "feature", feature)  # a list of ClassLabels (go_emotions)
    if hasattr(inner, "int2str"):
        # A ClassLabel's name when the spec lists it, as the shared reader does; else its id.
        names = {i: n for i, n in enumerate(inner.names) if n in task.labels}

        def name(v: Any) -> Any:
            return names.get(v, v) if isinstance(v, int) else v

        raw = [[name(v) for v in r] if isinstance(r, list) else name(r) for r in raw]
    if split == "test" and all(r in (-1, [-1]) for r in raw):  # the Hub's "no label"
        raw = None
    return rows.where, cols, rows.ids, raw, [f"row {i}" for i in range(len(rows))], []
