"""Tests of task data (mtdnn/data.py): reading real GLUE files, local tsv/csv/jsonl, Hub datasets
(without network), ranking groups, tokenization and its cache, and the checks of `check_data`."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from collections import Counter
from pathlib import Path

import datasets
import pytest
from conftest import SPECS, write_spec

from mtdnn.data import (
    DataError,
    Rows,
    available_splits,
    check_data,
    ranking_groups,
    read_split,
    tokenize,
)
from mtdnn.spec import Spec, load_spec

# (task, split) -> (file, README row count, header, text columns, label column or None, id column)
GLUE_FILES = {
    ("cola", "train"): ("CoLA/train.tsv", 8551, False, (3,), 1, None),
    ("cola", "dev"): ("CoLA/dev.tsv", 1043, False, (3,), 1, None),
    ("cola", "test"): ("CoLA/test.tsv", 1063, True, (1,), None, 0),
    ("sst2", "train"): ("SST-2/train.tsv", 67349, True, (0,), 1, None),
    ("sst2", "dev"): ("SST-2/dev.tsv", 872, True, (0,), 1, None),
    ("sst2", "test"): ("SST-2/test.tsv", 1821, True, (1,), None, 0),
    ("mrpc", "train"): ("MRPC/train.tsv", 3668, True, (3, 4), 0, None),
    ("mrpc", "dev"): ("MRPC/dev.tsv", 408, True, (3, 4), 0, None),
    ("mrpc", "test"): ("MRPC/test.tsv", 1725, True, (3, 4), None, 0),
    ("stsb", "train"): ("STS-B/train.tsv", 5749, True, (7, 8), 9, None),
    ("stsb", "dev"): ("STS-B/dev.tsv", 1500, True, (7, 8), 9, None),
    ("stsb", "test"): ("STS-B/test.tsv", 1379, True, (7, 8), None, 0),
    ("qqp", "train"): ("QQP/train.sample.tsv", 23496, True, (3, 4), 5, None),
    ("mnli", "train"): ("MNLI/train.sample.tsv", 9999, True, (8, 9), 11, None),
    ("mnli", "dev"): ("MNLI/dev_matched.tsv", 9815, True, (8, 9), 15, None),
    ("qnli", "train"): ("QNLI/train.sample.tsv", 9999, True, (1, 2), 3, None),
    ("qnli", "dev"): ("QNLI/dev.tsv", 5463, True, (1, 2), 3, None),
    ("qnli", "test"): ("QNLI/test.tsv", 5463, True, (1, 2), None, 0),
    ("rte", "train"): ("RTE/train.tsv", 2490, True, (1, 2), 3, None),
    ("rte", "dev"): ("RTE/dev.tsv", 277, True, (1, 2), 3, None),
    ("rte", "test"): ("RTE/test.tsv", 3000, True, (1, 2), None, 0),
    ("wnli", "train"): ("WNLI/train.tsv", 635, True, (1, 2), 3, None),
    ("wnli", "dev"): ("WNLI/dev.tsv", 71, True, (1, 2), 3, None),
    ("wnli", "test"): ("WNLI/test.tsv", 146, True, (1, 2), None, 0),
    ("wikiqa", "train"): ("WikiQA/train.tsv", 8672, False, (0, 1), 2, None),
    ("wikiqa", "dev"): ("WikiQA/dev.tsv", 1126, False, (0, 1), 2, None),
    ("wikiqa", "test"): ("WikiQA/test.tsv", 2341, False, (0, 1), 2, None),
}


def raw_rows(path: Path, header: bool) -> list[list[str]]:
    """The reference reading of the README: csv with quoting off (and the header row dropped)."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[1:] if header else rows


@pytest.fixture(scope="module")
def glue_spec(glue: Path) -> Spec:
    return load_spec(SPECS / "glue.yaml", [f"data_dir={glue}"])


@pytest.fixture(scope="module")
def wikiqa_spec(glue: Path) -> Spec:
    return load_spec(SPECS / "wikiqa.yaml", [f"data_dir={glue}"])


def spec_of(tmp_path: Path, tasks_yaml: str) -> Spec:
    """A spec whose tasks read files of tmp_path."""
    return load_spec(write_spec(tmp_path / "spec.yaml", f"encoder: x\ntasks:\n{tasks_yaml}"))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- real GLUE files -----------------------------------------------------------------------------


def test_every_split_of_the_shipped_specs_is_covered(glue_spec: Spec, wikiqa_spec: Spec):
    shipped = {(t.name, s) for spec in (glue_spec, wikiqa_spec) for t in spec.tasks
               for s in available_splits(spec, t)}
    assert shipped == set(GLUE_FILES)


@pytest.mark.parametrize("task_split", list(GLUE_FILES), ids=lambda ts: "-".join(ts))
def test_glue_file_reads_like_csv_without_quoting(task_split, glue: Path, glue_spec: Spec,
                                                 wikiqa_spec: Spec):
    name, split = task_split
    file, count, header, text_cols, label_col, id_col = GLUE_FILES[task_split]
    spec = wikiqa_spec if name == "wikiqa" else glue_spec
    task = spec.task(name)
    rows = read_split(spec, task, split)
    ref = raw_rows(glue / file, header)

    assert len(rows) == len(ref) == count  # the README's table
    assert rows.where == str(glue / file)
    for got, col in zip((rows.text_a, rows.text_b)[:len(text_cols)], text_cols, strict=True):
        # Whole columns, which includes the first and the last row.
        assert got[0] == ref[0][col] and got[-1] == ref[-1][col]
        assert got == [r[col] for r in ref]
    if len(text_cols) == 1:
        assert rows.text_b is None
    if id_col is not None:
        assert rows.ids == [r[id_col] for r in ref]
    else:
        assert rows.ids == [str(i) for i in range(count)]
    if label_col is None:
        assert rows.labels is None
    elif task.type == "classification":
        assert rows.labels == [task.labels.index(r[label_col]) for r in ref]
        assert set(rows.labels) == set(range(task.num_labels))  # every label occurs
    elif task.type == "regression":
        assert rows.labels == [float(r[label_col]) for r in ref]
    else:
        assert rows.labels == [int(r[label_col] == "1") for r in ref]
        assert set(rows.labels) == {0, 1}
    assert (rows.query_ids is not None) == (task.type == "ranking")


def test_rte_keeps_double_quotes(glue: Path, glue_spec: Spec):
    # Line 14 of RTE/train.tsv: `... said it found "extensive" additional damage ...`. Default CSV
    # quoting would treat the quotes as field delimiters.
    rows = read_split(glue_spec, glue_spec.task("rte"), "train")
    lines = (glue / "RTE" / "train.tsv").read_text(encoding="utf-8").split("\n")[1:]
    quoted = [i for i, line in enumerate(lines) if '"' in line]
    assert len(quoted) >= 70  # the README: 70 rows are changed by default quoting
    assert rows.text_a[12] == lines[12].split("\t")[1]
    assert '"extensive"' in rows.text_a[12]
    for i in quoted:
        assert [rows.text_a[i], rows.text_b[i]] == lines[i].split("\t")[1:3]


def test_mrpc_bom_does_not_hide_the_quality_column(glue: Path, glue_spec: Spec):
    path = glue / "MRPC" / "train.tsv"
    assert path.read_bytes().startswith(b"\xef\xbb\xbfQuality\t")  # the file does start with one
    rows = read_split(glue_spec, glue_spec.task("mrpc"), "train")
    assert rows.labels[:3] == [int(r[0]) for r in raw_rows(path, True)[:3]]


def test_cola_headerless_keeps_the_first_row(glue_spec: Spec):
    rows = read_split(glue_spec, glue_spec.task("cola"), "train")
    first = "Our friends won't buy this analysis, let alone the next one we propose."
    assert rows.text_a[0] == first
    assert rows.labels[0] == 1


def test_mnli_label_ids_follow_the_label_list(glue: Path, glue_spec: Spec):
    rows = read_split(glue_spec, glue_spec.task("mnli"), "dev")
    gold = [r[15] for r in raw_rows(glue / "MNLI" / "dev_matched.tsv", True)]
    assert glue_spec.task("mnli").labels == ("entailment", "neutral", "contradiction")
    assert Counter(rows.labels) == {0: gold.count("entailment"), 1: gold.count("neutral"),
                                    2: gold.count("contradiction")}
    # Reordering the list reorders the ids.
    reordered = "tasks.mnli.labels=[contradiction, entailment, neutral]"
    spec = load_spec(SPECS / "glue.yaml", [f"data_dir={glue}", reordered])
    again = read_split(spec, spec.task("mnli"), "dev")
    assert again.labels == [{0: 1, 1: 2, 2: 0}[x] for x in rows.labels]


def test_stsb_labels_are_floats(glue_spec: Spec):
    rows = read_split(glue_spec, glue_spec.task("stsb"), "dev")
    assert all(type(x) is float for x in rows.labels)
    assert min(rows.labels) == 0.0 and max(rows.labels) == 5.0


@pytest.mark.parametrize("split,questions", [("train", 873), ("dev", 122), ("test", 237)])
def test_wikiqa_query_ids_group_rows_by_question(split: str, questions: int, wikiqa_spec: Spec):
    rows = read_split(wikiqa_spec, wikiqa_spec.task("wikiqa"), split)
    assert len(set(rows.query_ids)) == questions
    by_query: dict[int, set[str]] = {}
    for q, text in zip(rows.query_ids, rows.text_a, strict=True):
        by_query.setdefault(q, set()).add(text)
    assert all(len(texts) == 1 for texts in by_query.values())  # one question per id
    assert len({next(iter(t)) for t in by_query.values()}) == questions  # one id per question
    assert rows.query_ids[0] == 0 and max(rows.query_ids) == questions - 1
    positives = {q for q, y in zip(rows.query_ids, rows.labels, strict=True) if y == 1}
    assert len(positives) == questions  # the README: every question has a correct candidate


def test_max_examples_limits(glue: Path):
    spec = load_spec(SPECS / "glue.yaml", [f"data_dir={glue}", "tasks.rte.max_train_examples=10",
                                           "tasks.rte.max_eval_examples=4"], tasks=["rte"])
    task = spec.task("rte")
    full = raw_rows(glue / "RTE" / "train.tsv", True)
    train = read_split(spec, task, "train")
    assert train.text_a == [r[1] for r in full[:10]]
    assert train.labels == [task.labels.index(r[3]) for r in full[:10]]
    assert len(read_split(spec, task, "dev")) == 4
    assert read_split(spec, task, "test").ids == ["0", "1", "2", "3"]


def test_ranking_limits_count_queries(glue: Path):
    spec = load_spec(SPECS / "wikiqa.yaml", [f"data_dir={glue}",
                                             "tasks.wikiqa.max_train_examples=3"])
    rows = read_split(spec, spec.task("wikiqa"), "train")
    full = raw_rows(glue / "WikiQA" / "train.tsv", False)
    first3 = list(dict.fromkeys(r[0] for r in full))[:3]
    assert rows.text_a == [r[0] for r in full if r[0] in first3]
    assert sorted(set(rows.query_ids)) == [0, 1, 2]


# --- local files ---------------------------------------------------------------------------------


def test_na_and_null_stay_strings(tmp_path: Path):
    write(tmp_path / "train.tsv", "id\ttext\tlabel\nNA\tNA\tyes\nnull\tnull\tno\nNone\tNone\tyes\n"
                                  "7\t\tNA\n")
    spec = spec_of(tmp_path, """
  t:
    type: classification
    text: [text]
    id: id
    labels: ["yes", "no", "NA"]
    files: {train: train.tsv}
""")
    rows = read_split(spec, spec.task("t"), "train")
    assert rows.text_a == ["NA", "null", "None", ""]
    assert rows.ids == ["NA", "null", "None", "7"]
    assert rows.labels == [0, 1, 0, 2]


def test_csv_with_standard_quoting(tmp_path: Path):
    write(tmp_path / "train.csv", 'label,premise,hypothesis\nyes,"a, quoted ""text""",plain\n'
                                  'no,"two\nlines",b\n')
    spec = spec_of(tmp_path, """
  t:
    type: classification
    text: [premise, hypothesis]
    labels: ["no", "yes"]
    files: {train: train.csv}
""")
    rows = read_split(spec, spec.task("t"), "train")
    assert rows.text_a == ['a, quoted "text"', "two\nlines"]
    assert rows.text_b == ["plain", "b"]
    assert rows.labels == [1, 0]


def test_csv_line_numbers_count_lines_of_multiline_fields(tmp_path: Path):
    path = write(tmp_path / "train.csv", 'label,s\nyes,"two\nlines"\nmaybe,x\n')
    spec = spec_of(tmp_path, """
  t: {type: classification, text: [s], labels: ["no", "yes"], files: {train: train.csv}}
""")
    with pytest.raises(DataError, match=re.escape(f"{path}: 1 problem(s):\n  - line 4: label "
                                                  "'maybe' is not in tasks.t.labels")):
        read_split(spec, spec.task("t"), "train")


def test_jsonl_problems(tmp_path: Path):
    write(tmp_path / "train.jsonl", '{"s": "a", "y": "1"}\n\n[1, 2]\n')
    write(tmp_path / "dev.jsonl", '{"s": "a", "y": "1"}\n{"s": "b", y: 0}\n')
    write(tmp_path / "test.jsonl", '{"s": "a"}\n{"s": "b", "other": 1}\n')
    spec = spec_of(tmp_path, """
  t:
    type: classification
    text: [s]
    label: y
    labels: ["0", "1"]
    files: {train: train.jsonl, dev: dev.jsonl, test: test.jsonl}
""")
    task = spec.task("t")
    with pytest.raises(DataError, match=re.escape(
            'line 3: expected a JSON object ({"column": value, ...}), got list')):
        read_split(spec, task, "train")
    with pytest.raises(DataError, match=re.escape("line 2: not valid JSON (Expecting property "
                                                  "name enclosed in double quotes)")):
        read_split(spec, task, "dev")
    test = read_split(spec, task, "test")  # no label key in any record: an unlabelled split
    assert (test.text_a, test.labels) == (["a", "b"], None)


def test_jsonl_with_named_columns(tmp_path: Path):
    records = [{"q": "what?", "a": "that", "score": 4.5, "uid": 11},
               {"q": "who?", "a": "them", "score": 1, "uid": 12}]
    write(tmp_path / "train.jsonl", "\n".join(json.dumps(r) for r in records) + "\n\n")
    write(tmp_path / "data.txt", json.dumps(records[0]) + "\n")
    spec = spec_of(tmp_path, """
  t:
    type: regression
    text: [q, a]
    label: score
    id: uid
    files:
      train: train.jsonl
      dev: {path: data.txt, format: jsonl}
""")
    rows = read_split(spec, spec.task("t"), "train")
    assert (rows.text_a, rows.text_b, rows.labels, rows.ids) == (
        ["what?", "who?"], ["that", "them"], [4.5, 1.0], ["11", "12"])
    assert read_split(spec, spec.task("t"), "dev").text_a == ["what?"]


def test_headerless_positions_and_per_file_columns(tmp_path: Path):
    write(tmp_path / "train.tsv", "pos\tx\tfirst sentence\n")
    write(tmp_path / "dev.tsv", "neg\tsecond sentence\n")
    spec = spec_of(tmp_path, """
  t:
    type: classification
    text: [1]
    label: 0
    labels: [neg, pos]
    files:
      train: {path: train.tsv, header: false, text: [2]}
      dev: {path: dev.tsv, header: false}
""")
    train = read_split(spec, spec.task("t"), "train")
    assert (train.text_a, train.labels) == (["first sentence"], [1])
    dev = read_split(spec, spec.task("t"), "dev")
    assert (dev.text_a, dev.labels) == (["second sentence"], [0])


def test_headerless_test_file_without_labels(tmp_path: Path):
    write(tmp_path / "train.tsv", "a\tb\t1\n")
    write(tmp_path / "test.tsv", "c\td\n")  # no label column, as GLUE test sets
    spec = spec_of(tmp_path, """
  t:
    type: classification
    text: [0, 1]
    label: 2
    labels: ["0", "1"]
    files:
      train: {path: train.tsv, header: false}
      test: {path: test.tsv, header: false}
""")
    test = read_split(spec, spec.task("t"), "test")
    assert (test.text_a, test.text_b, test.labels) == (["c"], ["d"], None)


def test_column_name_in_a_headerless_file(tmp_path: Path):
    write(tmp_path / "train.tsv", "a\t1\n")
    spec = spec_of(tmp_path, """
  t:
    type: regression
    text: [sentence]
    label: 1
    files: {train: {path: train.tsv, header: false}}
""")
    with pytest.raises(DataError, match=re.escape(
            "tasks.t.files.train.text: column 'sentence' given by name, but the file is read "
            "without a header (header: false): give its 0-based position instead")):
        read_split(spec, spec.task("t"), "train")


def test_unknown_column_name_lists_the_header(tmp_path: Path):
    write(tmp_path / "train.tsv", "sentence\tscore\na\t1\n")
    spec = spec_of(tmp_path, """
  t:
    type: regression
    text: [sentence]
    files: {train: train.tsv}
""")
    with pytest.raises(DataError, match=re.escape(
            "tasks.t.files.train.label: no column 'label' in the header ['sentence', 'score'] "
            "(fix the column name, or set header: false and use positions)")):
        read_split(spec, spec.task("t"), "train")


def test_label_outside_the_list(tmp_path: Path):
    path = write(tmp_path / "train.tsv", "s\tlabel\na\tyes\nb\tmaybe\nc\tno\n")
    spec = spec_of(tmp_path, """
  t:
    type: classification
    text: [s]
    labels: ["no", "yes"]
    files: {train: train.tsv}
""")
    with pytest.raises(DataError, match=re.escape(
            f"{path}: 1 problem(s):\n  - line 3: label 'maybe' is not in tasks.t.labels "
            "['no', 'yes'] (add it to the list or fix the row)")):
        read_split(spec, spec.task("t"), "train")


def test_rows_with_the_wrong_number_of_fields(tmp_path: Path):
    path = write(tmp_path / "train.tsv", "s\tlabel\na\t1\nb\tstray\t0\nc\t0\n\nd\n")
    spec = spec_of(tmp_path, """
  t:
    type: regression
    text: [s]
    files: {train: train.tsv}
""")
    with pytest.raises(DataError) as e:
        read_split(spec, spec.task("t"), "train")
    assert e.value.source == str(path)
    assert e.value.problems == [  # the empty line 5 is skipped but still counted
        "line 3: 3 fields, the header has 2 (a stray tab or newline inside a field? TSV is read "
        "without quoting)",
        "line 6: 1 fields, the header has 2 (a stray tab or newline inside a field? TSV is read "
        "without quoting)",
    ]


def test_many_bad_rows_are_capped(tmp_path: Path):
    write(tmp_path / "train.tsv", "s\tlabel\n" + "x\tbad\n" * 25)
    spec = spec_of(tmp_path, """
  t:
    type: regression
    text: [s]
    files: {train: train.tsv}
""")
    with pytest.raises(DataError) as e:
        read_split(spec, spec.task("t"), "train")
    assert len(e.value.problems) == 21
    assert e.value.problems[0] == ("line 2: label 'bad' is not a number (regression tasks need "
                                   "numeric labels)")
    assert e.value.problems[-1] == "(and 5 more)"


def test_empty_label_and_missing_split(tmp_path: Path):
    write(tmp_path / "train.tsv", "s\tlabel\na\t\n")
    spec = spec_of(tmp_path, """
  t:
    type: classification
    text: [s]
    labels: ["0", "1"]
    files: {train: train.tsv}
""")
    with pytest.raises(DataError, match=re.escape(
            "line 2: empty label (every train row needs one)")):
        read_split(spec, spec.task("t"), "train")
    with pytest.raises(DataError, match=re.escape("tasks.t: no 'dev' split (it has ['train'])")):
        read_split(spec, spec.task("t"), "dev")


# --- Hub datasets, without network ---------------------------------------------------------------


HUB_TASKS = """
  rte:
    type: classification
    text: [sentence1, sentence2]
    labels: [not_entailment, entailment]   # the Hub's order is the reverse
    hub: {path: nyu-mll/glue, name: rte, revision: r1, splits: {train: train, dev: validation,
          test: test}, id: idx}
  sst2:
    type: classification
    text: [sentence]
    labels: ["0", "1"]
    hub: {path: nyu-mll/glue, name: sst2, splits: {train: train, test: test}}
  sst2_names:
    type: classification
    text: [sentence]
    labels: [neg, pos]
    hub: {path: nyu-mll/glue, name: sst2}
"""


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Replaces `datasets.load_dataset` by in-memory GLUE-like tables; returns the calls made."""
    rte = datasets.Features({"sentence1": datasets.Value("string"),
                             "sentence2": datasets.Value("string"),
                             "label": datasets.ClassLabel(names=["entailment", "not_entailment"]),
                             "idx": datasets.Value("int32")})
    sst2 = datasets.Features({"sentence": datasets.Value("string"),
                              "label": datasets.ClassLabel(names=["negative", "positive"])})
    tables = {
        ("rte", "train"): datasets.Dataset.from_dict(
            {"sentence1": ["p1", "p2", "p3"], "sentence2": ["h1", "h2", "h3"], "label": [0, 1, 0],
             "idx": [5, 6, 7]}, features=rte),
        ("rte", "validation"): datasets.Dataset.from_dict(
            {"sentence1": ["p4"], "sentence1_typo": ["x"], "label": [1], "idx": [0]}),
        ("rte", "test"): datasets.Dataset.from_dict(
            {"sentence1": ["p5", "p6"], "sentence2": ["h5", "h6"], "label": [-1, -1],
             "idx": [0, 1]}, features=rte),
        ("sst2", "train"): datasets.Dataset.from_dict(
            {"sentence": ["bad", "good", "fine"], "label": [0, 1, 1]}, features=sst2),
    }
    calls = []

    def load_dataset(path, name=None, split=None, revision=None, **kwargs):
        calls.append((path, name, split, revision))
        if (name, split) not in tables:
            raise ConnectionError("Couldn't reach the Hub")
        return tables[name, split]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return spec_of(tmp_path, HUB_TASKS), calls


def test_hub_class_names_listed_by_the_spec_are_used(hub):
    spec, calls = hub
    rows = read_split(spec, spec.task("rte"), "train")
    assert calls == [("nyu-mll/glue", "rte", "train", "r1")]
    assert (rows.text_a, rows.text_b, rows.ids) == (["p1", "p2", "p3"], ["h1", "h2", "h3"],
                                                    ["5", "6", "7"])
    # Hub ids 0/1/0 are entailment/not_entailment/entailment: the spec's ids of those names.
    assert rows.labels == [1, 0, 1]
    assert rows.where == "hub dataset nyu-mll/glue (rte)"


def test_hub_class_ids_as_text_when_the_spec_lists_no_names(hub):
    spec, _ = hub
    # negative/positive are not in the spec's list ["0", "1"]: the ids are read as "0"/"1".
    assert read_split(spec, spec.task("sst2"), "train").labels == [0, 1, 1]
    # Neither the names nor the ids are in [neg, pos]: each row is reported.
    with pytest.raises(DataError, match=re.escape(
            "hub dataset nyu-mll/glue (sst2): 3 problem(s):\n  - row 0: label '0' is not in "
            "tasks.sst2_names.labels ['neg', 'pos'] (add it to the list or fix the row)")):
        read_split(spec, spec.task("sst2_names"), "train")


def test_hub_test_split_without_labels(hub):
    spec, calls = hub
    rows = read_split(spec, spec.task("rte"), "test")
    assert calls[-1] == ("nyu-mll/glue", "rte", "test", "r1")
    assert rows.labels is None
    assert rows.text_a == ["p5", "p6"] and rows.ids == ["0", "1"]


def test_hub_missing_column_names_the_available_ones(hub):
    spec, calls = hub
    with pytest.raises(DataError, match=re.escape(
            "tasks.rte.hub: no column(s) ['sentence2'] in split 'validation'; it has "
            "['sentence1', 'sentence1_typo', 'label', 'idx'] "
            "(set tasks.rte.hub.text / label / id)")):
        read_split(spec, spec.task("rte"), "dev")
    assert calls[-1][2] == "validation"


def test_hub_unreachable(hub):
    spec, _ = hub
    with pytest.raises(DataError, match=re.escape(
            "hub dataset nyu-mll/glue (sst2): 1 problem(s):\n  - split 'test' could not be "
            "loaded: Couldn't reach the Hub (offline? set data_dir to a local copy")):
        read_split(spec, spec.task("sst2"), "test")


def test_hub_ranking_and_regression(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    wiki = datasets.Dataset.from_dict(
        {"question": ["q1", "q1", "q2", "q1"], "answer": ["a", "b", "c", "d"],
         "label": [0, 1, 1, 0]},
        features=datasets.Features({"question": datasets.Value("string"),
                                    "answer": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["0", "1"])}))
    stsb = datasets.Dataset.from_dict({"s": ["x", "y"], "label": [0.25, 4.0]})
    tables = {"microsoft/wiki_qa": wiki, "stsb": stsb}
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda path, name=None, **kwargs: tables[name or path])
    spec = spec_of(tmp_path, """
  wikiqa:
    type: ranking
    text: [question, answer]
    hub: {path: microsoft/wiki_qa}
  stsb:
    type: regression
    text: [s]
    hub: {path: nyu-mll/glue, name: stsb}
""")
    rows = read_split(spec, spec.task("wikiqa"), "train")
    assert (rows.labels, rows.query_ids) == ([0, 1, 1, 0], [0, 0, 1, 0])
    assert read_split(spec, spec.task("stsb"), "dev").labels == [0.25, 4.0]


# --- ranking groups ------------------------------------------------------------------------------


def ranking_rows(query_ids: list[int], labels: list[int]) -> Rows:
    n = len(query_ids)
    return Rows(task="r", split="train", where="mem", text_a=[f"q{q}" for q in query_ids],
                text_b=[f"c{i}" for i in range(n)], labels=labels, ids=[str(i) for i in range(n)],
                query_ids=query_ids)


def test_ranking_groups_by_hand():
    #        row:  0  1  2  3  4  5  6  7  8  9 10 11
    query_ids = [0, 1, 0, 0, 2, 0, 1, 0, 1, 3, 0, 2]
    labels = [0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0]
    # query 0: positive 2, negatives 0 3 5 7 10; query 1: positives 1 6, negative 8;
    # query 2: no positive; query 3: no negative.
    rows = ranking_rows(query_ids, labels)
    assert ranking_groups(rows, max_candidates=3) == [
        [2, 0, 3], [2, 5, 7], [2, 10],
        [1, 8], [6, 8],
    ]
    assert ranking_groups(rows, max_candidates=8) == [[2, 0, 3, 5, 7, 10], [1, 8], [6, 8]]
    assert ranking_groups(rows, max_candidates=2) == [
        [2, 0], [2, 3], [2, 5], [2, 7], [2, 10], [1, 8], [6, 8]]


def test_ranking_groups_empty_without_signal():
    assert ranking_groups(ranking_rows([0, 0, 1], [1, 1, 0]), 4) == []


# --- tokenization --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(minilm_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


class CountingTokenizer:
    """Forwards to a tokenizer and counts the calls that tokenize."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tokenizer(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __getattr__(self, name: str):
        return getattr(self.tokenizer, name)


def pair_rows(labels: list | None = (1, 0, 1)) -> Rows:
    return Rows(task="p", split="dev", where="mem", text_a=["a cat sat", "short", "x " * 100],
                text_b=["on the mat", "yes", "y"], labels=None if labels is None else list(labels),
                ids=["0", "1", "2"])


def test_tokenize_columns_lengths_and_truncation(tokenizer):
    rows = pair_rows()
    ds = tokenize(rows, tokenizer, 16, for_training=False, use_cache=False)
    assert set(ds.column_names) == {"input_ids", "token_type_ids", "length", "labels", "index"}
    assert ds["index"] == [0, 1, 2]
    assert ds["labels"] == [1, 0, 1]
    for i, (a, b) in enumerate(zip(rows.text_a, rows.text_b, strict=True)):
        want = tokenizer(a, b, truncation=True, max_length=16)
        assert ds[i]["input_ids"] == want["input_ids"]
        assert ds[i]["token_type_ids"] == want["token_type_ids"]
        assert ds[i]["length"] == len(ds[i]["input_ids"])
    assert ds["length"][2] == 16  # truncated
    assert ds["length"][0] < 16 and ds[0]["input_ids"][-1] == tokenizer.sep_token_id
    single = Rows(task="s", split="test", where="mem", text_a=["one two"], text_b=None,
                  labels=None, ids=["0"])
    ds = tokenize(single, tokenizer, 16, for_training=False, use_cache=False)
    assert "labels" not in ds.column_names
    assert ds[0]["input_ids"] == tokenizer("one two")["input_ids"]


def test_tokenize_ranking_training_rows_are_groups(tokenizer):
    rows = ranking_rows([0, 0, 0, 1, 1], [0, 1, 0, 0, 1])
    flat = tokenize(rows, tokenizer, 16, for_training=False, use_cache=False)
    assert len(flat) == 5 and flat["labels"] == [0, 1, 0, 0, 1]
    ds = tokenize(rows, tokenizer, 16, for_training=True, max_candidates=2, use_cache=False)
    groups = ranking_groups(rows, 2)
    assert groups == [[1, 0], [1, 2], [4, 3]]
    assert len(ds) == 3
    assert ds["labels"] == [0, 0, 0]  # the relevant candidate comes first
    assert ds["index"] == [1, 1, 4]
    for row, group in zip(ds, groups, strict=True):
        assert row["input_ids"] == [flat[i]["input_ids"] for i in group]
        assert row["token_type_ids"] == [flat[i]["token_type_ids"] for i in group]
        assert row["length"] == sum(flat[i]["length"] for i in group)
    unlabelled = dataclasses.replace(rows, labels=None)
    with pytest.raises(DataError, match="tasks.r: ranking training rows need labels"):
        tokenize(unlabelled, tokenizer, 16, for_training=True, use_cache=False)


def test_tokenize_cache_is_reused(tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MTDNN_CACHE", str(tmp_path / "cache"))
    counting = CountingTokenizer(tokenizer)
    first = tokenize(pair_rows(), counting, 16, for_training=False)
    assert counting.calls == 1
    files = sorted((tmp_path / "cache" / "tokenized").glob("p-dev-*.arrow"))
    assert len(files) == 1
    second = tokenize(pair_rows(), counting, 16, for_training=False)
    assert counting.calls == 1  # loaded, not tokenized again
    assert [f["filename"] for f in second.cache_files] == [str(files[0])]
    assert second["input_ids"] == first["input_ids"]
    # Another max_len or other labels: another file.
    third = tokenize(pair_rows(), counting, 8, for_training=False)
    assert counting.calls == 2 and max(third["length"]) == 8
    tokenize(pair_rows((0, 0, 0)), counting, 16, for_training=False)
    assert counting.calls == 3
    assert len(list((tmp_path / "cache" / "tokenized").glob("p-dev-*.arrow"))) == 3


def test_tokenize_without_cache_writes_nothing(tokenizer, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MTDNN_CACHE", str(tmp_path / "cache"))
    counting = CountingTokenizer(tokenizer)
    tokenize(pair_rows(), counting, 16, for_training=False, use_cache=False)
    tokenize(pair_rows(), counting, 16, for_training=False, use_cache=False)
    assert counting.calls == 2
    assert not (tmp_path / "cache").exists()


# --- check_data ----------------------------------------------------------------------------------


def test_check_data_counts_rows(tmp_path: Path):
    write(tmp_path / "a.tsv", "s\tlabel\nx\t1\ny\t0\n")
    write(tmp_path / "b.tsv", "s\tlabel\nz\t0.5\n")
    spec = spec_of(tmp_path, """
  a: {type: classification, text: [s], labels: ["0", "1"], files: {train: a.tsv, dev: a.tsv}}
  b: {type: regression, text: [s], files: {train: b.tsv}}
""")
    assert check_data(spec) == {"a": {"train": 2, "dev": 2}, "b": {"train": 1}}
    assert check_data(spec, splits=["dev"]) == {"a": {"dev": 2}, "b": {}}


def test_check_data_collects_the_problems_of_all_tasks(tmp_path: Path):
    a = write(tmp_path / "a.tsv", "s\tlabel\nx\t2\n")
    b = write(tmp_path / "b.tsv", "s\tlabel\nz\thigh\n")
    r = write(tmp_path / "r.tsv", "q\tc\tlabel\nq1\tc1\t1\nq1\tc2\t0\n")
    spec = spec_of(tmp_path, """
  a: {type: classification, text: [s], labels: ["0", "1"], files: {train: a.tsv}}
  b: {type: regression, text: [s], files: {train: b.tsv}}
  r: {type: ranking, text: [q, c], positive_label: "yes", files: {train: r.tsv}}
""")
    with pytest.raises(DataError) as e:
        check_data(spec)
    assert e.value.source == str(tmp_path / "spec.yaml")
    assert e.value.problems == [
        f"{a}: line 2: label '2' is not in tasks.a.labels ['0', '1'] (add it to the list or fix "
        "the row)",
        f"{b}: line 2: label 'high' is not a number (regression tasks need numeric labels)",
        f"{r}: no query has both a relevant and an irrelevant candidate (positive_label is 'yes'; "
        "is that the right value?)",
    ]
    assert str(e.value).startswith(f"{tmp_path / 'spec.yaml'}: 3 problem(s):\n")
