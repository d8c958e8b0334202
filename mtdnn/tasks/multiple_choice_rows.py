"""Multiple-choice rows: files, Hub datasets and predict inputs -> checked, typed examples
(`Choices`) for `mtdnn.tasks.multiple_choice`.

The rules (also in that module's docstring): the first text column is the context; the choices are
one list column (JSON lines, Hub: strings, {"label", "text"} objects, or the Hub's {"label": [...],
"text": [...]}; JSON columns may be dotted paths such as `question.stem`) or one column per choice
(TSV/CSV can only do this). The answer is a choice label when the choices have labels (compared as
text, never a position or a choice text), else a 0-based position; a Hub ClassLabel answer is its id
(or its name, for labelled choices). Every bad row is a `DataError` naming the file, the line, the
value and the fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mtdnn.spec import Spec, TaskSpec

_ID_COLUMNS = ("id", "idx", "index")  # predict inputs: the row id, when a file has one


@dataclass(frozen=True)
class Choices:
    """One split of a multiple-choice task: the typed examples."""

    task: str
    split: str
    where: str  # file path or hub dataset, for messages
    contexts: list[str]
    choices: list[list[str]]  # each row's choice texts, in order
    choice_labels: list[list[str] | None]  # each row's choice labels; None: unlabelled choices
    labels: list[int] | None  # the answer's position; None when the split has no answers
    ids: list[str]

    def __len__(self) -> int:
        return len(self.contexts)


def parse_choices(values: list[Any], columns: Sequence[Any]
                  ) -> tuple[list[str], list[str] | None] | str:
    """The choice column value(s) of a row -> (texts, labels or None), or the problem."""
    from mtdnn.records import show, text_problem, typed

    labels: list[Any] | None = None
    if len(values) > 1:
        texts = values
    elif isinstance(values[0], dict) and "text" in values[0]:  # the Hub: {label: [], text: []}
        texts, labels = values[0]["text"], values[0].get("label")
        if not isinstance(texts, list) or not (labels is None or isinstance(labels, list)
                                               and len(labels) == len(texts)):
            return (f"column {columns[0]!r} holds {show(values[0])}: give its 'text' and "
                    "'label' as lists of equal length")
    elif isinstance(values[0], list):
        items = values[0]
        objects = [x for x in items if isinstance(x, dict)]
        texts = items
        if objects and len(objects) != len(items):
            return (f"column {columns[0]!r} mixes objects and plain values ({show(items)}): give "
                    'every choice as {"label": ..., "text": ...} or every one as a string')
        if objects:
            if bad := [x for x in objects if "text" not in x]:
                return f'choice {show(bad[0])} has no "text" (write {{"label": "A", "text": ...}})'
            texts = [x["text"] for x in objects]
            labels = [x.get("label") for x in objects] if "label" in objects[0] else None
    else:
        return (f"column {columns[0]!r} is {typed(values[0])}, not a list of choices (give them as "
                "a JSON list, or one column per choice: text: [context, choice_0, choice_1, ...])")
    for i, t in enumerate(texts):
        if problem := text_problem(f"{columns[0]}[{i}]" if len(values) == 1 else columns[i], t):
            return problem
    if len(texts) < 2:
        return f"{len(texts)} choice(s): a question needs at least 2 (fix the row or drop it)"
    if labels is not None:
        if bad := [x for x in labels if not isinstance(x, str | int) or isinstance(x, bool)]:
            return f"choice label {typed(bad[0])} is not text (give every choice a label string)"
        labels = [str(x) for x in labels]
        if len(set(labels)) != len(labels):
            return (f"choice labels {labels} repeat a label, so an answer could name two choices "
                    "(make them unique)")
    return [str(t) for t in texts], labels


def answer_index(value: Any, labels: list[str] | None, count: int) -> tuple[int | None, str | None]:
    """A row's answer -> the position of its choice, or (None, the problem)."""
    from mtdnn.records import show, typed

    if isinstance(value, list | dict | bool | float):
        return None, f"answer {typed(value)} names no choice (give one label or 0-based position)"
    if labels is not None:
        if str(value) in labels:
            return labels.index(str(value)), None
        return None, (f"answer {show(value)} is not one of the row's choice labels {labels} (with "
                      "labelled choices the answer is a label, never a position or a text): fix "
                      "the answer or the labels")
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int):
        return None, (f"answer {show(value)} is not a 0-based position, and these choices have no "
                      f"labels to match (write 0 to {count - 1})")
    if not 0 <= value < count:
        hint = "1-based? subtract 1" if value == count else f"write 0 to {count - 1}"
        return None, f"answer {value} is outside the row's {count} choices, counted from 0 ({hint})"
    return value, None


def _dotted(record: dict[str, Any], path: str) -> Any:
    """A JSON value by key, or by a dotted path into nested objects (`question.stem`)."""
    from mtdnn.records import MISSING

    if path in record:  # a key that holds a dot itself wins
        return record[path]
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def _getter(col: Any, header: list[str] | None, fmt: str, where: str, key: str) -> Callable:
    from mtdnn.records import column_getter

    if fmt == "jsonl" and isinstance(col, str):
        return lambda rec: _dotted(rec, col)
    return column_getter(col, header, fmt, where, key)  # positions, names, and their errors


def _check_columns(columns: Sequence[Any], fmt: str, where: str, key: str) -> None:
    from mtdnn.data import DataError

    if len(columns) < 2:
        raise DataError(where, [f"{key}: {list(columns)}: give the context, then the choices "
                                "([question, choices] or [premise, choice_0, choice_1, ...])"])
    if fmt not in ("tsv", "csv", "jsonl", "hub"):
        raise DataError(where, [f"{key}: a {fmt} file holds no multiple-choice rows (give a tsv, "
                                "csv or jsonl file)"])
    if fmt in ("tsv", "csv") and len(columns) == 2:
        raise DataError(where, [f"{key}: {list(columns)}: a {fmt} field holds one text, not a list "
                                "of choices (give one column per choice: [context, choice_0, "
                                "choice_1, ...])"])


@dataclass
class _Scan:
    contexts: list[str] = dataclasses.field(default_factory=list)
    choices: list[list[str]] = dataclasses.field(default_factory=list)
    choice_labels: list[list[str] | None] = dataclasses.field(default_factory=list)
    answers: list[Any] = dataclasses.field(default_factory=list)
    ids: list[str] = dataclasses.field(default_factory=list)
    at: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    answered: bool = True  # False: the source has no answer column


def _scan(records: Iterator[tuple[str, Any]], columns: Sequence[Any], getters: list[Callable],
          get_answer: Callable | None, get_id: Callable | None, width: int | None) -> _Scan:
    """Checked rows: context, choices and raw answer of each; every bad row is a problem."""
    from mtdnn.records import MISSING, text_problem

    out = _Scan(answered=get_answer is not None)
    for at, rec in records:
        if width is not None and len(rec) != width:
            out.problems.append(f"{at}: {len(rec)} fields, the header has {width} (a stray "
                                "separator or newline inside a field?)")
            continue
        values = [g(rec) for g in getters]
        if missing := [c for c, v in zip(columns, values) if v is MISSING]:
            out.problems.append(f"{at}: missing column(s) {missing} (the row has "
                                f"{list(rec) if isinstance(rec, dict) else len(rec)}; fix the "
                                "row, or the spec's text columns)")
            continue
        parsed = text_problem(columns[0], values[0]) or parse_choices(values[1:], columns[1:])
        row_id = get_id(rec) if get_id else str(len(out.ids))
        if row_id is MISSING or row_id is None:
            parsed = "no id in the id column (give every row one)"
        if isinstance(parsed, str):
            out.problems.append(f"{at}: {parsed}")
            continue
        out.contexts.append(str(values[0]))
        out.choices.append(parsed[0])
        out.choice_labels.append(parsed[1])
        out.answers.append(get_answer(rec) if get_answer else None)
        out.ids.append(str(row_id))
        out.at.append(at)
    return out


def _examples(task: TaskSpec, split: str, where: str, scan: _Scan,
              class_names: list[str] | None = None) -> Choices:
    """Answers converted, problems raised, the task's row limit applied."""
    from mtdnn.data import DataError
    from mtdnn.records import MISSING, fail

    if not scan.at and not scan.problems:
        raise DataError(where, [f"no rows (an empty {split} split: fill it, or leave the split "
                                "out of the spec)"])
    labels: list[int] | None = None
    # Test splits (leaderboard files, the Hub's "" or -1) carry no answers: unlabelled, not empty.
    if scan.answered and not (split == "test" and all(
            v is MISSING or v is None or v == "" or v == -1 for v in scan.answers)):
        labels = []
        for at, value, names, texts in zip(scan.at, scan.answers, scan.choice_labels,
                                           scan.choices):
            if value is MISSING or value is None or value == "":
                scan.problems.append(f"{at}: empty answer (every {split} row needs one): fill it "
                                     "in or drop the row")
                continue
            if class_names and names is not None and isinstance(value, int) \
                    and 0 <= value < len(class_names):
                value = class_names[value]  # a ClassLabel answer to labelled choices: its name
            index, problem = answer_index(value, names, len(texts))
            if problem:
                scan.problems.append(f"{at}: {problem}")
            labels.append(index)
    fail(where, scan.problems)
    if labels is None and split != "test":
        raise DataError(where, [f"tasks.{task.name}: the {split} split has no answers (set "
                                f"tasks.{task.name}.label to the answer column)"])
    n = task.max_train_examples if split == "train" else task.max_eval_examples
    cut = slice(None, n)
    return Choices(task.name, split, where, scan.contexts[cut], scan.choices[cut],
                   scan.choice_labels[cut], labels[cut] if labels is not None else None,
                   scan.ids[cut])


def _read_file(task: TaskSpec, split: str) -> Choices:
    from mtdnn.data import DataError
    from mtdnn.records import format_of, read_records

    source, key = task.files[split], f"tasks.{task.name}.files.{split}"
    where = source.path
    fmt = format_of(where, source.format, "set format: tsv, csv or jsonl")
    columns = source.text or task.text
    _check_columns(columns, fmt, where, f"{key}.text")
    header, records = read_records(where, fmt, source.header)
    label_col = source.label if source.label is not None else task.label
    id_col = source.id if source.id is not None else task.id
    getters = [_getter(c, header, fmt, where, f"{key}.text") for c in columns]
    get_answer = None
    if label_col is not None:
        try:
            get_answer = _getter(label_col, header, fmt, where, f"{key}.label")
        except DataError:  # a test file without the answer column is unlabelled
            if split != "test":
                raise
    get_id = _getter(id_col, header, fmt, where, f"{key}.id") if id_col is not None else None
    scan = _scan(((f"line {n}", r) for n, r in records), columns, getters, get_answer, get_id,
                 len(header) if header is not None else None)
    return _examples(task, split, where, scan)


def _read_hub(task: TaskSpec, split: str) -> Choices:
    from mtdnn.data import DataError, hub_where, load_hub_split

    hub = task.hub
    assert hub is not None
    where, ds = hub_where(hub), load_hub_split(hub, split)
    columns = hub.text or task.text
    label_col = hub.label if hub.label is not None else task.label
    id_col = hub.id if hub.id is not None else task.id
    key = f"tasks.{task.name}.hub"
    _check_columns(columns, "hub", where, f"{key}.text")
    wanted = [*columns, *([id_col] if id_col is not None else []),
              *([label_col] if label_col is not None and split != "test" else [])]
    if missing := [c for c in wanted if str(c).split(".")[0] not in ds.column_names]:
        raise DataError(where, [f"{key}: no column(s) {missing} in split {hub.splits[split]!r}; "
                                f"it has {ds.column_names} (set {key}.text / label / id)"])
    feature = ds.features.get(label_col) if label_col is not None else None
    names = list(feature.names) if hasattr(feature, "names") else None
    get_answer = None if label_col is None or str(label_col).split(".")[0] not in \
        ds.column_names else (lambda rec: _dotted(rec, label_col))
    get_id = (lambda rec: _dotted(rec, id_col)) if id_col is not None else None
    scan = _scan(((f"row {i}", r) for i, r in enumerate(ds)), columns,
                 [lambda rec, c=c: _dotted(rec, c) for c in columns], get_answer, get_id, None)
    return _examples(task, split, where, scan, names)


def read_split(spec: Spec, task: TaskSpec, split: str) -> Choices:
    """Reads and checks every row of one split (its file, or its Hub dataset)."""
    from mtdnn.data import DataError, available_splits

    if split not in available_splits(spec, task):
        raise DataError(spec.source, [f"tasks.{task.name}: no {split!r} split (it has "
                                      f"{available_splits(spec, task)})"])
    return _read_file(task, split) if spec.uses_files(task) else _read_hub(task, split)


def read_inputs(path: Any, columns: Sequence[Any]) -> tuple[list[Any], list[str]]:
    """A file of questions to predict (JSON lines, or TSV/CSV with a header and one column per
    choice) -> ((context, choices) per row, the row ids: its id/idx/index, else its 0-based
    number)."""
    import itertools

    from mtdnn.records import fail, format_of, read_records

    where = str(path)
    fmt = format_of(where, "auto", "name the file .tsv, .csv or .jsonl")
    _check_columns(columns, fmt, where, "columns")
    header, records = read_records(where, fmt, header=fmt != "jsonl")
    keys: Any = header
    if header is None:  # JSON lines: the first record tells whether the rows have ids
        first = next(records, None)
        keys = first[1] if first else {}
        records = itertools.chain([first] if first else [], records)
    id_col = next((k for k in _ID_COLUMNS if k in keys), None)
    getters = [_getter(c, header, fmt, where, "columns") for c in columns]
    get_id = _getter(id_col, header, fmt, where, "id") if id_col else None
    scan = _scan(((f"line {n}", r) for n, r in records), columns, getters, None, get_id,
                 len(header) if header is not None else None)
    fail(where, scan.problems or ([] if scan.at else ["no rows (nothing to predict)"]))
    inputs = [(c, texts if names is None else
               [{"label": n, "text": t} for n, t in zip(names, texts)])
              for c, texts, names in zip(scan.contexts, scan.choices, scan.choice_labels)]
    return inputs, scan.ids
