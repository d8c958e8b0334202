"""Tests of task data (mtdnn/data.py): reading real GLUE files, local tsv/csv/jsonl, Hub datasets
(without network), every kind of bad input (each a DataError naming the file, line and fix), the
checks of `check_data`, and `read_texts`, the reader of `mtdnn predict`."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import datasets
import pytest
from conftest import SPECS, write_spec

from mtdnn.data import DataError, available_splits, check_data, read_split, read_texts
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
                                   "numeric labels: write the score as a number, e.g. 3.5)")
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


# --- bad input: every kind is a DataError naming the file, the line and the fix -----------------


def read_train(tmp_path: Path, task_yaml: str):
    spec = spec_of(tmp_path, f"  t: {task_yaml}\n")
    return read_split(spec, spec.task("t"), "train")


def problems_of(tmp_path: Path, task_yaml: str) -> tuple[str, list[str]]:
    with pytest.raises(DataError) as e:
        read_train(tmp_path, task_yaml)
    return e.value.source, e.value.problems


CLS_TSV = '{type: classification, text: [s], labels: ["0", "1"], files: {train: train.tsv}}'
CLS_CSV = '{type: classification, text: [s], labels: ["0", "1"], files: {train: train.csv}}'
REG_TSV = "{type: regression, text: [s], files: {train: train.tsv}}"


def test_latin1_bytes_name_the_line_and_the_fix(tmp_path: Path):
    path = tmp_path / "train.tsv"
    path.write_bytes(b"s\tlabel\nok\t1\ncaf\xe9 au lait\t0\n")
    assert problems_of(tmp_path, CLS_TSV) == (str(path), [
        "line 3: byte 0xe9 is not UTF-8 (near 'café au lait\\t0', read as Latin-1; the file is "
        "probably Latin-1 or Windows-1252): save the file as UTF-8"])


def test_a_bad_byte_far_into_the_file_names_its_own_line(tmp_path: Path):
    # Text files are decoded in blocks of several KB: the line must not be the block's first.
    path = tmp_path / "train.tsv"
    path.write_bytes(b"s\tlabel\n" + b"fine text\t1\n" * 5000 + b"na\xefve\t0\n" + b"x\t0\n" * 10)
    _, problems = problems_of(tmp_path, CLS_TSV)
    assert problems[0].startswith("line 5002: byte 0xef is not UTF-8")


def test_utf16_and_latin1_json_lines(tmp_path: Path):
    (tmp_path / "train.jsonl").write_bytes('{"s": "ü", "label": "1"}\n'.encode("utf-16"))
    assert problems_of(tmp_path, '{type: classification, text: [s], labels: ["0", "1"], '
                       "files: {train: train.jsonl}}")[1] == [
        "line 1: the file is UTF-16, not UTF-8 (save it as UTF-8)"]
    (tmp_path / "train.jsonl").write_bytes(b'{"s": "a", "label": "1"}\n{"s": "\xfc", '
                                           b'"label": "0"}\n')
    _, problems = problems_of(tmp_path, '{type: classification, text: [s], labels: ["0", "1"], '
                              "files: {train: train.jsonl}}")
    assert problems[0].startswith("line 2: byte 0xfc is not UTF-8")


@pytest.mark.parametrize("name", ["train.tsv", "train.csv"])
def test_fields_longer_than_the_csv_default_limit_are_read(tmp_path: Path, name: str):
    huge = "word " * 60_000  # 300,000 chars: csv's default limit is 131,072
    sep = "\t" if name.endswith("tsv") else ","
    write(tmp_path / name, f"s{sep}label\n{huge}{sep}1\nsmall{sep}0\n")
    rows = read_train(tmp_path, CLS_TSV if name.endswith("tsv") else CLS_CSV)
    assert rows.text_a == [huge, "small"] and rows.labels == [1, 0]


@pytest.mark.parametrize("name", ["train.tsv", "train.csv", "train.jsonl"])
def test_a_nul_byte_names_the_line(tmp_path: Path, name: str):
    sep = "\t" if name.endswith("tsv") else ","
    text = ('{"s": "a", "label": "1"}\n{"s": "b\x00", "label": "0"}\n' if name.endswith("jsonl")
            else f"s{sep}label\na{sep}1\nb\x00{sep}0\n")
    write(tmp_path / name, text)
    spec = CLS_TSV.replace("train.tsv", name)
    assert problems_of(tmp_path, spec) == (str(tmp_path / name), [
        "line 2: a NUL byte (\\x00): the file is binary or UTF-16, not UTF-8 text (save it as "
        "UTF-8 text)"] if name.endswith("jsonl") else [
        "line 3: a NUL byte (\\x00): the file is binary or UTF-16, not UTF-8 text (save it as "
        "UTF-8 text)"])


def test_csv_quoting_errors_name_the_line(tmp_path: Path):
    path = write(tmp_path / "train.csv", 's,label\nok,1\n"never closed,0\nmore,1\n')
    assert problems_of(tmp_path, CLS_CSV) == (str(path), [
        'line 3: a quoted field opens here and is not closed before the end of the file (close '
        'the quote; a quote inside a quoted field is written "")'])
    write(tmp_path / "train.csv", 's,label\nok,1\n"quoted" then not,0\n')
    assert problems_of(tmp_path, CLS_CSV)[1] == [
        "line 3: text after the closing quote of a field (',' expected after '\"'): quote the "
        'whole field and double the quotes inside it ("")']
    # A quote inside an unquoted field stays as it is (standard CSV).
    write(tmp_path / "train.csv", 's,label\nsay "hi",1\n')
    assert read_train(tmp_path, CLS_CSV).text_a == ['say "hi"']


def test_regression_labels_must_be_finite(tmp_path: Path):
    path = write(tmp_path / "train.tsv", "s\tlabel\na\t1.5\nb\tnan\nc\tinf\nd\t-Infinity\ne\t0\n")
    fix = "(a regression label is a score such as 3.5: fix the row or drop it)"
    assert problems_of(tmp_path, REG_TSV) == (str(path), [
        f"line 3: label 'nan' is not a finite number {fix}",
        f"line 4: label 'inf' is not a finite number {fix}",
        f"line 5: label '-Infinity' is not a finite number {fix}"])
    # Python's json reads NaN too.
    write(tmp_path / "train.jsonl", '{"s": "a", "label": NaN}\n{"s": "b", "label": true}\n')
    assert problems_of(tmp_path, "{type: regression, text: [s], files: {train: train.jsonl}}"
                       )[1] == [f"line 1: label NaN is not a finite number {fix}",
                                "line 2: label true (a JSON boolean) is not a number (write the "
                                "score as a number, e.g. 3.5)"]


def test_json_labels_of_the_wrong_type(tmp_path: Path):
    lines = [{"s": "ok", "y": "1"}, {"s": "int", "y": 0}, {"s": "list", "y": ["1"]},
             {"s": "dict", "y": {"v": 1}}, {"s": "bool", "y": True}, {"s": "float", "y": 1.0}]
    path = write(tmp_path / "train.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    spec = ('{type: classification, text: [s], label: y, labels: ["0", "1"], '
            "files: {train: train.jsonl}}")
    fix = "(write the label as one of them, in a JSON string: \"0\")"
    assert problems_of(tmp_path, spec) == (str(path), [
        'line 3: label ["1"] (a JSON array) is not one value (give each row a single label)',
        'line 4: label {"v": 1} (a JSON object) is not one value (give each row a single label)',
        f"line 5: label true (a JSON boolean) reads as 'True', which is not in tasks.t.labels "
        f"['0', '1'] {fix}",
        f"line 6: label 1.0 (a JSON number) reads as '1.0', which is not in tasks.t.labels "
        f"['0', '1'] {fix}"])
    # A boolean is a label when the list has its text; an int is read as its text.
    write(tmp_path / "train.jsonl", '{"s": "a", "y": true}\n{"s": "b", "y": false}\n')
    rows = read_train(tmp_path, spec.replace('["0", "1"]', '["False", "True"]'))
    assert rows.labels == [1, 0]


def test_json_ranking_labels_that_never_equal_positive_label(tmp_path: Path):
    write(tmp_path / "train.jsonl", '{"q": "q1", "c": "a", "y": true}\n'
                                    '{"q": "q1", "c": "b", "y": 0}\n')
    _, problems = problems_of(tmp_path, "{type: ranking, text: [q, c], label: y, "
                              "files: {train: train.jsonl}}")
    assert problems == [
        "line 1: label true (a JSON boolean) reads as 'True', which can never equal "
        "tasks.t.positive_label '1' (write relevance as 1/0 or \"1\"/\"0\", or set "
        "positive_label)"]


def test_json_texts_that_are_not_text(tmp_path: Path):
    lines = [{"s": "ok", "y": "1"}, {"s": 7, "y": "0"}, {"s": 2.5, "y": "0"},
             {"s": ["a", "b"], "y": "1"}, {"s": {"t": "x"}, "y": "1"}, {"s": None, "y": "1"},
             {"s": False, "y": "1"}, {"y": "1"}]
    path = write(tmp_path / "train.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    spec = ('{type: classification, text: [s], label: y, labels: ["0", "1"], '
            "files: {train: train.jsonl}}")
    fix = "not text (write the text as a string)"
    assert problems_of(tmp_path, spec) == (str(path), [
        f"line 4: text column 's' is [\"a\", \"b\"], a JSON array, {fix}",
        f"line 5: text column 's' is {{\"t\": \"x\"}}, a JSON object, {fix}",
        f"line 6: text column 's' is null, {fix}",
        f"line 7: text column 's' is false, a JSON boolean, {fix}",
        "line 8: missing text column(s) ['s'] (the row has keys ['y']; fix the row, or "
        "set tasks.t.files.train.text)"])
    write(tmp_path / "train.jsonl", "".join(json.dumps(r) + "\n" for r in lines[:3]))
    assert read_train(tmp_path, spec).text_a == ["ok", "7", "2.5"]  # numbers become text


def test_a_directory_an_empty_file_or_no_rows(tmp_path: Path):
    path = write(tmp_path / "train.tsv", "")
    assert problems_of(tmp_path, CLS_TSV) == (str(path), [
        "the file is empty (it needs a header row, then one row per example)"])
    write(tmp_path / "train.tsv", "s\tlabel\n\n")
    assert problems_of(tmp_path, CLS_TSV) == (str(path), [
        "the file has a header and no rows (an empty train split: fill the file, or remove "
        "tasks.t.files.train from the spec)"])
    write(tmp_path / "train.jsonl", "\n  \n")
    assert problems_of(tmp_path, '{type: classification, text: [s], labels: ["0", "1"], '
                       "files: {train: train.jsonl}}")[1] == [
        "the file has no rows (an empty train split: fill the file, or remove "
        "tasks.t.files.train from the spec)"]
    # The spec checks that the file exists when it is loaded; it may be gone or replaced later.
    write(tmp_path / "train.tsv", "s\tlabel\na\t1\n")
    spec = spec_of(tmp_path, f"  t: {CLS_TSV}\n")
    path.unlink()
    path.mkdir()
    with pytest.raises(DataError, match=re.escape(
            f"{path}: 1 problem(s):\n  - is a directory, not a data file")):
        read_split(spec, spec.task("t"), "train")
    path.rmdir()
    with pytest.raises(DataError, match=re.escape(f"{path}: 1 problem(s):\n  - file not found")):
        read_split(spec, spec.task("t"), "train")


def test_an_empty_test_split_is_an_error_too(tmp_path: Path):
    write(tmp_path / "train.tsv", "s\tlabel\na\t1\n")
    path = write(tmp_path / "test.tsv", "index\ts\n")
    spec = spec_of(tmp_path, '  t: {type: classification, text: [s], labels: ["0", "1"], '
                   "files: {train: train.tsv, test: test.tsv}}\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: 1 problem(s):\n  - the file has a "
                                                  "header and no rows (an empty test split")):
        read_split(spec, spec.task("t"), "test")


# --- ranking: a train split with nothing to learn ------------------------------------------------


def ranking_spec(tmp_path: Path, positive: str) -> Spec:
    return spec_of(tmp_path, "  r: {type: ranking, text: [q, c], positive_label: '" + positive +
                   "', files: {train: r.tsv, dev: r.tsv}}\n")


def test_ranking_train_split_without_positive_label(tmp_path: Path):
    path = write(tmp_path / "r.tsv", "q\tc\tlabel\nq1\ta\t1\nq1\tb\t0\nq2\tc\t0\n")
    spec = ranking_spec(tmp_path, "yes")
    with pytest.raises(DataError) as e:
        read_split(spec, spec.task("r"), "train")
    assert (e.value.source, e.value.problems) == (str(path), [
        "tasks.r.positive_label is 'yes', but no training label equals it (labels seen, with row "
        "counts: {'0': 2, '1': 1}), so the task would train nothing (set positive_label to the "
        "label of a relevant candidate, or fix the rows)"])
    # Only training needs a relevant candidate per query: the same rows read as a dev split.
    assert read_split(spec, spec.task("r"), "dev").labels == [0, 0, 0]
    spec = ranking_spec(tmp_path, "1")  # the right value trains
    assert read_split(spec, spec.task("r"), "train").labels == [1, 0, 0]


def test_ranking_train_split_where_no_query_has_both_kinds(tmp_path: Path):
    path = write(tmp_path / "r.tsv", "q\tc\tlabel\nq1\ta\t1\nq1\tb\t1\nq2\tc\t0\n")
    spec = ranking_spec(tmp_path, "1")
    with pytest.raises(DataError) as e:
        read_split(spec, spec.task("r"), "train")
    assert (e.value.source, e.value.problems) == (str(path), [
        "no query has both a relevant and an irrelevant candidate (positive_label is '1'; labels "
        "seen, with row counts: {'1': 2, '0': 1}), so the task would train nothing (each query "
        "needs a candidate labelled '1' and one labelled otherwise)"])
    with pytest.raises(DataError, match=re.escape(
            "no query has both a relevant and an irrelevant candidate (positive_label is '1'; "
            "labels seen, with row counts: {'1': 2, '0': 1})")):
        check_data(spec)  # `mtdnn validate` reports it too, in the same words


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


def test_hub_bad_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    tables = {"stsb": datasets.Dataset.from_dict({"s": ["x", "y", "z"],
                                                  "label": [0.5, float("nan"), float("inf")]}),
              "texts": datasets.Dataset.from_dict({"s": ["x", None], "label": [1.0, 2.0]}),
              "empty": datasets.Dataset.from_dict({"s": [], "label": []})}
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda path, name=None, split=None, **kwargs: tables[name])
    spec = spec_of(tmp_path, "".join(
        f"  {name}: {{type: regression, text: [s], hub: {{path: glue, name: {name}}}}}\n"
        for name in tables))
    fix = "(a regression label is a score such as 3.5: fix the row or drop it)"
    with pytest.raises(DataError) as e:
        read_split(spec, spec.task("stsb"), "train")
    assert e.value.problems == [f"row 1: label NaN is not a finite number {fix}",
                                f"row 2: label Infinity is not a finite number {fix}"]
    with pytest.raises(DataError) as e:
        read_split(spec, spec.task("texts"), "train")
    assert e.value.problems == ["row 1: text column 's' is null, not text (write the text as a "
                                "string)"]
    with pytest.raises(DataError, match=re.escape("hub dataset glue (empty): 1 problem(s):\n"
                                                  "  - split 'train' has no rows")):
        read_split(spec, spec.task("empty"), "train")


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
        f"{b}: line 2: label 'high' is not a number (regression tasks need numeric labels: write "
        "the score as a number, e.g. 3.5)",
        f"{r}: tasks.r.positive_label is 'yes', but no training label equals it (labels seen, "
        "with row counts: {'1': 1, '0': 1}), so the task would train nothing (set positive_label "
        "to the label of a relevant candidate, or fix the rows)",
    ]
    assert str(e.value).startswith(f"{tmp_path / 'spec.yaml'}: 3 problem(s):\n")


# --- read_texts: the inputs of `mtdnn predict` ----------------------------------------------------


def test_read_texts_tsv_csv_and_json_lines(tmp_path: Path):
    # TSV without quoting (the quotes stay), the BOM dropped, ids from the `index` column.
    tsv = tmp_path / "in.tsv"
    tsv.write_bytes('\ufeffindex\tpremise\thypothesis\n7\ta "quoted" one\tNA\n9\tb\t\n'
                    .encode("utf-8"))
    assert read_texts(tsv, ["premise", "hypothesis"]) == (
        [('a "quoted" one', "NA"), ("b", "")], ["7", "9"])
    assert read_texts(tsv, ["hypothesis"]) == ([("NA",), ("",)], ["7", "9"])
    csv_path = write(tmp_path / "in.csv", 'text,idx\n"one, two",a1\n"three\nlines",a2\n')
    assert read_texts(csv_path, ["text"]) == ([("one, two",), ("three\nlines",)], ["a1", "a2"])
    # JSON lines: numbers become text; without an id key, ids are the row numbers.
    jsonl = write(tmp_path / "in.jsonl", '{"s": "x", "n": 3}\n\n{"s": "y", "n": 2.5}\n')
    assert read_texts(jsonl, ["s", "n"]) == ([("x", "3"), ("y", "2.5")], ["0", "1"])
    write(tmp_path / "in.txt", '{"id": 11, "s": "x"}\n')
    assert read_texts(tmp_path / "in.txt", ["s"], format="jsonl") == ([("x",)], ["11"])


def read_texts_problems(path: Path, columns: list[str], **kwargs) -> tuple[str, list[str]]:
    with pytest.raises(DataError) as e:
        read_texts(path, columns, **kwargs)
    return e.value.source, e.value.problems


def test_read_texts_bad_rows_name_the_file_and_line(tmp_path: Path):
    tsv = write(tmp_path / "in.tsv", "id\tpremise\thypothesis\n1\ta\tb\n2\tshort\n3\tc\td\te\n")
    assert read_texts_problems(tsv, ["premise", "hypothesis"]) == (str(tsv), [
        "line 3: 2 fields, the header has 3 (a stray tab or newline inside a field? TSV is read "
        "without quoting)",
        "line 4: 4 fields, the header has 3 (a stray tab or newline inside a field? TSV is read "
        "without quoting)"])
    assert read_texts_problems(tsv, ["premise", "sentence2"]) == (str(tsv), [
        "no column(s) ['sentence2'] in the header ['id', 'premise', 'hypothesis'] (rename the "
        "columns, or pass --text-columns)"])
    jsonl = write(tmp_path / "in.jsonl", '{"a": "x", "b": "y"}\n{"a": "x"}\n{"a": null, "b": 1}\n')
    assert read_texts_problems(jsonl, ["a", "b"]) == (str(jsonl), [
        "line 2: missing text column(s) ['b'] (the row has keys ['a']; rename the columns, or "
        "pass --text-columns)",
        "line 3: text column 'a' is null, not text (write the text as a string)"])
    write(tmp_path / "in.jsonl", '{"a": "x"}\n{"a": "y",}\n')
    assert read_texts_problems(jsonl, ["a"])[1] == [
        "line 2: not valid JSON (Expecting property name enclosed in double quotes): write one "
        "JSON object per line"]
    write(tmp_path / "in.jsonl", '{"id": 1, "a": "x"}\n{"a": "y"}\n')
    assert read_texts_problems(jsonl, ["a"])[1] == [
        "line 2: no id in column 'id' (give every row one)"]
    csv_path = write(tmp_path / "in.csv", 'a\n"open\n')
    assert read_texts_problems(csv_path, ["a"])[1][0].startswith(
        "line 2: a quoted field opens here and is not closed")
    latin1 = tmp_path / "latin1.tsv"
    latin1.write_bytes(b"a\nna\xefve\n")
    assert read_texts_problems(latin1, ["a"])[1][0].startswith("line 2: byte 0xef is not UTF-8")


def test_read_texts_empty_files_and_bad_paths(tmp_path: Path):
    for name, text, problem in [
            ("empty.tsv", "", "the file is empty (it needs a header row, then one row per "
             "example)"),
            ("header.csv", "a,b\n", "the file has a header and no rows (nothing to predict)"),
            ("blank.jsonl", "\n\n", "the file has no rows (nothing to predict)")]:
        path = write(tmp_path / name, text)
        assert read_texts_problems(path, ["a"]) == (str(path), [problem])
    assert read_texts_problems(tmp_path, ["a"]) == (str(tmp_path), [
        "is a directory, not a data file (give the path of the file in it, e.g. RTE/train.tsv)"])
    assert read_texts_problems(tmp_path / "nope.tsv", ["a"])[1] == [
        "file not found (check the path)"]
    write(tmp_path / "in.txt", "a\nb\n")
    assert read_texts_problems(tmp_path / "in.txt", ["a"])[1] == [
        "cannot tell the format from the extension '.txt': name the file .tsv, .csv or .jsonl, "
        "or give its format"]
    assert read_texts_problems(tmp_path / "in.txt", ["a"], format="xml")[1] == [
        "format 'xml' is not one of auto, tsv, csv, jsonl"]
