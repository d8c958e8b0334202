"""The multiple_choice task type (mtdnn/tasks/multiple_choice.py, multiple_choice_rows.py): reading
CommonsenseQA and COPA-like rows (files and Hub datasets) with every bad value refused, features of
shape (k, T), ragged choices, the loss, training with the multi-task strategies and exact resume,
predict, the plain `AutoModelForMultipleChoice` export (exact scores), the model card and the
shipped spec. Tiny random encoders; real CommonsenseQA rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SPECS, write_spec
from test_export import make_checkpoint, tiny_encoder

from mtdnn.cli import main
from mtdnn.data import read_split
from mtdnn.errors import DataError, SpecError, UserError
from mtdnn.export import export
from mtdnn.model import MultiTaskModel, TaskInfo
from mtdnn.spec import load_spec
from mtdnn.tasks import task_type
from mtdnn.trainer import train

KIND = task_type("multiple_choice")
CSQA = TaskInfo("csqa", "multiple_choice", text_columns=["question.stem", "question.choices"])
QUESTIONS = [("Where do you keep the milk?", ["house", "water", "school", "farm", "sea"]),
             ("What do people read?", [{"label": "A", "text": "page"},
                                       {"label": "B", "text": "tree"}]),
             ("A man is in the city; what is near?", ["house", "sea", "sun"])]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def csqa_yaml(more: Path, train_rows: int = 24, extra: str = "") -> str:
    root = more / "commonsenseqa"
    return f"""
  csqa:
    type: multiple_choice
    text: [question.stem, question.choices]
    label: answerKey
    id: id
    max_train_examples: {train_rows}
    max_eval_examples: 16
    files:
      train: {root / 'train_rand_split.jsonl'}
      dev: {root / 'dev_rand_split.jsonl'}
{extra}"""


def one_task_spec(tmp_path: Path, files: str, task: str, **settings: str) -> Path:
    """A spec of one multiple_choice task `t` reading `files` (a YAML mapping) under tmp_path."""
    lines = "".join(f"    {k}: {v}\n" for k, v in settings.items())
    return write_spec(tmp_path / "spec.yaml", f"""
encoder: tiny
data_dir: {tmp_path}
tasks:
  t:
    type: multiple_choice
{task}{lines}    files: {files}
""")


# --- rows -----------------------------------------------------------------------------------------


def test_commonsenseqa_reads_as_its_readme_counts(more, monkeypatch):
    monkeypatch.setenv("MTDNN_MORE_DIR", str(more))
    spec = load_spec(SPECS / "commonsenseqa.yaml")
    task = spec.task("commonsenseqa")
    rows = {s: read_split(spec, task, s) for s in ("train", "dev", "test")}
    assert {s: len(r) for s, r in rows.items()} == {"train": 9741, "dev": 1221, "test": 1140}
    assert np.bincount(rows["train"].labels).tolist() == [1909, 1973, 1946, 1985, 1928]
    assert np.bincount(rows["dev"].labels).tolist() == [239, 255, 241, 251, 235]
    assert rows["test"].labels is None  # the leaderboard file has no answerKey
    dev = rows["dev"]
    assert dev.ids[0] == "1afa02df02c908a558b4036e80242fac"
    assert dev.choice_labels[0] == ["A", "B", "C", "D", "E"] and len(dev.choices[0]) == 5
    assert dev.contexts[0].startswith("A revolving door is convenient")
    # Default batch: a list column's choice count is unknown at spec time; the spec sets its own.
    assert spec.batch_size(task) == 6
    assert spec.batch_size(replace(task, batch_size=None)) == 32 // 4


def test_repeated_choice_texts_are_scored_by_label(more, monkeypatch):
    """42 train questions repeat the answer's text as a wrong choice (README): the answer is the
    labelled choice, not the first choice with that text."""
    monkeypatch.setenv("MTDNN_MORE_DIR", str(more))
    spec = load_spec(SPECS / "commonsenseqa.yaml")
    rows = read_split(spec, spec.task("commonsenseqa"), "train")
    raw = [json.loads(x) for x in (more / "commonsenseqa" / "train_rand_split.jsonl").open()]
    repeated = [i for i, texts in enumerate(rows.choices)
                if texts.count(texts[rows.labels[i]]) > 1]
    assert len(repeated) == 42
    for i in repeated:
        assert "ABCDE"[rows.labels[i]] == raw[i]["answerKey"]
    assert any(rows.choices[i].index(rows.choices[i][rows.labels[i]]) != rows.labels[i]
               for i in repeated)


def test_copa_like_csv_reads_one_column_per_choice_and_positions(tmp_path):
    (tmp_path / "copa.csv").write_text(
        'premise,choice1,choice2,label\n"The man broke his toe, so",he dropped a hammer,he ran,0\n'
        "The sun rose.,it was day,it was night,1\n")
    path = one_task_spec(tmp_path, "{train: copa.csv}", "    text: [premise, choice1, choice2]\n")
    spec = load_spec(path)
    rows = read_split(spec, spec.task("t"), "train")
    assert rows.contexts == ["The man broke his toe, so", "The sun rose."]
    assert rows.choices == [["he dropped a hammer", "he ran"], ["it was day", "it was night"]]
    assert rows.labels == [0, 1] and rows.choice_labels == [None, None]
    assert spec.batch_size(spec.task("t")) == 32 // 2  # two sequences per question


def test_hub_datasets_choices_dicts_classlabels_and_unlabelled_test(tmp_path):
    """The Hub's forms through a local dataset folder: tau/commonsense_qa's columns (choices
    {label: [...], text: [...]}, answerKey, "" on test) and a COPA-like ClassLabel answer."""
    import datasets

    csqa, copa = tmp_path / "csqa", tmp_path / "copa"
    csqa.mkdir(), copa.mkdir()
    choices = {"label": ["A", "B", "C"], "text": ["bed", "sky", "bed"]}
    for split, key in (("train", ["C", "A"]), ("validation", ["B", "C"]), ("test", ["", ""])):
        datasets.Dataset.from_dict({"id": ["q1", "q2"], "question": ["Where to sleep?", "Up?"],
                                    "choices": [choices, {**choices, "label": ["A", "B", "C"]}],
                                    "answerKey": key}).to_parquet(csqa / f"{split}.parquet")
    label = datasets.ClassLabel(names=["choice1", "choice2"])
    datasets.Dataset.from_dict({"premise": ["It rained.", "I was cold."],
                                "choice1": ["wet", "coat"], "choice2": ["dry", "swim"],
                                "label": [0, 0]}).cast_column("label", label).to_parquet(
        copa / "train.parquet")
    spec = load_spec(write_spec(tmp_path / "spec.yaml", f"""
encoder: tiny
tasks:
  csqa:
    type: multiple_choice
    text: [question, choices]
    label: answerKey
    id: id
    hub: {{path: {csqa}, splits: {{train: train, dev: validation, test: test}}}}
  copa:
    type: multiple_choice
    text: [premise, choice1, choice2]
    hub: {{path: {copa}, splits: {{train: train}}}}
"""))
    train_rows = read_split(spec, spec.task("csqa"), "train")
    assert train_rows.labels == [2, 0]  # "C" is the second "bed": by label, not by text
    assert train_rows.ids == ["q1", "q2"] and train_rows.choices[0] == ["bed", "sky", "bed"]
    assert read_split(spec, spec.task("csqa"), "dev").labels == [1, 2]
    assert read_split(spec, spec.task("csqa"), "test").labels is None
    copa_rows = read_split(spec, spec.task("copa"), "train")
    assert copa_rows.labels == [0, 0] and copa_rows.choices[1] == ["coat", "swim"]


ABC = '[{"label": "A", "text": "x"}, {"label": "B", "text": "y"}]'
BAD_ROWS = [
    ('{"q": "?", "c": ' + ABC + ', "a": "F"}',
     "line 1: answer 'F' is not one of the row's choice labels ['A', 'B'] (with labelled choices "
     "the answer is a label, never a position or a text)"),
    ('{"q": "?", "c": ' + ABC + ', "a": 1}', "answer 1 is not one of the row's choice labels"),
    ('{"q": "?", "c": [{"label": "A", "text": "x"}, {"label": "A", "text": "y"}], "a": "A"}',
     "choice labels ['A', 'A'] repeat a label, so an answer could name two choices"),
    ('{"q": "?", "c": "x, y", "a": 0}',
     "column 'c' is 'x, y' (a JSON string), not a list of choices (give them as a JSON list, or "
     "one column per choice"),
    ('{"q": "?", "c": ["x"], "a": 0}', "1 choice(s): a question needs at least 2"),
    ('{"q": "?", "c": ["x", {"label": "B", "text": "y"}], "a": 0}',
     "column 'c' mixes objects and plain values"),
    ('{"q": "?", "c": ["x", "y"], "a": 2}',
     "line 1: answer 2 is outside the row's 2 choices, counted from 0 (1-based? subtract 1)"),
    ('{"q": "?", "c": ["x", "y"], "a": "B"}',
     "answer 'B' is not a 0-based position, and these choices have no labels to match (write 0 "
     "to 1)"),
    ('{"q": "?", "c": ["x", "y"], "a": true}', "answer true (a JSON boolean) names no choice"),
    ('{"q": "?", "c": ["x", "y"], "a": ""}', "line 1: empty answer (every train row needs one)"),
    ('{"q": "?", "c": ["x", null], "a": 0}', "text column 'c[1]' is null, not text"),
    ('{"q": "?", "a": 0}', "line 1: missing column(s) ['c'] (the row has ['q', 'a']"),
    ('{"q": "?", "c": [{"label": "A"}, {"label": "B", "text": "y"}], "a": "A"}',
     'choice {"label": "A"} has no "text"'),
]


@pytest.mark.parametrize("row,message", BAD_ROWS, ids=[m[:40] for _, m in BAD_ROWS])
def test_bad_rows_name_the_file_line_value_and_fix(tmp_path, row, message):
    (tmp_path / "train.jsonl").write_text('{"q": "Fine?", "c": ["x", "y"], "a": 1}\n'
                                          f"{row}\n".replace("line 1", "line 2"))
    spec = load_spec(one_task_spec(tmp_path, "{train: train.jsonl}", "    text: [q, c]\n",
                                   label="a"))
    with pytest.raises(DataError) as e:
        read_split(spec, spec.task("t"), "train")
    assert e.value.source == str(tmp_path / "train.jsonl")
    assert len(e.value.problems) == 1
    assert message.replace("line 1", "line 2") in e.value.problems[0]


def test_bad_files_and_settings(tmp_path):
    (tmp_path / "a.tsv").write_text("q\tc\ta\nWhy?\tx\t0\n")
    spec = load_spec(one_task_spec(tmp_path, "{train: a.tsv}", "    text: [q, c]\n", label="a"))
    with pytest.raises(DataError, match=r"a tsv field holds one text, not a list of choices "
                                        r"\(give one column per choice"):
        read_split(spec, spec.task("t"), "train")
    (tmp_path / "b.jsonl").write_text('{"q": "?", "c": ["x", "y"]}\n')
    spec = load_spec(one_task_spec(tmp_path, "{train: b.jsonl}", "    text: [q, c]\n",
                                   label="null"))
    with pytest.raises(DataError, match="the train split has no answers"):
        read_split(spec, spec.task("t"), "train")
    spec = load_spec(one_task_spec(tmp_path, "{train: {path: b.jsonl, text: [q]}}",
                                   "    text: [q, c]\n"))
    with pytest.raises(DataError, match=r"tasks.t.files.train.text: \['q'\]: give the context, "
                                        "then the choices"):
        read_split(spec, spec.task("t"), "train")
    with pytest.raises(SpecError) as e:
        load_spec(one_task_spec(tmp_path, "{train: b.jsonl}", "    text: [q]\n",
                                labels="[A, B]"))
    assert e.value.problems == [
        "tasks.t.text: got ['q']: give the context, then the choices: [question, choices] (a "
        "list column) or [premise, choice_0, choice_1, ...]",
        "tasks.t.labels: a multiple_choice task takes no label list (the answer names a choice by "
        "its label or 0-based position)"]


def test_predict_inputs_from_a_tsv_with_one_column_per_choice(tmp_path):
    path = tmp_path / "in.tsv"
    path.write_text("idx\tpremise\tc1\tc2\n7\tIt rained.\twet\tdry\n9\tCold.\tcoat\tswim\n")
    inputs, ids = KIND.read_inputs(path, ["premise", "c1", "c2"])
    assert inputs == [("It rained.", ["wet", "dry"]), ("Cold.", ["coat", "swim"])]
    assert ids == ["7", "9"]
    path.write_text("premise\tc1\tc2\nIt rained.\twet\n")
    with pytest.raises(DataError, match="line 2: 2 fields, the header has 3"):
        KIND.read_inputs(path, ["premise", "c1", "c2"])


def test_the_cli_refuses_bad_data_with_one_message(tmp_path, capsys):
    (tmp_path / "t.jsonl").write_text('{"q": "?", "c": ' + ABC + ', "a": "E"}\n')
    path = one_task_spec(tmp_path, "{train: t.jsonl}", "    text: [q, c]\n", label="a")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 't.jsonl'}: line 1: answer 'E' is not one of the row's choice labels" \
        in err
    assert "Traceback" not in err


# --- features, batches, scores --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert)


def test_features_are_k_pairs_and_only_the_context_is_cut(tokenizer):
    examples = KIND.examples_from_inputs(CSQA, [
        ("the man " * 30, ["a big house", "water"]),  # a long context: cut to fit
        ("where?", ["the " * 40, "sea", "sun"])])       # a choice longer than max_len alone
    ds = KIND.features(examples, tokenizer, 16, for_training=False, use_cache=False)
    first, second = ds[0], ds[1]
    assert [len(x) for x in first["input_ids"]] == [16, 16]
    assert tokenizer.decode(first["input_ids"][0]).endswith("[SEP] a big house [SEP]")
    assert tokenizer.decode(first["input_ids"][1]).startswith("[CLS] the man the man")
    # A choice that cannot fit with any context: cut too (longest first), the others are whole.
    assert [len(x) for x in second["input_ids"]] == [16, 6, 6]
    assert tokenizer.decode(second["input_ids"][0]).startswith("[CLS] where? [SEP] the the")
    assert tokenizer.decode(second["input_ids"][1]) == "[CLS] where? [SEP] sea [SEP]"
    assert first["token_type_ids"][0][-4:] == [1, 1, 1, 1]
    assert first["length"] == 32 and second["length"] == 28 and "labels" not in ds.column_names


def test_collator_pads_ragged_choices_and_masks_them(tokenizer):
    examples = KIND.examples_from_inputs(CSQA, QUESTIONS)
    ds = KIND.features(replace(examples, labels=[0, 1, 2]), tokenizer, 32, for_training=True,
                       use_cache=False)
    collate = KIND.collator(tokenizer)
    rows = [{c: ds[i][c] for c in KIND.columns(training=True)} for i in range(3)]
    batch = collate(rows)
    assert batch["input_ids"].shape[:2] == (3, 5) == batch["attention_mask"].shape[:2]
    assert batch["choice_mask"].tolist() == [[True] * 5, [True, True, False, False, False],
                                             [True, True, True, False, False]]
    assert batch["labels"].tolist() == [0, 1, 2]
    assert torch.equal(batch["input_ids"][1, 2], batch["input_ids"][1, 0])  # a copy, masked
    unlabelled = collate([{k: v for k, v in r.items() if k != "labels"} for r in rows])
    assert "labels" not in unlabelled and unlabelled["input_ids"].shape == batch[
        "input_ids"].shape


def test_scores_are_the_head_on_each_pair_and_the_loss_is_over_real_choices(tiny_bert, tokenizer):
    from mtdnn.model import load_encoder

    model = MultiTaskModel(load_encoder(tiny_bert), [CSQA]).eval()
    examples = KIND.examples_from_inputs(CSQA, QUESTIONS)
    ds = KIND.features(replace(examples, labels=[3, 1, 2]), tokenizer, 32, for_training=True,
                       use_cache=False)
    batch = KIND.collator(tokenizer)([ds[i] for i in range(3)])
    with torch.no_grad():
        out = model("csqa", **{k: v for k, v in batch.items() if k not in ("index", "length")})
        scores = out["logits"]
        for q, (context, choices) in enumerate(QUESTIONS):
            texts = [c["text"] if isinstance(c, dict) else c for c in choices]
            enc = tokenizer([context] * len(texts), texts, padding=True, return_tensors="pt")
            alone = model.heads["csqa"](model.encode("csqa", **enc))[:, 0]
            assert torch.allclose(scores[q, :len(texts)], alone, atol=1e-5)
            assert torch.isinf(scores[q, len(texts):]).all()
        expected = torch.stack([torch.nn.functional.cross_entropy(
            scores[q, :n][None], torch.tensor([t])) for q, (n, t) in enumerate(
            ((5, 3), (2, 1), (3, 2)))]).mean()
    assert out["loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    outputs = KIND.outputs(scores, batch)
    assert [len(o) for o in outputs] == [5, 2, 3]
    assert KIND.predictions(outputs, None, None).tolist() == [int(np.argmax(o)) for o in outputs]


def test_subset_and_baseline_for_bootstrap_and_results():
    rows = KIND.examples_from_inputs(CSQA, QUESTIONS)
    rows = replace(rows, labels=[0, 1, 1])
    picked = KIND.subset(rows, [2, 2, 0])
    assert picked.contexts == [QUESTIONS[2][0]] * 2 + [QUESTIONS[0][0]]
    assert picked.labels == [1, 1, 0] and picked.choice_labels[0] is None
    assert KIND.score(["accuracy"], [1, 0, 1], picked) == {"accuracy": pytest.approx(1 / 3)}
    # the most frequent training answer position (1), on dev answers [1, 1, 0]
    assert KIND.baseline(["accuracy"], rows, picked) == {"accuracy": pytest.approx(2 / 3)}


# --- training, resume, predict ----------------------------------------------------------------


def mixed_spec(tmp_path: Path, tiny_bert: str, glue: Path, more: Path, extra: str = "") -> Path:
    """CommonsenseQA with RTE (real rows) on the tiny BERT."""
    return write_spec(tmp_path / "spec.yaml", f"""
include: [{SPECS / 'glue.yaml'}]
use_tasks: [rte, csqa]
encoder: {tiny_bert}
data_dir: {glue}
output_dir: {tmp_path / 'run'}
max_seq_length: 48
train:
  batch_size: 8
  eval_batch_size: 16
  max_steps: 6
  log_every: 1
  report_to: [none]
tasks:
  rte: {{max_train_examples: 24, max_eval_examples: 16}}
{csqa_yaml(more)}
{extra}""")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert, glue, more) -> Path:
    out = tmp_path_factory.mktemp("trained")
    spec = load_spec(mixed_spec(out, tiny_bert, glue, more), ["train.max_steps=8"])
    result = train(spec, progress=False)
    assert set(result.metrics["csqa"]["dev"]) == {"accuracy"}
    # The most frequent answer of the first 24 training questions, scored on 16 dev answers.
    assert result.baselines["csqa"]["accuracy"] == pytest.approx(
        np.mean(np.array(read_split(spec, spec.task("csqa"), "dev").labels) == np.argmax(
            np.bincount(read_split(spec, spec.task("csqa"), "train").labels))))
    return result.best_dir


@pytest.mark.parametrize("settings", [
    ["train.step_mode=joint", "task_embedding=true"],
    ["train.step_mode=alternating", "tasks.csqa.layer=1", "train.loss_weighting=uncertainty"],
], ids=["joint+task-embedding", "alternating+layer+uncertainty"])
def test_trains_with_the_multi_task_strategies(tmp_path, tiny_bert, glue, more, settings):
    spec = load_spec(mixed_spec(tmp_path, tiny_bert, glue, more), settings)
    result = train(spec, progress=False)
    assert 0 <= result.metrics["csqa"]["dev"]["accuracy"] <= 1
    losses = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text()
              .splitlines() if "loss/csqa" in x]
    assert losses and all(np.isfinite(r["loss/csqa"]) for r in losses)
    model = MultiTaskModel.from_pretrained(result.best_dir)
    assert model.tasks["csqa"].layer == (1 if "tasks.csqa.layer=1" in settings else None)


def test_the_head_learns_the_answers_of_a_few_questions(tmp_path, tiny_bert, more):
    """Scores, labels and the loss line up: the tiny BERT memorises 8 real questions (dev = the
    same rows), from chance (1/5) to every answer right."""
    root = more / "commonsenseqa"
    spec = load_spec(write_spec(tmp_path / "spec.yaml", f"""
encoder: {tiny_bert}
output_dir: {tmp_path / 'run'}
max_seq_length: 48
train: {{batch_size: 8, learning_rate: 3.0e-3, warmup_ratio: 0, epochs: 20, report_to: [none]}}
tasks:
  csqa:
    type: multiple_choice
    text: [question.stem, question.choices]
    label: answerKey
    max_train_examples: 8
    max_eval_examples: 8
    dropout: 0
    files: {{train: {root / 'train_rand_split.jsonl'}, dev: {root / 'train_rand_split.jsonl'}}}
"""))
    result = train(spec, progress=False)
    assert result.metrics["csqa"]["dev"]["accuracy"] == 1.0


def test_stop_and_resume_is_bitwise_identical(tmp_path, tiny_bert, glue, more):
    from safetensors.torch import load_file

    settings = ["train.max_steps=8", "train.eval_every=8", "train.save_every=2",
                "task_embedding=true"]
    path = mixed_spec(tmp_path, tiny_bert, glue, more)
    ref = load_spec(path, [*settings, f"output_dir={tmp_path / 'ref'}"])
    train(ref, progress=False)
    spec = load_spec(path, [*settings, f"output_dir={tmp_path / 'cut'}"])
    train(spec, progress=False, stop_after=5)
    train(spec, progress=False, resume=True)
    for name in ("model.safetensors", "heads.safetensors"):
        a, b = (load_file(str(tmp_path / d / "best" / name)) for d in ("ref", "cut"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_predict_python_and_cli(trained, tmp_path, more, capsys):
    model = MultiTaskModel.from_pretrained(trained)
    results = model.predict("csqa", QUESTIONS)
    assert [len(r["scores"]) for r in results] == [5, 2, 3]
    assert results[1]["label"] in ("A", "B")  # labelled choices: the label
    assert results[0]["label"] == QUESTIONS[0][1][results[0]["choice"]]  # else the text
    for r in results:
        assert r["choice"] == int(np.argmax(r["scores"]))
        assert sum(r["probabilities"]) == pytest.approx(1)
    alone = [model.predict("csqa", [q], batch_size=1)[0] for q in QUESTIONS]  # no padding
    for a, r in zip(alone, results):
        assert a["scores"] == pytest.approx(r["scores"], abs=1e-5)
    with pytest.raises(UserError, match="input 0: expected \\(context, choices\\)"):
        model.predict("csqa", ["just a question"])

    lines = (more / "commonsenseqa" / "test_rand_split_no_answers.jsonl").read_text().split(
        "\n")[:5]
    (tmp_path / "test.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "preds.jsonl"
    assert main(["predict", str(trained), "--task", "csqa", "--input", str(tmp_path / "test.jsonl"),
                 "--output", str(out)]) == 0
    preds = [json.loads(x) for x in out.read_text().splitlines()]
    assert [p["id"] for p in preds] == [json.loads(x)["id"] for x in lines]
    assert all(p["label"] == "ABCDE"[p["choice"]] and len(p["probabilities"]) == 5
               for p in preds)
    assert "wrote 5 predictions" in capsys.readouterr().out


def test_evaluate_a_checkpoint(trained, glue):
    from mtdnn.evaluation import evaluate

    result = evaluate(trained, tasks=["csqa"])
    assert 0 <= result["csqa"]["dev"]["accuracy"] <= 1


def test_model_card_says_multiple_choice(trained):
    import yaml

    from mtdnn.hub import model_card

    front = yaml.safe_load(model_card(trained, task="csqa").split("---")[1])
    assert front["pipeline_tag"] == "multiple-choice" and "multiple-choice" in front["tags"]


# --- export --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoders(tmp_path_factory, tiny_bert) -> dict[str, str]:
    root = tmp_path_factory.mktemp("mc-encoders")
    return {"bert": tiny_bert, **{t: tiny_encoder(root / t, t, tiny_bert)
                                  for t in ("roberta", "electra", "deberta-v2", "distilbert")}}


def choice_probe(config) -> dict[str, torch.Tensor]:
    """3 questions of 4 choices, right-padded to different lengths."""
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(5, config.vocab_size, (3, 4, 18), generator=generator)
    mask = torch.ones_like(ids)
    for q, lengths in enumerate(((18, 9, 12, 5), (7, 18, 18, 3), (11, 11, 16, 8))):
        for c, n in enumerate(lengths):
            ids[q, c, n:], mask[q, c, n:] = config.pad_token_id, 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("arch,activation,settings", [
    ("bert", "tanh", {}), ("bert", "tanh", {"layer": 1}), ("roberta", "tanh", {}),
    ("electra", "gelu", {}), ("deberta-v2", "gelu", {})])
def test_export_scores_equal_the_multitask_head(tmp_path, encoders, arch, activation, settings):
    from transformers import AutoModelForMultipleChoice

    ckpt = make_checkpoint(tmp_path / "ckpt", encoders[arch], task_embedding=True,
                           activation=activation, tasks=[replace(CSQA, **settings)])
    ours = MultiTaskModel.from_pretrained(ckpt)
    theirs = AutoModelForMultipleChoice.from_pretrained(export(ckpt, "csqa", tmp_path / "x")
                                                        ).eval()
    batch = choice_probe(theirs.config)
    with torch.no_grad():
        expected, got = ours("csqa", **batch)["logits"], theirs(**batch).logits
    assert got.shape == expected.shape == (3, 4) and expected.std() > 0.01
    assert (got - expected).abs().max().item() < 1e-5
    assert theirs.config.num_hidden_layers == settings.get("layer", 2)


def test_export_refuses_what_it_cannot_reproduce(tmp_path, encoders):
    distil = make_checkpoint(tmp_path / "d", encoders["distilbert"], False, tasks=[CSQA])
    with pytest.raises(UserError, match="model_type 'distilbert'.*bert, deberta-v2, electra, "
                                        "roberta, xlm-roberta.*--encoder-only"):
        export(distil, "csqa", tmp_path / "out")
    gelu_bert = make_checkpoint(tmp_path / "g", encoders["bert"], False, activation="gelu",
                                tasks=[CSQA])
    with pytest.raises(UserError, match="head uses 'gelu', but bert's multiple-choice head "
                                        "applies tanh"):
        export(gelu_bert, "csqa", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_answers_real_questions_as_predict(trained, tmp_path, more):
    """transformers has no multiple-choice pipeline: the export's own class on tokenized
    CommonsenseQA dev questions gives predict's answers and scores."""
    from transformers import AutoModelForMultipleChoice, AutoTokenizer

    out = export(trained, "csqa", tmp_path / "csqa")
    tokenizer = AutoTokenizer.from_pretrained(out)
    exported = AutoModelForMultipleChoice.from_pretrained(out).eval()
    assert json.loads((out / "config.json").read_text())["architectures"] == [
        "BertForMultipleChoice"]
    raw = [json.loads(x) for x in (more / "commonsenseqa" / "dev_rand_split.jsonl").open()][:12]
    questions = [(r["question"]["stem"], r["question"]["choices"]) for r in raw]
    expected = MultiTaskModel.from_pretrained(trained).predict("csqa", questions)
    for (stem, choices), e in zip(questions, expected, strict=True):
        texts = [c["text"] for c in choices]
        enc = tokenizer([stem] * len(texts), texts, truncation="only_first", padding=True,
                        return_tensors="pt")
        with torch.no_grad():
            scores = exported(**{k: v[None] for k, v in enc.items()}).logits[0]
        assert int(scores.argmax()) == e["choice"]
        assert scores.tolist() == pytest.approx(e["scores"], abs=1e-5)


# --- the shipped spec -----------------------------------------------------------------------------


def test_shipped_spec_validates_for_the_hub_and_with_the_files(more, monkeypatch, capsys):
    monkeypatch.delenv("MTDNN_MORE_DIR", raising=False)
    spec = load_spec(SPECS / "commonsenseqa.yaml")
    assert spec.data_dir is None and spec.task("commonsenseqa").hub.path == "tau/commonsense_qa"
    assert main(["validate", str(SPECS / "commonsenseqa.yaml"), "--no-data"]) == 0
    monkeypatch.setenv("MTDNN_MORE_DIR", str(more))
    assert main(["validate", str(SPECS / "commonsenseqa.yaml")]) == 0
    assert "commonsenseqa multiple_choice files: train 9741, dev 1221, test 1140 rows" in \
        " ".join(capsys.readouterr().out.split())


def test_loading_the_spec_does_not_import_torch(more):
    code = ("import sys, mtdnn.spec as s; s.load_spec('task_specs/commonsenseqa.yaml'); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "MTDNN_MORE_DIR": str(more)})
    assert r.returncode == 0, r.stderr
