"""Task data: local files or Hub datasets -> checked rows (`Rows`); `mtdnn.features` tokenizes.

Every task split becomes a table with the same columns, whatever its source:
`text_a`, `text_b` (pairs only), `label` (class id, float score, or 0/1 relevance; absent when the
split has no labels, as GLUE test sets), and `id` (the row id used in predictions). Ranking tasks
add `query_id`: the rows of one query are scored together.

Local files are read by `mtdnn.records` (TSV without quoting, strict CSV, JSON lines, `utf-8-sig`;
"NA" stays "NA"). Anything a file gets wrong (not UTF-8, a NUL byte, an unclosed quote, a short row,
a label outside the list, a JSON value of the wrong type, no rows at all) is a `DataError` naming
the file, the line, the value and the fix. `read_texts` reads the inputs of `mtdnn predict` the same
way.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtdnn.errors import DataError
from mtdnn.records import (
    MISSING,
    column_getter,
    convert_labels,
    fail,
    format_of,
    read_records,
    text_problem,
)
from mtdnn.spec import Column, FileSource, HubSource, Spec, TaskSpec

__all__ = ["DataError", "Rows", "available_splits", "check_data", "hub_where", "load_hub_split",
           "read_rows", "read_split", "read_texts", "scan"]

_ID_COLUMNS = ("id", "idx", "index")  # read_texts: the row id, when a file has one of these


@dataclass(frozen=True)
class Rows:
    """One split of one task, as plain columns (before tokenization)."""

    task: str
    split: str
    where: str  # file path or hub dataset, for messages
    text_a: list[str]
    text_b: list[str] | None
    labels: list[Any] | None  # int class ids, float scores, or 0/1 relevance
    ids: list[str]
    query_ids: list[int] | None = None  # ranking: rows with the same id belong to one query

    def __len__(self) -> int:
        return len(self.text_a)


# --------------------------------------------------------------------------------------------------
# Reading task splits


def scan(where: str, fmt: str, header: list[str] | None, records: Iterator[tuple[int, Any]],
          texts: dict[Column, Any], id_col: Column | None, get_id: Any, get_label: Any, fix: str,
          empty: str):
    """The checked rows of a file: (text columns, raw labels, ids, line numbers, problems)."""
    problems: list[str] = []
    cols: list[list[str]] = [[] for _ in texts]
    raw_labels: list[Any] = []
    ids: list[str] = []
    lines: list[int] = []
    for n, rec in records:
        if header is not None and len(rec) != len(header):
            hint = ("a stray tab or newline inside a field? TSV is read without quoting"
                    if fmt == "tsv" else "a comma or newline inside a field that is not quoted?")
            problems.append(f"line {n}: {len(rec)} fields, the header has {len(header)} ({hint})")
            continue
        values = [g(rec) for g in texts.values()]
        if missing := [c for c, v in zip(texts, values) if v is MISSING]:
            has = f"keys {list(rec)}" if fmt == "jsonl" else f"{len(rec)} fields"
            problems.append(f"line {n}: missing text column(s) {missing} (the row has {has}; "
                            f"{fix})")
            continue
        bad = [p for c, v in zip(texts, values) if (p := text_problem(c, v))]
        row_id = get_id(rec) if get_id else len(ids)
        if row_id is MISSING or row_id is None:
            bad.append(f"no id in column {id_col!r} (give every row one)")
        if bad:
            problems += [f"line {n}: {p}" for p in bad]
            continue
        for c, v in zip(cols, values):
            c.append(str(v))
        raw_labels.append(get_label(rec) if get_label else None)
        ids.append(str(row_id))
        lines.append(n)
    if not lines and not problems:
        raise DataError(where, [f"the file has {'a header and ' if header else ''}no rows "
                                f"({empty})"])
    return cols, raw_labels, ids, lines, problems


def _read_file(task: TaskSpec, split: str, source: FileSource) -> tuple[Rows, list[Any]]:
    where = source.path
    fmt = format_of(where, source.format, "set format: tsv, csv or jsonl")
    key = f"tasks.{task.name}.files.{split}"
    header, records = read_records(where, fmt, source.header)
    text_cols = source.text or task.text
    label_col = source.label if source.label is not None else task.label
    id_col = source.id if source.id is not None else task.id
    texts = {c: column_getter(c, header, fmt, where, f"{key}.text") for c in text_cols}
    # Test splits (GLUE's leaderboard files) have no label column: read labels only if present.
    get_label = None
    if label_col is not None:
        try:
            get_label = column_getter(label_col, header, fmt, where, f"{key}.label")
        except DataError:
            if split != "test":
                raise
    get_id = column_getter(id_col, header, fmt, where, f"{key}.id") if id_col is not None \
        else None
    cols, raw_labels, ids, lines, problems = scan(
        where, fmt, header, records, texts, id_col, get_id, get_label,
        f"fix the row, or set {key}.text",
        f"an empty {split} split: fill the file, or remove {key} from the spec")
    # A test file without its label column (headerless, or JSON lines without the key) is
    # unlabelled, not a file of empty labels: decide before converting, which reports empties.
    if get_label and split == "test" and all(v is None or v is MISSING for v in raw_labels):
        get_label = None
    labels = convert_labels(task, raw_labels, lines, problems, split) if get_label else None
    fail(where, problems)
    return _make_rows(task, split, where, cols, labels, ids), raw_labels


def hub_where(hub: HubSource) -> str:
    """A Hub source, as messages name it."""
    return f"hub dataset {hub.path}" + (f" ({hub.name})" if hub.name else "")


def load_hub_split(hub: HubSource, split: str) -> Any:
    """One split of a Hub dataset (`datasets.load_dataset`), for every task type's reader.

    Raises:
        DataError: the split cannot be loaded (offline, a wrong name, a missing split).
    """
    import datasets

    try:
        return datasets.load_dataset(hub.path, hub.name, split=hub.splits[split],
                                     revision=hub.revision)
    except Exception as e:  # the datasets library raises many types for "not reachable/not found"
        raise DataError(hub_where(hub), [
            f"split {hub.splits[split]!r} could not be loaded: {e} (offline? set data_dir to a "
            "local copy, or check the dataset name)"]) from None


def _read_hub(task: TaskSpec, split: str, hub: HubSource) -> tuple[Rows, list[Any]]:
    where = hub_where(hub)
    ds = load_hub_split(hub, split)
    key = f"tasks.{task.name}.hub"
    text_cols = hub.text or task.text
    label_col = hub.label if hub.label is not None else task.label
    id_col = hub.id if hub.id is not None else task.id
    missing = [c for c in (*text_cols, label_col, id_col)
               if c is not None and c not in ds.column_names and
               not (c == label_col and split == "test")]
    if missing:
        raise DataError(where, [f"{key}: no column(s) {missing} in split {hub.splits[split]!r}; it "
                                f"has {ds.column_names} (set {key}.text / label / id)"])
    if len(ds) == 0:
        raise DataError(where, [f"split {hub.splits[split]!r} has no rows"])
    cols = [list(ds[c]) for c in text_cols]
    problems = [f"row {i}: {p}" for c, values in zip(text_cols, cols)
                for i, v in enumerate(values) if (p := text_problem(c, v))]
    fail(where, problems)
    cols = [[str(v) for v in values] for values in cols]
    labels, raw = None, []
    if label_col is not None and label_col in ds.column_names:
        raw = list(ds[label_col])
        feature = ds.features[label_col]
        # Test splits on the Hub carry -1 for "no label".
        if split == "test" and all(v == -1 for v in raw):
            raw = []
        elif hasattr(feature, "int2str"):
            # A ClassLabel's name is used when the spec lists it (RTE: entailment); otherwise its id
            # as text (SST-2's spec lists "0"/"1", the names of the GLUE files).
            names = [feature.int2str(i) for i in range(feature.num_classes)]
            raw = [names[v] if 0 <= v < len(names) and names[v] in task.labels else str(v)
                   for v in raw]
        if raw:
            labels = convert_labels(task, raw, [f"row {i}" for i in range(len(raw))], problems,
                                     split)
            fail(where, problems)
    ids = [str(v) for v in ds[id_col]] if id_col is not None else [str(i) for i in range(len(ds))]
    return _make_rows(task, split, where, cols, labels, ids), raw


def _make_rows(task: TaskSpec, split: str, where: str, cols: list[list[str]],
               labels: list[Any] | None, ids: list[str]) -> Rows:
    from mtdnn.tasks import task_type

    limit = task.max_train_examples if split == "train" else task.max_eval_examples
    cols, labels, ids, query_ids = task_type(task.type).finish_rows(task, split, cols, labels,
                                                                    ids, limit)
    return Rows(task=task.name, split=split, where=where, text_a=cols[0],
                text_b=cols[1] if len(cols) > 1 else None, labels=labels, ids=ids,
                query_ids=query_ids)


def available_splits(spec: Spec, task: TaskSpec) -> list[str]:
    if spec.uses_files(task):
        return [s for s in ("train", "dev", "test") if s in task.files]
    assert task.hub is not None
    return [s for s in ("train", "dev", "test") if s in task.hub.splits]


def _read(spec: Spec, task: TaskSpec, split: str) -> tuple[Rows, list[Any]]:
    if split not in available_splits(spec, task):
        raise DataError(spec.source, [f"tasks.{task.name}: no {split!r} split (it has "
                                      f"{available_splits(spec, task)}): use one of those, or "
                                      f"add tasks.{task.name}.files.{split} to the spec"])
    if spec.uses_files(task):
        return _read_file(task, split, task.files[split])
    assert task.hub is not None
    return _read_hub(task, split, task.hub)


def read_rows(spec: Spec, task: TaskSpec, split: str) -> Rows:
    """Reads and checks every row of one split of a sentence-level task (one record per row).

    Raises:
        DataError: naming the file, the line and value of each bad row, and the fix; also a
            training split the task's type would learn nothing from (a ranking split in which no
            query has both a relevant and an irrelevant candidate).
    """
    from mtdnn.tasks import task_type

    rows, raw = _read(spec, task, split)
    problem = task_type(task.type).training_problem(task, rows, raw)
    if problem:
        raise DataError(rows.where, [problem])
    return rows


def read_split(spec: Spec, task: TaskSpec, split: str) -> Any:
    """Reads and checks every row of one split of a task: the typed examples of its type (`Rows`
    for sentence-level types).

    Raises:
        DataError: naming the file, the line and value of each bad row, and the fix.
    """
    from mtdnn.tasks import task_type

    return task_type(task.type).read(spec, task, split)


def read_texts(path: str | Path, columns: Sequence[str], format: str = "auto"
               ) -> tuple[list[tuple[str, ...]], list[str]]:
    """Reads the texts to predict: TSV or CSV with a header (columns by name), or JSON lines, with
    the reader and checks of training files (TSV without quoting, `utf-8-sig`; JSON numbers become
    text).

    Args:
        path: the file.
        columns: the text columns (JSON keys), in the order the task reads them.
        format: "auto" (from the extension: .tsv, .csv, .jsonl or .json), "tsv", "csv", "jsonl".

    Returns:
        (one tuple of texts per row, the row ids: the file's `id`, `idx` or `index` column when it
        has one (JSON lines: when the first record has one), else the 0-based row number as text).

    Raises:
        DataError: naming the file and each bad line: not found, a directory, empty, no rows, a
            missing column, a short row, a bad JSON line, a text that is not text, not UTF-8.

    Example:
        texts, ids = read_texts("RTE/test.tsv", ["sentence1", "sentence2"])
    """
    where = str(path)
    if format not in ("auto", "tsv", "csv", "jsonl"):
        raise DataError(where, [f"format {format!r} is not one of auto, tsv, csv, jsonl"])
    fmt = format_of(where, format, "name the file .tsv, .csv or .jsonl, or give its format")
    header, records = read_records(where, fmt, header=fmt != "jsonl")
    fix = "rename the columns, or pass --text-columns"
    if header is not None and (missing := [str(c) for c in columns if str(c) not in header]):
        raise DataError(where, [f"no column(s) {missing} in the header {header} ({fix})"])
    if header is None:  # JSON lines: the first record tells whether the rows have ids
        first = next(records, None)
        keys = first[1] if first else {}
        records = itertools.chain([first] if first else [], records)
    else:
        keys = header
    id_col = next((k for k in _ID_COLUMNS if k in keys), None)
    texts = {str(c): column_getter(str(c), header, fmt, where, "columns") for c in columns}
    get_id = column_getter(id_col, header, fmt, where, "id") if id_col else None
    cols, _, ids, _, problems = scan(where, fmt, header, records, texts, id_col, get_id, None,
                                      fix, "nothing to predict")
    fail(where, problems)
    return list(zip(*cols)), ids


def check_data(spec: Spec, splits: Sequence[str] = ("train", "dev", "test")) -> dict[str, dict]:
    """Reads every row of every split of every task; returns {task: {split: n_rows}}.

    Raises:
        DataError: with the problems of all tasks together.
    """
    counts: dict[str, dict] = {}
    problems: list[str] = []
    for task in spec.tasks:
        counts[task.name] = {}
        for split in available_splits(spec, task):
            if split not in splits:
                continue
            try:
                counts[task.name][split] = len(read_split(spec, task, split))
            except DataError as e:
                problems += [f"{e.source}: {p}" for p in e.problems]
    if problems:
        raise DataError(spec.source, problems)
    return counts
