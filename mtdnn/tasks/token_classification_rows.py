"""The rows of token classification (`mtdnn.tasks.token_classification`): CoNLL-style files,
JSON lines or a Hub dataset -> checked `TaggedSentences`, one per sentence.

CoNLL-style files (`format: conll`, or a `.conll` / `.txt` file): a token per line, fields
separated by whitespace and addressed by 0-based position (`text: [0]` the token, `label: 3` the
tag), a blank line after each sentence, `-DOCSTART-` lines skipped; a test file may lack the tag
column. JSON lines: one sentence per line, a list of words (or a text, split on whitespace) and a
list of tags under the task's `text` and `label` keys. Hub datasets: a sequence of words and a
sequence of `ClassLabel` ids, named through the feature (eriktks/conll2003's tokens, ner_tags).
Every tag must be in `labels:`; an unknown one is a DataError naming the file, its first line, the
tag, how many words have it, and the fix. max_train/eval_examples count sentences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtdnn.errors import DataError
from mtdnn.records import MISSING, column_getter, fail, format_of, read_records, show, typed

if TYPE_CHECKING:
    from mtdnn.spec import FileSource, HubSource, Spec, TaskSpec

CONLL_SUFFIXES = (".conll", ".txt")
_ID_KEYS = ("id", "idx", "index")  # the row id of a file to predict, as mtdnn.data.read_texts
Place = Callable[[int, int], str]  # (sentence, word) -> where it is, for messages


@dataclass(frozen=True)
class TaggedSentences:
    """One split of a token classification task: sentences of words, and their tags."""

    task: str
    split: str
    where: str  # the file or Hub dataset, for messages
    tokens: list[list[str]]  # the words of each sentence
    labels: list[list[int]] | None  # tag ids, one per word; None: the split has no tags
    ids: list[str]
    tag_names: tuple[str, ...]  # tag id -> tag (the task's `labels:`)
    tag_scheme: str | None = None  # how the entity metrics read the tags (TaskSpec.tag_scheme)

    def __len__(self) -> int:
        return len(self.tokens)


# --------------------------------------------------------------------------------------------------
# Reading sentences: each reader returns (words, tags or None, ids, place, problems)


def _words_problem(value: Any) -> str | None:
    """Why a row's words are not a non-empty list of texts, or None."""
    if not isinstance(value, list) or not value:
        return f"is {typed(value)}, not a non-empty list of words"
    bad = [f"word {j + 1} is {typed(w)}" for j, w in enumerate(value)
           if not isinstance(w, str) or not w.strip()]
    return f"has words that are not text: {', '.join(bad)}" if bad else None


def _read_conll(path: str, text_col: int, label_col: int | None, split: str) -> tuple:
    # The TSV reader brings the UTF-8 and NUL checks; whitespace splits the fields. It skips blank
    # lines but counts them, so a gap in the line numbers is a sentence boundary.
    _, records = read_records(path, "tsv", header=False)
    words: list[list[str]] = [[]]
    tags: list[list[Any]] = [[]]
    starts, problems, previous = [0], [], 0
    labelled: bool | None = None
    for n, row in records:
        fields = "\t".join(row).split()
        if (n > previous + 1 or not fields or fields[0] == "-DOCSTART-") and words[-1]:
            words.append([])
            tags.append([])
            starts.append(0)
        previous = n
        if not fields or fields[0] == "-DOCSTART-":
            continue
        if labelled is None:  # a test file may come without its tag column
            labelled = label_col is not None and not (split in ("test", "predict") and
                                                      len(fields) <= label_col)
        need = max(text_col, label_col or 0 if labelled else 0) + 1
        if len(fields) < need:
            problems.append(f"line {n}: {len(fields)} field(s) {fields}, the columns read need "
                            f"{need} (text: [{text_col}], label: {label_col}; fields are "
                            "separated by whitespace)")
            continue
        starts[-1] = starts[-1] or n
        words[-1].append(fields[text_col])
        tags[-1].append(fields[label_col] if labelled and label_col is not None else None)
    if not words[-1]:
        del words[-1], tags[-1], starts[-1]
    if not words and not problems:
        raise DataError(path, ["the file has no sentences (a token per line, a blank line "
                               "between sentences)"])
    return (words, tags if labelled else None, [str(i) for i in range(len(words))],
            lambda i, j: f"line {starts[i] + j}", problems)


def _read_jsonl(path: str, text_col: Any, label_col: Any, id_col: Any, split: str, key: str,
                fix: str) -> tuple:
    """The words of a row are a list, or a text split on whitespace."""
    _, records = read_records(path, "jsonl", header=False)
    get = {name: column_getter(col, None, "jsonl", path, f"{key}.{name}") if col is not None
           else (lambda rec: MISSING) for name, col in (("text", text_col), ("label", label_col),
                                                       ("id", id_col))}
    words, tags, ids, lines, problems = [], [], [], [], []
    for n, rec in records:
        value, raw, row_id = get["text"](rec), get["label"](rec), get["id"](rec)
        value = value.split() if isinstance(value, str) else value
        if value is MISSING:
            problems.append(f"line {n}: no key {text_col!r} (the row has keys {list(rec)}; {fix})")
            continue
        bad = [f"{text_col!r} {p}"] if (p := _words_problem(value)) else []
        if raw is not MISSING and (not isinstance(raw, list) or len(raw) != len(value)):
            bad.append(f"{label_col!r} is {show(raw)}, not a list of one tag per word")
        if id_col is not None and row_id in (MISSING, None):
            bad.append(f"no id in key {id_col!r} (give every row one)")
        problems += [f"line {n}: {p}" for p in bad]
        if not bad:
            words.append([str(w) for w in value])
            tags.append(raw)
            ids.append(str(len(ids) if id_col is None else row_id))
            lines.append(n)
    if not words and not problems:
        raise DataError(path, ["the file has no rows (one JSON object per sentence)"])
    missing = [line for line, t in zip(lines, tags) if t is MISSING]
    if label_col is None or (split in ("test", "predict") and len(missing) == len(tags)):
        return words, None, ids, None, problems
    problems += [f"line {line}: no key {label_col!r} (every {split} row needs its tags)"
                 for line in missing]
    return words, tags, ids, lambda i, j: f"line {lines[i]}, word {j + 1}", problems


def _read_hub(task: TaskSpec, split: str, hub: HubSource, where: str) -> tuple:
    from mtdnn.data import load_hub_split

    ds = load_hub_split(hub, split)
    key = f"tasks.{task.name}.hub"
    text_col = (hub.text or task.text)[0]
    label_col = hub.label if hub.label is not None else task.label
    id_col = hub.id if hub.id is not None else task.id
    if missing := [c for c in (text_col, label_col, id_col) if c is not None and
                   c not in ds.column_names and not (c == label_col and split == "test")]:
        raise DataError(where, [f"{key}: no column(s) {missing} in split "
                                f"{hub.splits[split]!r}; it has {ds.column_names} (set "
                                f"{key}.text / label / id)"])
    words = list(ds[text_col])
    problems = [f"row {i}: {text_col!r} {p}" for i, w in enumerate(words)
                if (p := _words_problem(w))]
    ids = [str(v) for v in ds[id_col]] if id_col is not None else [str(i) for i in range(len(ds))]
    raw = list(ds[label_col]) if label_col in ds.column_names else []
    if not raw or (split == "test" and all(isinstance(row, list) and set(row) <= {-1}
                                           for row in raw)):  # the Hub's "no label": -1
        return words, None, ids, None, problems
    inner = getattr(ds.features[label_col], "feature", None)  # Sequence / List of ClassLabel
    if hasattr(inner, "int2str"):
        raw = [[inner.names[v] if isinstance(v, int) and 0 <= v < len(inner.names) else v
                for v in row] if isinstance(row, list) else row for row in raw]
    problems += [f"row {i}: {label_col!r} is {typed(t)}, not a list of one tag per word"
                 for i, (w, t) in enumerate(zip(words, raw))
                 if not isinstance(t, list) or (isinstance(w, list) and len(w) != len(t))]
    return words, raw, ids, lambda i, j: f"row {i}, word {j + 1}", problems


def _tag_ids(task: TaskSpec, tags: list[list[Any]], place: Place
             ) -> tuple[list[list[int]], list[str]]:
    """Tag values -> tag ids, and one problem per unknown value (its first place and count)."""
    index = {t: i for i, t in enumerate(task.labels)}
    unknown: dict[str, tuple[str, int]] = {}
    out = []
    for i, sentence in enumerate(tags):
        out.append([])
        for j, tag in enumerate(sentence if isinstance(sentence, list) else []):  # else reported
            # A JSON number names a tag only when `labels:` lists it as text ("0", "1", ...).
            text = tag if isinstance(tag, str) else str(tag) \
                if isinstance(tag, int) and not isinstance(tag, bool) else None
            if text in index:
                out[-1].append(index[text])
                continue
            what = show(tag) if isinstance(tag, str) else typed(tag)
            first, count = unknown.get(what, (place(i, j), 0))
            unknown[what] = (first, count + 1)
    shown = f" {list(task.labels)}" if len(task.labels) <= 12 else ""
    return out, [f"{first}: tag {what} is not in tasks.{task.name}.labels{shown} (add it to the "
                 f"list, or fix the tag){f'; {n} words have it' if n > 1 else ''}"
                 for what, (first, n) in unknown.items()]


def read_split(spec: Spec, task: TaskSpec, split: str) -> TaggedSentences:
    """Reads and checks one split of a token classification task.

    Raises:
        DataError: naming the file (or Hub dataset), the line (row) and word, the value and the
            fix: a short CoNLL line, a row without words, tags that do not fit its words, a tag
            outside `labels:`, an empty file.
    """
    from mtdnn.data import available_splits

    if split not in available_splits(spec, task):
        raise DataError(spec.source, [f"tasks.{task.name}: no {split!r} split (it has "
                                      f"{available_splits(spec, task)}): use one of those, or "
                                      f"add tasks.{task.name}.files.{split} to the spec"])
    if not spec.uses_files(task):
        assert task.hub is not None
        where = f"hub dataset {task.hub.path}" + (f" ({task.hub.name})" if task.hub.name
                                                  else "")
        words, tags, ids, place, problems = _read_hub(task, split, task.hub, where)
    else:
        source = task.files[split]
        where, key = source.path, f"tasks.{task.name}.files.{split}"
        fmt = format_of(where, file_format(source) or "auto", "set format: conll or jsonl")
        text = (source.text or task.text)[0]
        label = source.label if source.label is not None else task.label
        id_col = source.id if source.id is not None else task.id
        words, tags, ids, place, problems = \
            _read_conll(where, text, label, split) if fmt == "conll" else \
            _read_jsonl(where, text, label, id_col, split, key, f"set {key}.text")
    labels = None
    if tags is not None:
        labels, unknown = _tag_ids(task, tags, place)
        problems += unknown
    fail(where, problems)
    limit = task.max_train_examples if split == "train" else task.max_eval_examples
    return TaggedSentences(task.name, split, where, words[:limit],
                           None if labels is None else labels[:limit], ids[:limit],
                           tuple(task.labels), task.tag_scheme)


def read_inputs(path: Any, columns: Sequence[str]) -> tuple[list[Any], list[str]]:
    """JSON lines with a list of words (or a text) under `columns[0]`, a TSV/CSV text column
    split on whitespace, or a CoNLL-style file (the words of column `columns[0]` when it is a
    number, else of column 0)."""
    from mtdnn.data import read_texts

    where, column = str(path), columns[0]
    fmt = format_of(where, "conll" if Path(where).suffix.lower() in CONLL_SUFFIXES else
                    "auto", "name the file .jsonl, .tsv, .csv or .conll")
    if fmt in ("tsv", "csv"):
        texts, ids = read_texts(where, [column], fmt)
        return [t[0].split() for t in texts], ids
    if fmt == "conll":
        words, _, ids, _, problems = _read_conll(where, int(column) if str(column).isdigit()
                                                 else 0, None, "predict")
    else:
        _, records = read_records(where, "jsonl", header=False)
        first = next(records, (0, {}))[1]  # its keys tell whether the rows have ids
        records.close()
        words, _, ids, _, problems = _read_jsonl(
            where, column, None, next((k for k in _ID_KEYS if k in first), None), "predict",
            "--text-columns", "pass --text-columns")
    fail(where, problems)
    return words, ids


def file_format(source: FileSource) -> str | None:
    """A file's format, as far as the spec tells it (None: unknown until format_of reads it)."""
    suffix = Path(source.path).suffix.lower()
    return source.format if source.format != "auto" else "conll" \
        if suffix in CONLL_SUFFIXES else "jsonl" if suffix in (".jsonl", ".json") else None
