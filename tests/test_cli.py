"""End-to-end tests of the `mtdnn` command (mtdnn/cli.py) on real GLUE rows.

Each subprocess costs seconds (torch and transformers are imported), so the real command runs only
where the process boundary matters: --help, train, and one predict (run while the in-process checks
run). Evaluate, the other predictions and the user errors call `main(argv)` in-process: the same
code path (the exit status is its return value), minus the interpreter start.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mtdnn.cli import main
from mtdnn.model import MultiTaskModel, TaskInfo

# OMP_NUM_THREADS=1: see _one_thread.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")


def start(*args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mtdnn.cli", *map(str, args)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def mtdnn(*args: object) -> subprocess.CompletedProcess:
    return finish(start(*args))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read_tsv(path: Path, header: bool = True) -> list:
    with open(path, encoding="utf-8", newline="") as f:
        reader = (csv.DictReader if header else csv.reader)(f, delimiter="\t",
                                                            quoting=csv.QUOTE_NONE)
        return list(reader)


def test_help_lists_the_subcommands():
    proc = mtdnn("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: mtdnn ")
    for command, text in (("validate", "check a task spec and read every data row"),
                          ("train", "train one shared encoder on all tasks of a spec"),
                          ("evaluate", "score a checkpoint on a labelled split of its tasks"),
                          ("predict", "predict with one task's head of a checkpoint")):
        assert f"    {command}" in proc.stdout and text in proc.stdout, command


def test_train_evaluate_predict_end_to_end(tiny_glue_spec, tmp_path: Path, glue: Path,
                                           capsys: pytest.CaptureFixture):
    # ---- train: key=value overrides, the results table on stdout
    spec = tiny_glue_spec(steps=4)
    proc = mtdnn("train", spec, "train.log_every=1", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    run, best = tmp_path / "run", tmp_path / "run" / "best"
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"best dev results (step {metrics['best_step']}), checkpoint {best}:" in proc.stdout
    for task, splits in metrics["tasks"].items():
        for m, v in splits["dev"].items():
            assert f"| {task} | {m} | {100 * v:.2f} |" in proc.stdout
    assert set(metrics["tasks"]) == {"rte", "stsb", "cola", "wikiqa"}
    assert [json.loads(line)["step"] for line in
            (run / "train_log.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 4]  # override

    # ---- predict, the real command: a pair task on the real RTE dev file (ids: its `index`).
    # It runs while the in-process checks below run.
    predicting = start("predict", best, "--task", "rte", "--input", glue / "RTE" / "dev.tsv",
                       "--output", tmp_path / "rte.jsonl")

    # ---- evaluate: a table, and JSON equal to the training run's metrics
    capsys.readouterr()
    assert main(["evaluate", str(best), "--tasks", "rte,stsb", "--output",
                 str(tmp_path / "m.json")]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| task | metric | value |\n|---|---|---:|\n")
    written = json.loads((tmp_path / "m.json").read_text())
    assert list(written) == ["rte", "stsb"]
    for task in ("rte", "stsb"):
        assert written[task]["dev"] == pytest.approx(metrics["tasks"][task]["dev"], abs=1e-6)
        for m, v in written[task]["dev"].items():
            assert f"| {task} | {m} | {100 * v:.2f} |" in table

    # ---- predict the other task types: single sentences, regression, ranking
    model = MultiTaskModel.from_pretrained(best)
    cola = tmp_path / "cola.tsv"
    sentences = [r[3] for r in read_tsv(glue / "CoLA" / "dev.tsv", header=False)[:12]]
    cola.write_text("sentence\n" + "".join(f"{s}\n" for s in sentences), encoding="utf-8")
    stsb = tmp_path / "stsb.tsv"
    lines = (glue / "STS-B" / "dev.tsv").read_text(encoding="utf-8").splitlines(True)
    stsb.write_text(lines[0] + "".join(lines[101:121]), encoding="utf-8")  # header + 20 rows
    wikiqa = tmp_path / "wikiqa.jsonl"
    qa = read_tsv(glue / "WikiQA" / "dev.tsv", header=False)[:15]
    wikiqa.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a, _ in qa),
                      encoding="utf-8")
    for task, path, n in (("cola", cola, 12), ("stsb", stsb, 20), ("wikiqa", wikiqa, 15)):
        out = tmp_path / f"{task}.out.jsonl"
        assert main(["predict", str(best), "--task", task, "--input", str(path),
                     "--output", str(out)]) == 0
        assert capsys.readouterr().out.strip() == f"wrote {n} predictions of task {task!r} to {out}"
        rows = read_jsonl(out)
        assert len(rows) == n
        if task == "cola":
            assert [r["id"] for r in rows] == [str(i) for i in range(n)]  # no id column: row number
            assert {r["label"] for r in rows} <= {"0", "1"}
            want = model.predict("cola", sentences)
            assert [r["label"] for r in rows] == [w["label"] for w in want]
        elif task == "stsb":
            assert [r["id"] for r in rows] == [r["index"] for r in read_tsv(stsb)]
            assert rows[0]["id"] == "100"
            assert all(set(r) == {"id", "score"} and isinstance(r["score"], float) for r in rows)
        else:
            want = model.predict("wikiqa", [(q, a) for q, a, _ in qa])
            assert [r["score"] for r in rows] == pytest.approx([w["score"] for w in want],
                                                               abs=1e-5)

    # ---- the real predict command's output
    rte_dev = read_tsv(glue / "RTE" / "dev.tsv")
    proc = finish(predicting)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote 277 predictions of task 'rte' to {tmp_path / 'rte.jsonl'}"
    rows = read_jsonl(tmp_path / "rte.jsonl")
    assert len(rows) == len(rte_dev) == 277
    assert [r["id"] for r in rows] == [r["index"] for r in rte_dev]
    assert {r["label"] for r in rows} <= {"entailment", "not_entailment"}
    expected = model.predict("rte", [(r["sentence1"], r["sentence2"]) for r in rte_dev[:16]])
    for row, want in zip(rows[:16], expected, strict=True):
        assert row["label"] == want["label"]
        assert row["probabilities"] == pytest.approx(want["probabilities"], abs=1e-5)
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)


# --- user errors: exit status 2, one message, no traceback ----------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained two-task checkpoint (enough for the error paths)."""
    from transformers import AutoTokenizer

    from mtdnn.model import load_encoder

    tasks = [TaskInfo("rte", "classification", ["entailment", "not_entailment"],
                      ["sentence1", "sentence2"], ["accuracy"]),
             TaskInfo("cola", "classification", ["0", "1"], ["sentence"],
                      ["matthews_correlation"])]
    model = MultiTaskModel(load_encoder(tiny_bert), tasks)
    path = tmp_path_factory.mktemp("cli") / "ckpt"
    model.save_pretrained(path, tokenizer=AutoTokenizer.from_pretrained(tiny_bert))
    return path


def test_predict_unknown_task(checkpoint: Path, tmp_path: Path, glue: Path,
                              capsys: pytest.CaptureFixture):
    assert main(["predict", str(checkpoint), "--task", "colla", "--input",
                 str(glue / "RTE" / "dev.tsv"), "--output", str(tmp_path / "out.jsonl")]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"error: {checkpoint}: unknown task 'colla'; did you mean 'cola'? "
                            "(known: cola, rte)\n")
    assert captured.out == ""
    assert not (tmp_path / "out.jsonl").exists()


def test_bad_override_names_the_key(tiny_glue_spec, tmp_path: Path,
                                    capsys: pytest.CaptureFixture):
    spec = tiny_glue_spec()
    assert main(["train", str(spec), "train.batch_size=abc", "train.learning_rate=fast"]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"error: {spec}: 2 problem(s):\n"
                            "  - train.learning_rate: expected a number, got 'fast'\n"
                            "  - train.batch_size: expected an integer, got 'abc'\n")
    assert not (tmp_path / "run").exists()  # nothing started


def test_missing_checkpoint_directory(tmp_path: Path, capsys: pytest.CaptureFixture):
    missing = tmp_path / "runs" / "nope"
    for argv in (["evaluate", str(missing)],
                 ["predict", str(missing), "--task", "rte", "--input", "x.tsv", "--output", "y"]):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == (f"error: {missing}: directory not found (give a checkpoint "
                                "directory written by `mtdnn train`, e.g. runs/tour/best)\n")
    missing.mkdir(parents=True)  # a directory, but not a checkpoint
    assert main(["evaluate", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"error: {missing}: not an mtdnn checkpoint (no mtdnn.json); give a directory written by "
        "`mtdnn train`, e.g. runs/tour/best\n")


def test_predict_input_problems(checkpoint: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture):
    out = str(tmp_path / "out.jsonl")
    assert main(["predict", str(checkpoint), "--task", "rte", "--input",
                 str(tmp_path / "absent.tsv"), "--output", out]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'absent.tsv'}: 1 problem(s):\n"
                                       "  - file not found (check the path)\n")
    wrong = tmp_path / "wrong.tsv"
    wrong.write_text("premise\thypothesis\nA.\tB.\n", encoding="utf-8")
    assert main(["predict", str(checkpoint), "--task", "rte", "--input", str(wrong),
                 "--output", out]) == 2
    assert capsys.readouterr().err == (
        f"error: {wrong}: 1 problem(s):\n  - no column(s) ['sentence1', 'sentence2'] in the header "
        "['premise', 'hypothesis'] (rename the columns, or pass --text-columns)\n")
    # --text-columns maps the file's own column names.
    assert main(["predict", str(checkpoint), "--task", "rte", "--input", str(wrong),
                 "--output", out, "--text-columns", "premise,hypothesis"]) == 0
    assert len(read_jsonl(Path(out))) == 1


def test_output_path_that_is_a_directory(checkpoint: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture):
    sentences = tmp_path / "cola.tsv"
    sentences.write_text("sentence\nThe cat sat.\n", encoding="utf-8")
    assert main(["predict", str(checkpoint), "--task", "cola", "--input", str(sentences),
                 "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --output: {tmp_path}: is a directory, or lies under a file; give the "
                   "path of the JSON lines file to write, e.g. preds/rte.jsonl\n")


# --- user errors and bugs ------------------------------------------------------------------------


def test_a_bug_keeps_its_traceback_and_exits_1(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture, tmp_path: Path):
    import mtdnn.evaluation

    def broken(*args, **kwargs):
        return {}["rte"]  # an internal KeyError: not the user's mistake

    monkeypatch.setattr(mtdnn.evaluation, "evaluate", broken)
    assert main(["evaluate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'rte'" in err
    assert err.rstrip().endswith("`pip show mtdnn torch transformers`.")
    assert "This is a bug in mtdnn (not a mistake in your input)" in err

    def oserror(*args, **kwargs):  # an OSError about no path of the user's: a bug as well
        raise OSError("connection reset")

    monkeypatch.setattr(mtdnn.evaluation, "evaluate", oserror)
    assert main(["evaluate", str(tmp_path)]) == 1
    assert "Traceback" in capsys.readouterr().err

    def denied(*args, **kwargs):  # a path the user gave that cannot be read: their fix
        raise PermissionError(13, "Permission denied", str(tmp_path / "m.json"))

    monkeypatch.setattr(mtdnn.evaluation, "evaluate", denied)
    assert main(["evaluate", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'm.json'}: Permission denied (check "
                                       "the path and its permissions)\n")
