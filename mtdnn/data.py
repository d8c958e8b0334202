"""Task data: local files or Hub datasets -> checked rows -> tokenized `datasets.Dataset`s.

Every task split becomes a table with the same columns, whatever its source:
`text_a`, `text_b` (pairs only), `label` (class id, float score, or 0/1 relevance; absent when the
split has no labels, as GLUE test sets), and `id` (the row id used in predictions). Ranking tasks
add
`query_id`: the rows of one query are scored together.

Local files are read with quoting turned off for TSV (GLUE's files contain stray quotes that default
CSV quoting silently merges into neighbouring fields) and with `utf-8-sig`, which drops the BOM that
starts MRPC's files. No value is turned into None: the text "NA" stays "NA".
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtdnn.spec import Column, FileSource, HubSource, Spec, SpecError, TaskSpec

MAX_LISTED = 20  # row problems listed per file before "and N more"
_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


class DataError(SpecError):
    """The data of a task is wrong: which file, which row, which value, and the fix."""


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
# Reading raw records


def _file_format(source: FileSource) -> str:
    if source.format != "auto":
        return source.format
    suffix = Path(source.path).suffix.lower()
    if suffix not in _FORMATS:
        raise DataError(source.path, [f"cannot tell the format from the extension '{suffix}': "
                                      "set format: tsv, csv or jsonl"])
    return _FORMATS[suffix]


def _read_records(source: FileSource) -> tuple[list[str] | None, Iterator[tuple[int, Any]]]:
    """Returns (header or None, iterator of (line number, record)); a record is a list of fields
    (tsv/csv) or a dict (jsonl)."""
    fmt = _file_format(source)
    f = open(source.path, encoding="utf-8-sig", newline="")
    if fmt == "jsonl":
        def jsonl() -> Iterator[tuple[int, Any]]:
            with f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            record = json.loads(line)
                        except json.JSONDecodeError as e:
                            raise DataError(source.path, [f"line {n}: not valid JSON ({e.msg})"]
                                            ) from None
                        if not isinstance(record, dict):
                            raise DataError(source.path, [
                                f"line {n}: expected a JSON object ({{\"column\": value, ...}}), "
                                f"got {type(record).__name__}"])
                        yield n, record
        return None, jsonl()
    if fmt == "tsv":
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(f)
    header = next(reader, None) if source.header else None

    def rows() -> Iterator[tuple[int, Any]]:
        with f:
            # A quoted CSV field may span lines: a record is numbered by its first line.
            start = reader.line_num + 1
            for row in reader:
                if row:
                    yield start, row
                start = reader.line_num + 1
    return header, rows()


def _column_getter(col: Column, header: list[str] | None, fmt: str, where: str, key: str):
    """Returns a function record -> value for a column given by name or position."""
    if fmt == "jsonl":
        if isinstance(col, int):
            raise DataError(where, [f"{key}: JSON lines are addressed by key, not position {col}"])
        return lambda rec: rec.get(col)
    if isinstance(col, int):
        return lambda rec: rec[col] if col < len(rec) else None
    if header is None:
        raise DataError(where, [f"{key}: column {col!r} given by name, but the file is read "
                                "without a header (header: false): give its 0-based position "
                                "instead"])
    if col not in header:
        raise DataError(where, [f"{key}: no column {col!r} in the header "
                                f"{header} (fix the column name, or set header: false and use "
                                "positions)"])
    i = header.index(col)
    return lambda rec: rec[i] if i < len(rec) else None


def _read_file(task: TaskSpec, split: str, source: FileSource) -> Rows:
    fmt = _file_format(source)
    where = source.path
    key = f"tasks.{task.name}.files.{split}"
    header, records = _read_records(source)
    text_cols = source.text or task.text
    label_col = source.label if source.label is not None else task.label
    id_col = source.id if source.id is not None else task.id
    texts = [_column_getter(c, header, fmt, where, f"{key}.text") for c in text_cols]
    # Test splits (GLUE's leaderboard files) have no label column: read labels only if present.
    get_label = None
    if label_col is not None:
        try:
            get_label = _column_getter(label_col, header, fmt, where, f"{key}.label")
        except DataError:
            if split != "test":
                raise
    get_id = _column_getter(id_col, header, fmt, where, f"{key}.id") if id_col is not None \
        else None
    width = len(header) if header else None
    problems: list[str] = []
    cols: list[list[str]] = [[] for _ in texts]
    raw_labels: list[Any] = []
    ids: list[str] = []
    lines: list[int] = []
    for n, rec in records:
        if width is not None and len(rec) != width:
            problems.append(f"line {n}: {len(rec)} fields, the header has {width} (a stray tab or "
                            "newline inside a field? TSV is read without quoting)")
            continue
        values = [g(rec) for g in texts]
        if any(v is None for v in values):
            problems.append(f"line {n}: missing text column(s) {list(text_cols)} (row has "
                            f"{len(rec)} fields)")
            continue
        for c, v in zip(cols, values):
            c.append(str(v))
        raw_labels.append(get_label(rec) if get_label else None)
        ids.append(str(get_id(rec)) if get_id else str(len(ids)))
        lines.append(n)
    # A test file without its label column (headerless, or JSON lines without the key) is
    # unlabelled, not a file of empty labels: decide before converting, which reports empties.
    if get_label and split == "test" and all(v is None for v in raw_labels):
        get_label = None
    labels = _convert_labels(task, raw_labels, lines, problems, split) if get_label else None
    if problems:
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise DataError(where, problems[:MAX_LISTED] + ([more.strip()] if more else []))
    return _make_rows(task, split, where, cols, labels, ids)


def _convert_labels(task: TaskSpec, raw: list[Any], where: list[Any], problems: list[str],
                    split: str) -> list[Any]:
    """Raw label values -> class ids / floats / relevance; problems name the row and the fix."""
    out: list[Any] = []
    index = {name: i for i, name in enumerate(task.labels)}
    for value, at in zip(raw, where):
        if value is None or value == "":
            problems.append(f"{_at(at)}: empty label (every {split} row needs one)")
            out.append(None)
        elif task.type == "classification":
            text = str(value)
            if text not in index:
                problems.append(f"{_at(at)}: label {text!r} is not in tasks.{task.name}.labels "
                                f"{list(task.labels)} (add it to the list or fix the row)")
            out.append(index.get(text))
        elif task.type == "regression":
            try:
                out.append(float(value))
            except (TypeError, ValueError):
                problems.append(f"{_at(at)}: label {value!r} is not a number (regression tasks "
                                "need numeric labels)")
                out.append(None)
        else:
            out.append(1 if str(value) == task.positive_label else 0)
    return out


def _at(where: Any) -> str:
    return f"line {where}" if isinstance(where, int) else str(where)


def _read_hub(task: TaskSpec, split: str, hub: HubSource) -> Rows:
    import datasets

    where = f"hub dataset {hub.path}" + (f" ({hub.name})" if hub.name else "")
    try:
        ds = datasets.load_dataset(hub.path, hub.name, split=hub.splits[split],
                                   revision=hub.revision)
    except Exception as e:  # the datasets library raises many types for "not reachable/not found"
        raise DataError(where, [f"split {hub.splits[split]!r} could not be loaded: {e} (offline? "
                                "set data_dir to a local copy, or check the dataset name)"]
                        ) from None
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
    cols = [[str(v) for v in ds[c]] for c in text_cols]
    labels = None
    if label_col is not None and label_col in ds.column_names:
        raw = list(ds[label_col])
        feature = ds.features[label_col]
        # Test splits on the Hub carry -1 for "no label".
        if split == "test" and all(v == -1 for v in raw):
            raw = None
        elif hasattr(feature, "int2str"):
            # A ClassLabel's name is used when the spec lists it (RTE: entailment); otherwise its id
            # as text (SST-2's spec lists "0"/"1", the names of the GLUE files).
            names = [feature.int2str(i) for i in range(feature.num_classes)]
            raw = [names[v] if 0 <= v < len(names) and names[v] in task.labels else str(v)
                   for v in raw]
        if raw is not None:
            problems: list[str] = []
            labels = _convert_labels(task, raw, [f"row {i}" for i in range(len(raw))], problems,
                                     split)
            if problems:
                raise DataError(where, problems[:MAX_LISTED])
    ids = [str(v) for v in ds[id_col]] if id_col is not None else [str(i) for i in range(len(ds))]
    return _make_rows(task, split, where, cols, labels, ids)


def _make_rows(task: TaskSpec, split: str, where: str, cols: list[list[str]],
               labels: list[Any] | None, ids: list[str]) -> Rows:
    limit = task.max_train_examples if split == "train" else task.max_eval_examples
    query_ids = None
    if task.type == "ranking":
        # Rows of one query are consecutive or not; the query text identifies the group.
        seen: dict[str, int] = {}
        query_ids = [seen.setdefault(q, len(seen)) for q in cols[0]]
        if limit is not None:  # a limit counts queries, so no query is cut in half
            keep = [i for i, q in enumerate(query_ids) if q < limit]
            cols = [[c[i] for i in keep] for c in cols]
            labels = [labels[i] for i in keep] if labels is not None else None
            ids = [ids[i] for i in keep]
            query_ids = [query_ids[i] for i in keep]
    elif limit is not None:
        cols = [c[:limit] for c in cols]
        labels = labels[:limit] if labels is not None else None
        ids = ids[:limit]
    return Rows(task=task.name, split=split, where=where, text_a=cols[0],
                text_b=cols[1] if len(cols) > 1 else None, labels=labels, ids=ids,
                query_ids=query_ids)


def available_splits(spec: Spec, task: TaskSpec) -> list[str]:
    if spec.uses_files(task):
        return [s for s in ("train", "dev", "test") if s in task.files]
    assert task.hub is not None
    return [s for s in ("train", "dev", "test") if s in task.hub.splits]


def read_split(spec: Spec, task: TaskSpec, split: str) -> Rows:
    """Reads and checks every row of one split of a task.

    Raises:
        DataError: naming the file, the line and value of each bad row, and the fix.
    """
    if split not in available_splits(spec, task):
        raise DataError(spec.source, [f"tasks.{task.name}: no {split!r} split (it has "
                                      f"{available_splits(spec, task)})"])
    if spec.uses_files(task):
        return _read_file(task, split, task.files[split])
    assert task.hub is not None
    return _read_hub(task, split, task.hub)


# --------------------------------------------------------------------------------------------------
# Tokenization


def ranking_groups(rows: Rows, max_candidates: int) -> list[list[int]]:
    """Training groups for listwise ranking: each group is one relevant row followed by up to
    `max_candidates - 1` irrelevant rows of the same query. A query's irrelevant rows are spread
    over as many groups as needed, so every candidate is seen each epoch, without random sampling.
    Queries with no relevant or no irrelevant row carry no listwise signal and are left out."""
    assert rows.labels is not None and rows.query_ids is not None
    by_query: dict[int, tuple[list[int], list[int]]] = {}
    for i, (q, rel) in enumerate(zip(rows.query_ids, rows.labels)):
        by_query.setdefault(q, ([], []))[0 if rel else 1].append(i)
    groups = []
    step = max_candidates - 1
    for positives, negatives in by_query.values():
        for p in positives:
            for start in range(0, len(negatives), step):
                groups.append([p, *negatives[start:start + step]])
    return groups


def _cache_key(rows: Rows, tokenizer: Any, max_len: int, extra: str) -> str:
    h = hashlib.sha256()
    meta = [rows.task, rows.split, rows.where, len(rows), max_len, extra,
            type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer),
            # settings such as lower-casing change the ids without changing the vocabulary
            json.dumps(getattr(tokenizer, "init_kwargs", {}), sort_keys=True, default=str)]
    h.update(json.dumps(meta).encode())
    for col in (rows.text_a, rows.text_b or [], [str(x) for x in rows.labels or []]):
        h.update("\x1f".join(col).encode())
    return h.hexdigest()[:24]


def cache_dir() -> Path:
    """Where tokenized splits are cached: $MTDNN_CACHE, else $HF_HOME/mtdnn, else ~/.cache/mtdnn."""
    if os.environ.get("MTDNN_CACHE"):
        return Path(os.environ["MTDNN_CACHE"])
    hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    return Path(hf_home) / "mtdnn"


def tokenize(rows: Rows, tokenizer: Any, max_len: int, *, for_training: bool,
             max_candidates: int = 8, use_cache: bool = True):
    """Tokenizes one split into a `datasets.Dataset` (cached on disk by content).

    Columns: `input_ids`, `token_type_ids` (when the tokenizer makes them), `length` (tokens),
    `labels` (when the split has labels), `index` (the row's position in `rows`). Ranking training
    splits hold one listwise group per row: `input_ids` is then a list of candidates and `labels`
    the position of the relevant one (always 0).
    """
    import datasets

    grouped = for_training and rows.query_ids is not None
    if grouped and rows.labels is None:
        raise DataError(rows.where, [f"tasks.{rows.task}: ranking training rows need labels"])
    table: dict[str, list[Any]] = {"text_a": rows.text_a, "index": list(range(len(rows)))}
    if rows.text_b is not None:
        table["text_b"] = rows.text_b
    if rows.labels is not None:
        table["labels"] = rows.labels
    ds = datasets.Dataset.from_dict(table)
    key = _cache_key(rows, tokenizer, max_len, f"grouped={grouped},{max_candidates}")
    path = cache_dir() / "tokenized" / f"{rows.task}-{rows.split}-{key}.arrow"
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        pair = (batch["text_a"], batch["text_b"]) if "text_b" in batch else (batch["text_a"],)
        enc = tokenizer(*pair, truncation=True, max_length=max_len)
        out = {"input_ids": enc["input_ids"], "length": [len(x) for x in enc["input_ids"]]}
        if "token_type_ids" in enc:
            out["token_type_ids"] = enc["token_type_ids"]
        return out

    ds = ds.map(encode, batched=True, batch_size=2000, remove_columns=[
        c for c in ("text_a", "text_b") if c in ds.column_names],
        cache_file_name=str(path) if use_cache else None, load_from_cache_file=use_cache,
        new_fingerprint=key, desc=f"tokenizing {rows.task}/{rows.split}")
    if not grouped:
        return ds
    groups = ranking_groups(rows, max_candidates)
    columns = {c: ds[c] for c in ("input_ids", "token_type_ids") if c in ds.column_names}
    lengths = ds["length"]
    table = {c: [[col[i] for i in g] for g in groups] for c, col in columns.items()}
    table["length"] = [sum(lengths[i] for i in g) for g in groups]
    table["labels"] = [0] * len(groups)  # the relevant candidate is first in every group
    table["index"] = [g[0] for g in groups]
    return datasets.Dataset.from_dict(table)


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
                rows = read_split(spec, task, split)
            except DataError as e:
                problems += [f"{e.source}: {p}" for p in e.problems]
                continue
            counts[task.name][split] = len(rows)
            if task.type == "ranking" and split == "train" and rows.labels is not None:
                if not ranking_groups(rows, task.max_candidates):
                    problems.append(f"{rows.where}: no query has both a relevant and an "
                                    f"irrelevant candidate (positive_label is "
                                    f"{task.positive_label!r}; is that the right value?)")
    if problems:
        raise DataError(spec.source, problems)
    return counts
