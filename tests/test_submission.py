"""Tests of mtdnn/submission.py on the real GLUE test files: a tiny trained checkpoint writes the
leaderboard files with every test row, the test files' ids, the head's own predictions and the
leaderboard's label strings; `mtdnn predict --glue-submission` reads another data_dir."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SPECS, write_spec

from mtdnn.submission import write_glue_submission

TEST_FILES = {"RTE.tsv": "RTE/test.tsv", "STS-B.tsv": "STS-B/test.tsv",
              "CoLA.tsv": "CoLA/test.tsv", "AX.tsv": "diagnostic/diagnostic.tsv"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_bert: str, glue: Path) -> Path:
    """rte, stsb, cola (GLUE, with test files), mnli (a GLUE task whose local copy has no test
    file, but the diagnostic set) and wikiqa (not GLUE), trained 2 steps on a few rows."""
    from mtdnn import load_spec, train

    root = tmp_path_factory.mktemp("submission-run")
    spec = write_spec(root / "spec.yaml", f"""
include: [{SPECS / 'glue.yaml'}, {SPECS / 'wikiqa.yaml'}]
use_tasks: [rte, stsb, cola, mnli, wikiqa]
encoder: {tiny_bert}
data_dir: {glue}
output_dir: {root / 'run'}
max_seq_length: 32  # short: the test predicts ~6,500 test rows
train: {{batch_size: 8, eval_batch_size: 16, max_steps: 2, report_to: [none]}}
tasks:  # max_eval_examples also caps test rows for `evaluate`; the submission lifts it
  rte: {{max_train_examples: 40, max_eval_examples: 24}}
  stsb: {{max_train_examples: 40, max_eval_examples: 24}}
  cola: {{max_train_examples: 40, max_eval_examples: 24}}
  mnli: {{max_train_examples: 40, max_eval_examples: 24}}
  wikiqa: {{max_train_examples: 6, max_eval_examples: 4}}
""")
    train(load_spec(spec), progress=False)
    return root / "run" / "best"


def read_tsv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_submission_files_cover_every_test_row(checkpoint: Path, glue: Path, tmp_path: Path):
    from mtdnn.model import MultiTaskModel

    result = write_glue_submission(checkpoint, tmp_path / "sub")
    assert [p.name for p in result.files] == ["RTE.tsv", "STS-B.tsv", "CoLA.tsv", "AX.tsv"]
    assert result.rows == {"RTE.tsv": 3000, "STS-B.tsv": 1379, "CoLA.tsv": 1063, "AX.tsv": 1104}
    assert set(result.skipped) == {"mnli", "wikiqa"}
    assert result.skipped["mnli"] == "no test split (tasks.mnli.files has none)"
    assert result.skipped["wikiqa"].startswith("not a GLUE task")
    assert result.missing == ["SST-2.tsv", "MRPC.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
                              "QNLI.tsv", "WNLI.tsv"]

    model = MultiTaskModel.from_pretrained(checkpoint)
    labels = {"RTE.tsv": {"entailment", "not_entailment"}, "CoLA.tsv": {"0", "1"},
              "AX.tsv": {"entailment", "neutral", "contradiction"}}
    for name, source in TEST_FILES.items():
        rows = read_tsv(tmp_path / "sub" / name)
        test = read_tsv(glue / source)
        assert rows[0] == ["index", "prediction"]
        assert [r[0] for r in rows[1:]] == [r[test[0].index("index")] for r in test[1:]]
        predictions = [r[1] for r in rows[1:]]
        if name == "STS-B.tsv":
            values = [float(p) for p in predictions]
            assert all(0.0 <= v <= 5.0 for v in values)
            assert all(len(p.split(".")[1]) == 3 for p in predictions)
        else:
            assert set(predictions) <= labels[name]
        # The head's own predictions, in the test file's order.
        task = {"RTE.tsv": "rte", "STS-B.tsv": "stsb", "CoLA.tsv": "cola", "AX.tsv": "mnli"}[name]
        columns = [test[0].index(c) for c in (["sentence"] if task == "cola" else
                                              ["sentence1", "sentence2"])]
        inputs = [tuple(r[c] for c in columns) for r in test[1:41]]
        expected = model.predict(task, inputs)
        if task == "stsb":
            assert values[:40] == pytest.approx([min(max(e["score"], 0), 5) for e in expected],
                                                abs=5e-4)
        else:
            assert predictions[:40] == [e["label"] for e in expected]


def truncated_glue(glue: Path, target: Path, rows: int) -> Path:
    """A data_dir like `glue`, with the test files of RTE, STS-B, CoLA and the diagnostic set cut
    to their first `rows` rows (other files linked)."""
    for entry in glue.iterdir():
        if not entry.is_dir():
            continue
        (target / entry.name).mkdir(parents=True)
        for f in entry.iterdir():
            if f"{entry.name}/{f.name}" in TEST_FILES.values():
                lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
                (target / entry.name / f.name).write_text("".join(lines[:rows + 1]),
                                                          encoding="utf-8")
            else:
                (target / entry.name / f.name).symlink_to(f)
    return target


def test_cli_glue_submission_reads_the_given_data_dir(checkpoint, glue, tmp_path):
    data = truncated_glue(glue, tmp_path / "glue", rows=10)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "mtdnn.cli", "predict", str(checkpoint),
                             "--glue-submission", str(tmp_path / "sub"), "--data-dir", str(data)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in TEST_FILES:
        assert f"wrote {tmp_path / 'sub' / name} (10 rows)" in result.stdout
        assert len(read_tsv(tmp_path / "sub" / name)) == 11
    assert "skipped mnli: no test split" in result.stdout
    assert "not written: SST-2.tsv, MRPC.tsv" in result.stdout


def test_cli_predict_names_what_is_missing(checkpoint, tmp_path, capsys):
    from mtdnn.cli import main

    assert main(["predict", str(checkpoint), "--task", "rte"]) == 2
    assert ("error: predict: needs --input, --output (one task's predictions), or "
            "--glue-submission DIR") in capsys.readouterr().err
    assert main(["predict", str(checkpoint), "--task", "rte", "--glue-submission",
                 str(tmp_path)]) == 2
    assert "drop --task (or drop --glue-submission)" in capsys.readouterr().err
