"""The multilabel_classification task type (mtdnn/tasks/multilabel.py) on the real GoEmotions files:
reading label sets (CSV-quoted TSV, names or positions, JSON lists, Hub lists of ClassLabels), the
metrics against sklearn, threshold tuning, training (alternating, joint, a head on a lower layer,
the task embedding, exact resume), evaluate / predict / export from the CLI, export parity and the
transformers pipeline, and the model card."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mtdnn.cli import main
from mtdnn.data import read_split
from mtdnn.errors import DataError, SpecError, UserError
from mtdnn.model import MultiTaskModel
from mtdnn.spec import load_spec, spec_from_dict
from mtdnn.tasks import task_type
from mtdnn.tasks.multilabel import (
    LabelSets,
    label_f1,
    label_set,
    macro_f1,
    micro_f1,
    sigmoid,
    subset_accuracy,
    tune_thresholds,
)
from mtdnn.trainer import train

SPEC = Path(__file__).resolve().parents[1] / "task_specs" / "goemotions.yaml"
KIND = task_type("multilabel_classification")


def names(more: Path) -> list[str]:
    return (more / "goemotions" / "emotions.txt").read_text(encoding="utf-8").split("\n")


def reference_rows(more: Path, split: str) -> list[tuple[str, list[int], str]]:
    """The data README's reader: csv with tab delimiter and standard quoting."""
    with open(more / "goemotions" / f"{split}.tsv", encoding="utf-8", newline="") as f:
        return [(t, [int(i) for i in ids.split(",")], cid)
                for t, ids, cid in csv.reader(f, delimiter="\t")]


def tiny_task(**settings) -> dict:
    return {"type": "multilabel_classification", "text": ["text"], "label": "labels",
            "labels": ["joy", "anger", "fear"], "files": {"train": "x.jsonl"}, **settings}


def spec_of(tmp_path: Path, **task) -> object:
    (tmp_path / "x.jsonl").touch()
    return spec_from_dict({"encoder": "e", "tasks": {"t": tiny_task(**task)}},
                          base_dir=tmp_path)


# --- the shipped spec and the real files --------------------------------------------------------


def test_shipped_spec_validates_with_and_without_data(more, monkeypatch, capsys):
    monkeypatch.setenv("MTDNN_MORE_DIR", "")
    assert main(["validate", str(SPEC), "--no-data"]) == 0
    monkeypatch.setenv("MTDNN_MORE_DIR", str(more))
    assert main(["validate", str(SPEC)]) == 0
    out = capsys.readouterr().out
    assert "goemotions   multilabel_classification files: train 43410, dev 5426, test 5427" in out
    task = load_spec(SPEC).task("goemotions")
    assert list(task.labels) == names(more)


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_goemotions_reads_as_the_readme_csv_reader(more, monkeypatch, split):
    monkeypatch.setenv("MTDNN_MORE_DIR", str(more))
    spec = load_spec(SPEC)
    rows = read_split(spec, spec.task("goemotions"), split)
    ref = reference_rows(more, split)
    assert isinstance(rows, LabelSets) and len(rows) == len(ref)
    assert rows.text_a == [t for t, _, _ in ref]  # quoted texts unquoted, the rest unchanged
    assert rows.ids == [c for _, _, c in ref]
    assert [[i for i, h in enumerate(x) if h] for x in rows.labels] == \
        [sorted(i) for _, i, _ in ref]
    counts = np.asarray(rows.labels).sum(0)
    # the data README's label counts (neutral, grief) and labels per row
    assert (counts[27], counts[16]) == {"train": (14219, 77), "dev": (1766, 13),
                                        "test": (1787, 6)}[split]
    if split == "dev":
        per_row = np.bincount(np.asarray(rows.labels).sum(1))
        assert per_row.tolist() == [0, 4548, 809, 62, 7]
        quoted = rows.text_a[rows.ids.index("edp5a2y")]
        assert quoted == ('color me embarrassed" I wonder what colour he\'d be if she showed '
                          "that text exchange to his missus. ")


# --- label sets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value, hot", [
    ("joy", [1, 0, 0]), ("anger,joy", [1, 1, 0]), ("0, 2", [1, 0, 1]), ("2", [0, 0, 1]),
    (["fear", 0], [1, 0, 1]), ([1], [0, 1, 0]), (2, [0, 0, 1]), (["2"], [0, 0, 1]), ([], [0, 0, 0]),
])
def test_a_label_is_a_name_or_a_position(tmp_path, value, hot):
    task = spec_of(tmp_path).tasks[0]
    assert label_set(task, value, {"joy": 0, "anger": 1, "fear": 2}) == (hot, None)


@pytest.mark.parametrize("value, problem", [
    ("", "empty label set (every row needs its labels"),
    ("joy,sad", "label 'sad' in 'joy,sad' is not one of tasks.t.labels or a position 0..2 in it"),
    ("3", "label '3' in '3' is not one of tasks.t.labels or a position 0..2 in it"),
    ([-1], "label -1 in [-1] is not one of"),
    ("0,,2", "an empty label (two separators in a row, or one at an end?) in '0,,2'"),
    ("joy,0", "label 'joy' is given twice in 'joy,0'"),
    ([1.0], "label 1.0 (a JSON number) in [1.0] is not a name or position"),
    ([True], "label true (a JSON boolean) in [true] is not a name or position"),
    ({"joy": 1}, 'labels {"joy": 1} (a JSON object) are not a list or text'),
])
def test_bad_label_values_say_what_and_how_to_fix(tmp_path, value, problem):
    task = spec_of(tmp_path).tasks[0]
    hot, got = label_set(task, value, {"joy": 0, "anger": 1, "fear": 2})
    assert hot is None and got.startswith(problem)


def test_numbers_as_label_names_turn_positions_off(tmp_path):
    task = spec_of(tmp_path, labels=["5", "7", "9"]).tasks[0]
    index = {"5": 0, "7": 1, "9": 2}
    assert label_set(task, "9,5", index) == ([1, 0, 1], None)
    hot, problem = label_set(task, "1", index)  # would be "7" by position: refused
    assert hot is None and "(positions are not read: some label names are numbers)" in problem


def test_jsonl_lists_csv_separator_and_the_file_line_of_a_bad_row(tmp_path):
    (tmp_path / "x.jsonl").write_text(
        '{"text": "a", "labels": ["joy", "fear"]}\n{"text": "b", "labels": []}\n'
        '{"text": "c", "labels": [2]}\n', encoding="utf-8")
    (tmp_path / "y.csv").write_text('text,labels\n"a, b",joy|anger\nc,fear\n', encoding="utf-8")
    spec = spec_from_dict({"encoder": "e", "tasks": {
        "t": tiny_task(files={"train": "x.jsonl"}),
        "u": tiny_task(files={"train": "y.csv"}, label_separator="|")}}, base_dir=tmp_path)
    rows = read_split(spec, spec.task("t"), "train")
    assert rows.labels == [[1, 0, 1], [0, 0, 0], [0, 0, 1]] and rows.names == ("joy", "anger",
                                                                               "fear")
    rows = read_split(spec, spec.task("u"), "train")
    assert (rows.text_a, rows.labels) == (["a, b", "c"], [[1, 1, 0], [0, 0, 1]])
    (tmp_path / "x.jsonl").write_text('{"text": "a", "labels": ["joy"]}\n'
                                      '{"text": "b", "labels": ["joy", "sad"]}\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_split(spec, spec.task("t"), "train")
    assert e.value.source == str(tmp_path / "x.jsonl")
    assert e.value.problems == ["line 2: label 'sad' in [\"joy\", \"sad\"] is not one of "
                                "tasks.t.labels or a position 0..2 in it: fix the row, or add "
                                "the label to the list"]


def test_a_tsv_read_as_csv_is_unquoted_and_a_broken_quote_is_named(tmp_path):
    (tmp_path / "q.tsv").write_text('"say ""hi"", ok"\t0\n"tab\tinside"\t1,2\n"a"b\t2\n',
                                    encoding="utf-8")
    files = {"train": {"path": "q.tsv", "format": "csv", "header": False, "text": [0],
                       "label": 1}}
    spec = spec_from_dict({"encoder": "e", "tasks": {"t": tiny_task(files=files)}},
                          base_dir=tmp_path)
    with pytest.raises(DataError, match=re.escape(
            "line 3: text after the closing quote of a field (a .tsv file read as csv")):
        read_split(spec, spec.task("t"), "train")
    (tmp_path / "q.tsv").write_text('"say ""hi"", ok"\t0\n"tab\tinside"\t1,2\nplain "x"\t2\n',
                                    encoding="utf-8")
    rows = read_split(spec, spec.task("t"), "train")
    # a quote inside an unquoted field is text, as in csv
    assert rows.text_a == ['say "hi", ok', "tab\tinside", 'plain "x"']
    assert rows.labels == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


def test_hub_lists_of_class_labels_map_by_name(tmp_path, monkeypatch):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "id": datasets.Value("string"),
                                  "labels": datasets.Sequence(datasets.ClassLabel(
                                      names=["fear", "joy", "anger"]))})
    tables = {"train": datasets.Dataset.from_dict(
        {"text": ["a", "b", "c"], "id": ["x", "y", "z"], "labels": [[0, 1], [2], []]},
        features=features),
        "test": datasets.Dataset.from_dict({"text": ["d"], "id": ["w"], "labels": [[-1]]})}
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name=None, split=None,
                        revision=None: tables[split])
    hub = {"path": "org/emo", "splits": {"train": "train", "test": "test"}}
    spec = spec_from_dict({"encoder": "e", "tasks": {"t": tiny_task(
        files={}, hub=hub, id="id", max_train_examples=2)}}, base_dir=tmp_path)
    rows = read_split(spec, spec.task("t"), "train")
    # the Hub's fear/joy/anger are the spec's joy/anger/fear by name, not by id
    assert (rows.text_a, rows.ids, rows.labels) == (["a", "b"], ["x", "y"],
                                                    [[1, 0, 1], [0, 1, 0]])
    assert read_split(spec, spec.task("t"), "test").labels is None


@pytest.mark.parametrize("settings, problem", [
    ({"threshold": 1.0}, "tasks.t.threshold: must be in (0, 1), got 1.0"),
    ({"label_separator": ""}, "tasks.t.label_separator: must not be empty"),
    ({"labels": ["joy"]}, "tasks.t.labels: a multilabel_classification task needs its list of at "
                          "least 2 labels"),
    ({"tune_threshold": True}, "tasks.t.tune_threshold: thresholds are tuned on the dev split, "
                               "and tasks.t.files has none"),
    ({"files": {"train": {"path": "x.jsonl", "format": "conll"}}},
     "tasks.t.files.train.format: 'conll' files hold no label sets"),
])
def test_spec_problems(tmp_path, settings, problem):
    with pytest.raises(SpecError) as e:
        spec_of(tmp_path, **settings)
    assert any(p.startswith(problem) for p in e.value.problems), e.value.problems


def test_multilabel_settings_on_another_type_are_refused(tmp_path):
    with pytest.raises(SpecError, match=re.escape(
            "tasks.t.threshold: 0.3 is used by task types multilabel_classification only")):
        spec_from_dict({"encoder": "e", "tasks": {"t": {
            "type": "classification", "text": ["s"], "labels": ["a", "b"], "threshold": 0.3,
            "files": {"train": "x.tsv"}}}}, base_dir=tmp_path)


# --- metrics and thresholds -----------------------------------------------------------------------


def check_against_sklearn(pred: np.ndarray, gold: np.ndarray) -> None:
    from sklearn.metrics import accuracy_score, f1_score

    assert macro_f1(pred, gold) == pytest.approx(
        f1_score(gold, pred, average="macro", zero_division=0), abs=1e-12)
    assert micro_f1(pred, gold) == pytest.approx(
        f1_score(gold, pred, average="micro", zero_division=0), abs=1e-12)
    assert label_f1(pred, gold) == pytest.approx(
        f1_score(gold, pred, average=None, zero_division=0), abs=1e-12)
    assert subset_accuracy(pred, gold) == pytest.approx(accuracy_score(gold, pred), abs=1e-12)


def test_metrics_match_sklearn_with_absent_and_never_predicted_labels():
    rng = np.random.default_rng(0)
    gold = (rng.random((60, 6)) < 0.3).astype(int)
    pred = (rng.random((60, 6)) < 0.3).astype(int)
    gold[:, 0] = pred[:, 0] = 0  # neither present nor predicted: F1 0 (zero_division=0)
    gold[:, 1] = 0  # predicted, never present
    pred[:, 2] = 0  # present, never predicted
    check_against_sklearn(pred, gold)
    assert micro_f1(np.zeros((2, 3)), np.zeros((2, 3))) == 0.0
    with pytest.raises(ValueError, match="compare .rows, labels. arrays"):
        macro_f1([1, 0], [1, 0])


def test_tuned_thresholds_give_each_label_its_best_f1():
    rng = np.random.default_rng(1)
    gold = (rng.random((80, 5)) < 0.25).astype(int)
    scores = np.round(np.clip(gold * 0.3 + rng.random((80, 5)) * 0.7, 0, 1), 2)  # with ties
    gold[:, 4] = 0
    tuned = tune_thresholds(scores, gold, default=0.5)
    assert tuned[4] == 0.5  # no positive row: nothing to tune, the default stays
    for j in range(4):
        best = max(label_f1((scores[:, [j]] >= t).astype(int), gold[:, [j]])[0]
                   for t in np.unique(scores[:, j]))
        got = label_f1((scores[:, [j]] >= tuned[j]).astype(int), gold[:, [j]])[0]
        assert got == pytest.approx(best)
        # the highest cut of equal F1: a cut above the lowest score taken does worse; the
        # threshold is halfway to the next lower score
        taken = scores[:, j][scores[:, j] >= tuned[j]]
        below = scores[:, j][scores[:, j] < tuned[j]]
        if below.size:
            assert tuned[j] == pytest.approx((taken.min() + below.max()) / 2)
        higher = [t for t in np.unique(scores[:, j]) if t > taken.min()]
        assert higher and all(
            label_f1((scores[:, [j]] >= t).astype(int), gold[:, [j]])[0] < best - 1e-12
            for t in higher)


def test_loss_is_the_mean_binary_cross_entropy():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]])
    labels = torch.tensor([[1, 0, 0], [0, 1, 1]])
    p = torch.sigmoid(logits)
    expected = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    assert KIND.loss(logits, labels, {}).item() == pytest.approx(expected.item(), abs=1e-6)


def test_baseline_predicts_the_most_frequent_training_set(more, monkeypatch):
    monkeypatch.setenv("MTDNN_MORE_DIR", str(more))
    spec = load_spec(SPEC)
    task = spec.task("goemotions")
    train_rows, dev = read_split(spec, task, "train"), read_split(spec, task, "dev")
    base = KIND.baseline(KIND.default_metrics, train_rows, dev)
    neutral = np.zeros((len(dev), 28), dtype=int)
    neutral[:, 27] = 1  # {neutral}: 12,823 of the 43,410 training rows
    gold = np.asarray(dev.labels)
    assert base == {"macro_f1": macro_f1(neutral, gold), "micro_f1": micro_f1(neutral, gold),
                    "subset_accuracy": subset_accuracy(neutral, gold)}
    check_against_sklearn(neutral, gold)
    assert round(base["subset_accuracy"], 4) == round(1592 / 5426, 4)


# --- training, evaluate, predict, export ----------------------------------------------------------

STEPS = 8
SETTINGS = [f"train.max_steps={STEPS}", f"train.eval_every={STEPS}", "train.save_every=4",
            "train.log_every=1"]


def write_spec(path: Path, tiny_bert: str, more: Path, out: Path) -> Path:
    """The shipped spec on the tiny BERT and 160 real rows, plus a second GoEmotions task whose
    head reads the first layer, and the task embedding."""
    files = {s: {"path": f"goemotions/{f}.tsv", "format": "csv", "header": False, "text": [0],
                 "label": 1, "id": 2} for s, f in (("train", "train"), ("dev", "dev"))}
    low = {"type": "multilabel_classification", "text": ["text"], "label": "labels", "id": "id",
           "labels": names(more), "layer": 1, "files": files, "max_train_examples": 96,
           "max_eval_examples": 64}
    path.write_text(f"""
include: [{SPEC}]
encoder: {tiny_bert}
data_dir: {more}
output_dir: {out}
max_seq_length: 48
task_embedding: true
train: {{batch_size: 16, eval_batch_size: 32, learning_rate: 1.0e-3, report_to: [none]}}
tasks:
  goemotions: {{max_train_examples: 160, max_eval_examples: 96, tune_threshold: true}}
  emotions_low: {json.dumps(low)}
""", encoding="utf-8")
    return path


def tensors(directory: Path) -> dict:
    from safetensors.torch import load_file

    return {**load_file(str(directory / "model.safetensors")),
            **load_file(str(directory / "heads.safetensors"))}


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert, more, one_thread) -> Path:
    """An uninterrupted alternating run (the reference of the resume test)."""
    root = tmp_path_factory.mktemp("multilabel")
    spec = load_spec(write_spec(root / "spec.yaml", tiny_bert, more, root / "run"), SETTINGS)
    result = train(spec, progress=False)
    assert set(result.metrics) == {"goemotions", "emotions_low"}
    return root / "run"


def test_training_reports_the_metrics_and_the_baseline(run):
    metrics = json.loads((run / "metrics.json").read_text())["tasks"]
    for task in ("goemotions", "emotions_low"):
        assert set(metrics[task]["dev"]) == {"macro_f1", "micro_f1", "subset_accuracy"}
    table = (run / "results.md").read_text()
    assert "| goemotions | macro_f1 |" in table
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss/goemotions"]) for r in log if "loss/goemotions" in r)


def test_stop_and_resume_is_bitwise_identical(run, tmp_path, tiny_bert, more, one_thread):
    spec = load_spec(write_spec(tmp_path / "spec.yaml", tiny_bert, more, tmp_path / "run"),
                     SETTINGS)
    train(spec, progress=False, stop_after=4)
    train(spec, progress=False, resume=True)
    a, b = tensors(run / "best"), tensors(tmp_path / "run" / "best")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert (run / "metrics.json").read_text() == (tmp_path / "run" / "metrics.json").read_text()


def test_joint_steps_from_the_cli(tmp_path, tiny_bert, more, one_thread):
    spec = write_spec(tmp_path / "spec.yaml", tiny_bert, more, tmp_path / "run")
    assert main(["train", str(spec), "train.step_mode=joint", "train.max_steps=3",
                 "train.log_every=1", "--no-progress"]) == 0
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "lr" in r]
    assert len(steps) == 3 and all("loss/goemotions" in r and "loss/emotions_low" in r
                                   for r in steps)  # every step trains both tasks


def test_cli_evaluate_reproduces_the_dev_metrics(run, more, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(run / "best"), "--data-dir", str(more), "--output",
                 str(out)]) == 0
    trained = json.loads((run / "best" / "metrics.json").read_text())["tasks"]
    assert json.loads(out.read_text()) == trained


def test_dev_predictions_score_as_sklearn_and_resample(run, more):
    """The metrics on the trained model's predictions of real dev rows, against sklearn; and the
    bootstrap of `mtdnn compare` (subset, then score) on them."""
    from mtdnn.checkpoint import read_spec
    from mtdnn.evaluation import outputs_of

    model = MultiTaskModel.from_pretrained(run / "best")
    spec = read_spec(run / "best", data_dir=more)
    for task in ("goemotions", "emotions_low"):
        rows = read_split(spec, spec.task(task), "dev")
        dataset = KIND.features(rows, model.tokenizer, 48, for_training=False)
        predictions = KIND.predictions(outputs_of(model, task, dataset, 32), dataset, rows)
        assert predictions.shape == (len(rows), 28) and predictions.any()
        check_against_sklearn(predictions, np.asarray(rows.labels))
        trained = json.loads((run / "best" / "metrics.json").read_text())["tasks"][task]["dev"]
        assert KIND.score(KIND.default_metrics, predictions, rows) == trained
        picked = [3, 3, 0, 7]
        again = KIND.score(["subset_accuracy"], [predictions.tolist()[i] for i in picked],
                           KIND.subset(rows, picked))
        assert again["subset_accuracy"] == subset_accuracy(predictions[picked],
                                                           np.asarray(rows.labels)[picked])


def dev_rows(more: Path, n: int = 40) -> list[tuple[str, list[int], str]]:
    return reference_rows(more, "dev")[:n]


def test_cli_predict_writes_labels_and_sigmoid_scores(run, more, tmp_path):
    rows = dev_rows(more)
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"id": c, "text": t}) + "\n" for t, _, c in rows),
                      encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(run / "best"), "--task", "emotions_low", "--input", str(inputs),
                 "--output", str(out)]) == 0
    got = [json.loads(x) for x in out.read_text().splitlines()]
    model = MultiTaskModel.from_pretrained(run / "best")
    expected = model.predict("emotions_low", [t for t, _, _ in rows])
    assert [g["id"] for g in got] == [c for _, _, c in rows]
    assert [{k: g[k] for k in ("labels", "scores")} for g in got] == expected
    first = expected[0]
    assert list(first["scores"]) == model.tasks["emotions_low"].labels
    assert first["labels"] == [n for n, s in first["scores"].items() if s >= 0.5]
    # the scores are the sigmoids of the head's logits
    enc = model.tokenizer(rows[0][0], truncation=True, max_length=48, return_tensors="pt")
    with torch.no_grad():
        logits = model("emotions_low", **enc)["logits"][0].numpy()
    assert list(first["scores"].values()) == pytest.approx(sigmoid(logits).tolist(), abs=1e-6)


def test_tuned_thresholds_are_kept_for_predict_and_export(run, more, tmp_path):
    registry = json.loads((run / "best" / "mtdnn.json").read_text())
    settings = {t["name"]: t["settings"] for t in registry["tasks"]}
    assert settings["emotions_low"] == {"label_separator": ",", "threshold": 0.5,
                                        "tune_threshold": False}
    kept = settings["goemotions"]["thresholds"]
    assert len(kept) == 28 and settings["goemotions"]["tune_threshold"] is True
    model = MultiTaskModel.from_pretrained(run / "best")
    rows = dev_rows(more, 96)  # the dev rows the thresholds were tuned on
    # batches of 32 sorted by length, as the evaluation: the same logits to the last bit
    predicted = model.predict("goemotions", [t for t, _, _ in rows], batch_size=32)
    for p in predicted:
        assert p["labels"] == [n for (n, s), t in zip(p["scores"].items(), kept) if s >= t]
    gold = np.zeros((len(rows), 28), dtype=int)
    for i, (_, ids, _) in enumerate(rows):
        gold[i, ids] = 1
    hot = np.asarray([[int(n in p["labels"]) for n in names(more)] for p in predicted])
    dev = json.loads((run / "best" / "metrics.json").read_text())["tasks"]["goemotions"]["dev"]
    assert macro_f1(hot, gold) == pytest.approx(dev["macro_f1"], abs=1e-9)
    # the test split is decided with the thresholds kept from dev, not tuned on test
    out = tmp_path / "test.json"
    assert main(["evaluate", str(run / "best"), "--tasks", "goemotions", "--split", "test",
                 "--data-dir", str(more), "--output", str(out)]) == 0
    spec = load_spec(SPEC, [f"data_dir={more}"])
    test = read_split(spec, spec.task("goemotions"), "test")
    scores = np.asarray([list(p["scores"].values()) for p in model.predict(
        "goemotions", test.text_a[:96], batch_size=32)])
    hot = (scores >= np.asarray(kept)).astype(int)
    assert json.loads(out.read_text())["goemotions"]["test"]["macro_f1"] == pytest.approx(
        macro_f1(hot, np.asarray(test.labels[:96])), abs=1e-9)
    main(["export", str(run / "best"), "--task", "goemotions", "--output", str(tmp_path / "x")])
    config = json.loads((tmp_path / "x" / "config.json").read_text())
    assert [config["label_thresholds"][n] for n in names(more)] == pytest.approx(kept)


def test_test_split_with_tune_threshold_needs_kept_thresholds():
    rows = LabelSets(task="t", split="test", where="w", text_a=["a"], text_b=None,
                     labels=[[1, 0]], ids=["0"], names=("a", "b"), tune=True)
    with pytest.raises(UserError, match="thresholds are tuned on the dev rows, and this "
                                        "model keeps none to decide test rows with"):
        KIND.predictions([np.zeros(2, dtype=np.float32)], None, rows)
    kept = dataclasses.replace(rows, thresholds=(0.4, 0.6))
    assert KIND.predictions([np.array([0.0, 0.0])], None, kept).tolist() == [[1, 0]]


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    for task in ("goemotions", "emotions_low"):
        assert main(["export", str(run / "best"), "--task", task, "--output",
                     str(root / task)]) == 0
    return {task: root / task for task in ("goemotions", "emotions_low")}


def test_export_is_a_multi_label_sequence_classifier_with_parity(run, exported, more):
    from transformers import AutoModelForSequenceClassification

    from mtdnn.export import probe_batch

    ours = MultiTaskModel.from_pretrained(run / "best")
    texts = [t for t, _, _ in dev_rows(more)]
    for task, directory in exported.items():
        theirs = AutoModelForSequenceClassification.from_pretrained(directory).eval()
        config = theirs.config
        assert config.problem_type == "multi_label_classification"
        assert [config.id2label[i] for i in range(28)] == names(more)
        # the layer-1 head: the encoder is cut to the layer it reads
        assert config.num_hidden_layers == (1 if task == "emotions_low" else 2)
        assert len(config.label_thresholds) == 28
        real = ours.tokenizer(texts, truncation=True, max_length=48, padding=True,
                              return_tensors="pt")
        for batch in (probe_batch(config), dict(real)):
            with torch.no_grad():
                diff = (ours(task, **batch)["logits"] - theirs(**batch).logits).abs().max()
            assert diff.item() < 1e-5


def test_pipeline_gives_the_scores_of_predict(run, exported, more):
    from transformers import pipeline

    model = MultiTaskModel.from_pretrained(run / "best")
    texts = [t for t, _, _ in dev_rows(more)]
    for task, directory in exported.items():
        classifier = pipeline("text-classification", model=str(directory),
                              function_to_apply="sigmoid", top_k=None)
        thresholds = classifier.model.config.label_thresholds
        got = classifier(texts, truncation=True)
        for expected, scores in zip(model.predict(task, texts), got, strict=True):
            assert {s["label"]: s["score"] for s in scores} == pytest.approx(
                expected["scores"], abs=1e-5)
            # the README's recipe: the config's thresholds give predict's labels (but for scores
            # within float32 rounding of a threshold; a tuned one lies between two dev scores)
            for s in scores:
                if abs(s["score"] - thresholds[s["label"]]) > 1e-6:
                    assert (s["score"] >= thresholds[s["label"]]) == \
                        (s["label"] in expected["labels"])


def test_model_card_is_text_classification(run):
    import yaml

    from mtdnn.hub import model_card

    card = model_card(run / "best", task="goemotions", repo_id="me/emotions")
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["pipeline_tag"] == "text-classification"
    assert "`admiration`" in card


@pytest.mark.slow
def test_minilm_on_goemotions_exports_exactly(tmp_path, more, minilm_path, one_thread):
    """The shipped spec with the real MiniLM on 3,000 training rows (94 steps: the loss falls as
    the label priors are learnt; telling emotions apart takes thousands of steps): the export
    reproduces the logits on real dev rows, and the pipeline gives predict's scores."""
    from transformers import AutoModelForSequenceClassification, pipeline

    spec = load_spec(SPEC, [f"data_dir={more}", f"output_dir={tmp_path / 'run'}",
                            "tasks.goemotions.max_train_examples=3000",
                            "tasks.goemotions.max_eval_examples=800", "train.epochs=1",
                            "train.learning_rate=1e-4", "train.report_to=[none]"])
    result = train(spec, progress=False)
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss/goemotions"] for r in log if "loss/goemotions" in r]
    assert losses[-1] < 0.5 * losses[0]
    assert main(["export", str(result.best_dir), "--task", "goemotions", "--output",
                 str(tmp_path / "export")]) == 0
    model = MultiTaskModel.from_pretrained(result.best_dir)
    theirs = AutoModelForSequenceClassification.from_pretrained(tmp_path / "export").eval()
    texts = [t for t, _, _ in dev_rows(more, 64)]
    batch = dict(model.tokenizer(texts, truncation=True, max_length=64, padding=True,
                                 return_tensors="pt"))
    with torch.no_grad():
        assert (model("goemotions", **batch)["logits"] - theirs(**batch).logits).abs().max() < 1e-5
    classifier = pipeline("text-classification", model=str(tmp_path / "export"),
                          function_to_apply="sigmoid", top_k=None)
    for expected, got in zip(model.predict("goemotions", texts), classifier(texts, truncation=True),
                             strict=True):
        assert {s["label"]: s["score"] for s in got} == pytest.approx(expected["scores"], abs=1e-5)
