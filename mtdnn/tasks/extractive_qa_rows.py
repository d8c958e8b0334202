"""The rows of extractive QA (`mtdnn.tasks.extractive_qa`): SQuAD JSON, JSON lines or a Hub
dataset -> checked `QAExamples`, one per question.

SQuAD JSON (`format: squad`, or a `.json` file holding `{"data": [...]}`, v1.1 and v2.0) is
flattened to one record per question with the keys id, title, context, question, answers,
is_impossible (and v2.0's plausible_answers), so that the task's `text`, `label` and `id` name
columns the same way in every source. Answers are the Hub's `{"text": [...], "answer_start":
[...]}` or SQuAD's list of `{"text", "answer_start"}`. Every answer must be the context's text at
its answer_start, a character offset in Unicode code points (Python's str indexing, as SQuAD
writes them). Questions lose their leading and trailing whitespace: run_qa.py strips it, since a
long run of spaces would only take room from the context. A question without answers (v2.0) is a
DataError unless the task sets `allow_no_answer: true`. max_train/eval_examples count questions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mtdnn.errors import DataError
from mtdnn.records import MISSING, fail, format_of, read_records, show, text_problem, typed

if TYPE_CHECKING:
    from mtdnn.spec import FileSource, Spec, TaskSpec


@dataclass(frozen=True)
class QASettings:
    """The task's decoding settings (TaskSpec fields of the same names)."""

    doc_stride: int = 128
    max_answer_length: int = 30
    n_best: int = 20
    allow_no_answer: bool = False
    null_threshold: float = 0.0

    @classmethod
    def of(cls, source: Any) -> QASettings:
        """From a TaskSpec, or from the dict of settings a checkpoint's task keeps."""
        get = source.get if isinstance(source, dict) else lambda k, d: getattr(source, k, d)
        return cls(**{f.name: get(f.name, f.default) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class QAExamples:
    """One split: a question per example, its context, its gold answers as (text, char start)
    (empty: unanswerable; `answers` None: a split without answers) and its settings."""

    task: str
    split: str
    where: str
    questions: list[str]
    contexts: list[str]
    answers: list[list[tuple[str, int]]] | None
    ids: list[str]
    settings: QASettings = QASettings()

    def __len__(self) -> int:
        return len(self.questions)

    @property
    def labels(self) -> list[list[str]] | None:
        """The gold answer texts of each question (what the metrics take as references)."""
        return None if self.answers is None else [[t for t, _ in a] for a in self.answers]


def _squad_document(path: str, required: bool) -> dict | None:
    """The parsed SQuAD JSON document of a file, or None when it is not one (and not required)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            document = json.load(f)
    except UnicodeDecodeError:
        raise DataError(path, ["not UTF-8 text (save the file as UTF-8)"]) from None
    except json.JSONDecodeError as e:
        if not required:
            return None  # JSON lines in a .json file
        raise DataError(path, [f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                               'format: squad reads one JSON document {"data": [...]}']) from None
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        return document
    if required:
        keys = list(document) if isinstance(document, dict) else type(document).__name__
        raise DataError(path, [f'not SQuAD JSON: expected an object with a "data" list of '
                               f"articles, got {keys} (use format: jsonl for JSON lines)"])
    return None


def _flatten(path: str, document: dict) -> list[tuple[str, dict]]:
    """One record per question: the question's keys plus its paragraph's context and title."""
    records, problems = [], []
    for a, article in enumerate(document["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            problems.append(f'article {a}: no "paragraphs" list (SQuAD JSON: data[].paragraphs'
                            "[].qas[])")
            continue
        for p, paragraph in enumerate(paragraphs):
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(qas, list) or not all(isinstance(q, dict) for q in qas):
                problems.append(f'article {a}, paragraph {p}: no "qas" list of question objects')
                continue
            at = f"article {a} ({show(article.get('title', ''))}), paragraph {p}"
            records += [(at, {"title": article.get("title"),
                              "context": paragraph.get("context", MISSING), **qa}) for qa in qas]
    fail(path, problems)
    return records


def _file_records(source: FileSource) -> Iterable[tuple[str, dict]]:
    path = source.path
    fmt = format_of(path, source.format, "set format: squad (SQuAD JSON) or jsonl")
    if fmt in ("tsv", "csv", "conll"):
        raise DataError(path, [f"extractive_qa reads SQuAD JSON (format: squad) or JSON lines, "
                               f"not {fmt}: a question's answers are a list of texts and offsets"])
    if fmt == "squad" or (source.format == "auto" and path.lower().endswith(".json")):
        document = _squad_document(path, required=fmt == "squad")
        if document is not None:
            return _flatten(path, document)
    return ((f"line {n}", record) for n, record in read_records(path, "jsonl", False)[1])


def _hub_records(task: TaskSpec, split: str, text: Sequence[Any], label: Any, id_col: Any
                 ) -> tuple[str, Iterable]:
    from mtdnn.data import hub_where, load_hub_split

    hub = task.hub
    assert hub is not None
    where, ds = hub_where(hub), load_hub_split(hub, split)
    wanted = [*text, id_col, label if split != "test" else None]  # a test split may lack answers
    missing = [c for c in wanted if c is not None and c not in ds.column_names]
    if missing:
        raise DataError(where, [f"tasks.{task.name}.hub: no column(s) {missing} in split "
                                f"{hub.splits[split]!r}; it has {ds.column_names} (set "
                                f"tasks.{task.name}.hub.text / label / id)"])
    return where, ((f"row {i}", record) for i, record in enumerate(ds))


def _gold(value: Any, context: str, allow_no_answer: bool, impossible: Any, name: str
          ) -> tuple[list[tuple[str, int]], list[str]]:
    """A record's answers -> ([(text, start)], problems)."""
    if isinstance(value, dict) and {"text", "answer_start"} <= set(value):
        texts, starts = value["text"], value["answer_start"]
        if not (isinstance(texts, list) and isinstance(starts, list)
                and len(texts) == len(starts)):
            return [], [f"answers {show(value)}: text and answer_start must be lists of the "
                        "same length"]
        pairs = list(zip(texts, starts))
    elif isinstance(value, list) and all(isinstance(a, dict) and {"text", "answer_start"} <=
                                         set(a) for a in value):
        pairs = [(a["text"], a["answer_start"]) for a in value]
    else:
        return [], [f'answers {typed(value)} are neither {{"text": [...], "answer_start": '
                    '[...]}} nor a list of {"text", "answer_start"} objects']
    problems = []
    for text, start in pairs:
        if not isinstance(text, str) or not text or isinstance(start, bool) or \
                not isinstance(start, int):
            problems.append(f"answer {show(text)} at {show(start)}: the text must be a non-empty "
                            "string and answer_start an integer")
        elif start < 0 or context[start:start + len(text)] != text:
            found = context.find(text)
            where = f"it occurs at {found}" if found >= 0 else "it does not occur in the context"
            problems.append(f"answer {show(text)} is not the context's text at answer_start "
                            f"{start} (that reads {show(context[max(start, 0):][:len(text)])}; "
                            f"{where}): answer_start counts characters (Unicode code points) "
                            "from 0: fix answer_start or the answer text")
    if impossible is True and pairs:
        problems.append('is_impossible is true but the question has answers: drop one or the other')
    if not pairs and not allow_no_answer:
        problems.append(f"no answer: a question without answers (SQuAD v2.0) needs "
                        f"tasks.{name}.allow_no_answer: true; or give it an answer")
    return [(t, s) for t, s in pairs], problems


def _examples(task: TaskSpec, split: str, where: str, records: Iterable[tuple[str, dict]],
              text: Sequence[Any], label: Any, id_col: Any) -> QAExamples:
    settings = QASettings.of(task)
    q_col, c_col = text
    problems: list[str] = []
    rows: list[tuple[str, str, Any, str]] = []  # question, context, raw answers, id
    impossible: list[Any] = []
    for at, rec in records:
        row_id = rec.get(id_col, MISSING) if id_col is not None else str(len(rows))
        if id_col is not None and row_id not in (MISSING, None):
            at = f"{at}, id {show(str(row_id))}"
        values = [rec.get(q_col, MISSING), rec.get(c_col, MISSING)]
        if missing := [c for c, v in zip(text, values) if v is MISSING]:
            problems.append(f"{at}: no {missing} (it has keys {list(rec)}; set "
                            f"tasks.{task.name}.text: [question, context])")
            continue
        bad = [p for c, v in zip(text, values) if (p := text_problem(c, v))]
        if row_id is MISSING or row_id is None:
            bad.append(f"no id in column {id_col!r} (give every question one)")
        if bad:
            problems += [f"{at}: {p}" for p in bad]
            continue
        rows.append((str(values[0]).strip(), str(values[1]),
                     rec.get(label, MISSING) if label is not None else MISSING, str(row_id)))
        impossible.append((at, rec.get("is_impossible", False)))
    fail(where, problems)
    if not rows:
        raise DataError(where, [f"no questions (an empty {split} split: fill it, or remove it "
                                f"from tasks.{task.name})"])
    answers: list[list[tuple[str, int]]] | None = None
    if not (split == "test" and all(r[2] in (MISSING, None) for r in rows)):
        answers = []
        for (_, context, raw, _), (at, flag) in zip(rows, impossible):
            if raw is MISSING:
                problems.append(f"{at}: no answers column {label!r} (every {split} question "
                                f"needs one; set tasks.{task.name}.label)")
                continue
            gold, found = _gold(raw, context, settings.allow_no_answer, flag, task.name)
            answers.append(gold)
            problems += [f"{at}: {p}" for p in found]
        fail(where, problems)
    limit = task.max_train_examples if split == "train" else task.max_eval_examples
    rows = rows[:limit]  # a limit counts questions
    return QAExamples(task=task.name, split=split, where=where, questions=[r[0] for r in rows],
                      contexts=[r[1] for r in rows], ids=[r[3] for r in rows],
                      answers=answers[:limit] if answers is not None else None,
                      settings=settings)


def read_examples(spec: Spec, task: TaskSpec, split: str) -> QAExamples:
    """Reads and checks one split of an extractive_qa task.

    Raises:
        DataError: naming the file, the question (its id) and value of each problem, and the fix.
    """
    from mtdnn.data import available_splits

    have = available_splits(spec, task)
    if split not in have:
        raise DataError(spec.source, [f"tasks.{task.name}: no {split!r} split (it has {have}): "
                                      f"use one of those, or add tasks.{task.name}.files.{split} "
                                      "to the spec"])
    if spec.uses_files(task):
        source = task.files[split]
        columns = [source.text or task.text, source.label if source.label is not None
                   else task.label, source.id if source.id is not None else task.id]
        return _examples(task, split, source.path, _file_records(source), *columns)
    assert task.hub is not None
    hub = task.hub
    columns = [hub.text or task.text, hub.label if hub.label is not None else task.label,
               hub.id if hub.id is not None else task.id]
    where, records = _hub_records(task, split, *columns)
    return _examples(task, split, where, records, *columns)
