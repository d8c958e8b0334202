"""Tests of mtdnn/tasks/extractive_qa.py (and its rows, extractive_qa_rows.py): the official SQuAD
metrics on hand-computed cases and the v1.1 / v2.0 rules, the real SQuAD files and crafted bad
ones, run_qa-style windows, n-best decoding against a brute-force decoder, the loss, and a tiny
BERT trained on real SQuAD questions through the CLI (train, evaluate, predict, export, resume,
joint steps, a lower layer, the task embedding), exported with logit parity to
`AutoModelForQuestionAnswering` on four architectures."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import SPECS

from mtdnn.cli import main
from mtdnn.errors import DataError, SpecError
from mtdnn.metrics import compute_metrics
from mtdnn.model import MultiTaskModel, TaskInfo
from mtdnn.spec import load_spec
from mtdnn.tasks import task_type
from mtdnn.tasks.extractive_qa import _mask_padding, best_answers, normalize_answer
from mtdnn.tasks.extractive_qa_rows import QAExamples, QASettings

KIND = task_type("extractive_qa")
SPEC = SPECS / "squad.yaml"
ALL = ["exact_match", "squad_f1", "has_answer_exact", "has_answer_f1", "no_answer_exact"]


def scores(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    return compute_metrics(ALL, predictions, references)


# --- metrics --------------------------------------------------------------------------------------


def test_normalization_exact_match_and_f1_by_hand():
    assert normalize_answer("  The Cat,\tsat on  a mat! ") == "cat sat on mat"
    assert normalize_answer("Theory an") == "theory"  # articles are whole words only
    # EM: normalized equality, the best over the golds
    assert scores(["the Cat."], [["cat"]])["exact_match"] == 1.0
    assert scores(["dog"], [["cat", "a dog"]])["exact_match"] == 1.0
    # F1 on bags of tokens: "big red cat" vs "red cat sat": 2 shared, P = R = 2/3
    assert scores(["big red cat"], [["red cat sat"]])["squad_f1"] == pytest.approx(2 / 3)
    # counts clip (Counter &): "cat cat" vs "cat": P = 1/2, R = 1, F1 = 2/3
    assert scores(["the cat the cat"], [["cat"]])["squad_f1"] == pytest.approx(2 / 3)
    # the max over golds, then the mean over questions: (1 + 0.5) / 2
    got = scores(["red cat", "cat"], [["dog", "red cat"], ["black cat"]])
    assert got["squad_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert got["exact_match"] == 0.5


def test_v1_and_v2_rules_for_empty_golds_and_unanswerable_questions():
    # A gold that normalizes to "" (".": three in the real dev set). v1.1: EM 1 against an empty
    # prediction, F1 0 (no shared token). v2.0 drops such golds, and a question left without one
    # is matched by "" alone: HasAns EM and F1 are 1.
    got = scores([""], [["."]])
    assert (got["exact_match"], got["squad_f1"]) == (1.0, 0.0)
    assert (got["has_answer_exact"], got["has_answer_f1"]) == (1.0, 1.0)
    got = scores(["the"], [[".", "cat"]])  # v2.0: only "cat" is left
    assert (got["exact_match"], got["has_answer_exact"]) == (1.0, 0.0)
    # An unanswerable question (no gold) is right only when the prediction normalizes to "".
    preds, refs = ["", "a", "cat", "cat"], [[], [], [], ["the cat"]]
    got = scores(preds, refs)
    assert got["no_answer_exact"] == pytest.approx(2 / 3)  # "" and "a" (an article) are empty
    assert got["has_answer_exact"] == got["has_answer_f1"] == 1.0
    assert got["exact_match"] == got["squad_f1"] == 0.75
    # a subset without questions of the kind scores 0 (the v2.0 script leaves the key out)
    assert scores(["cat"], [["cat"]])["no_answer_exact"] == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        compute_metrics(["squad_f1"], ["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="zero examples"):
        compute_metrics(["exact_match"], [], [])


# --- rows -----------------------------------------------------------------------------------------


def squad_json(path: Path, questions: list[dict], context: str, title: str = "Crafted") -> Path:
    path.write_text(json.dumps({"version": "2.0", "data": [{"title": title, "paragraphs": [
        {"context": context, "qas": questions}]}]}), encoding="utf-8")
    return path


def spec_of(tmp_path: Path, train: dict, test: dict | None = None, **task) -> object:
    files = {"train": train, **({"test": test} if test else {})}
    text = json.dumps({"encoder": "unused", "output_dir": str(tmp_path / "run"), "tasks": {
        "qa": {"type": "extractive_qa", "text": ["question", "context"], "label": "answers",
               "id": "id", "files": files, **task}}})
    (tmp_path / "qa.yaml").write_text(text, encoding="utf-8")
    return load_spec(tmp_path / "qa.yaml")


def read(tmp_path: Path, split: str = "train", **task) -> QAExamples:
    spec = spec_of(tmp_path, **task)
    return KIND.read(spec, spec.task("qa"), split)


def test_reads_the_real_squad_files(more: Path, monkeypatch):
    monkeypatch.setenv("MTDNN_MORE_DIR", str(more))
    spec = load_spec(SPEC)
    dev, train_rows = (KIND.read(spec, spec.task("squad"), s) for s in ("dev", "train"))
    assert (len(dev), len(train_rows)) == (10570, 11877)  # README: questions per file
    assert sum(len(a) for a in dev.answers) == 34726
    assert all(len(a) == 1 for a in train_rows.answers)
    assert dev.ids[0] == "56be4db0acb8001400a502ec" and dev.labels[0] == ["Denver Broncos"] * 3
    assert dev.questions[0] == "Which NFL team represented the AFC at Super Bowl 50?"
    # 344 dev questions have leading or trailing whitespace: stripped, as run_qa.py does
    assert all(q == q.strip() for q in dev.questions)
    # code-point offsets: every answer sits at its start, also after non-ASCII characters
    shifted = [(t, s, c) for a, c in zip(dev.answers, dev.contexts) for t, s in a
               if not c[:s].isascii()]
    assert len(shifted) == 5632 and all(c[s:s + len(t)] == t for t, s, c in shifted)
    limited = load_spec(SPEC, ["tasks.squad.max_eval_examples=7"])
    assert len(KIND.read(limited, limited.task("squad"), "dev")) == 7  # counts questions


def test_shipped_spec_validates_with_and_without_data(more, monkeypatch, capsys):
    monkeypatch.delenv("MTDNN_MORE_DIR", raising=False)
    assert main(["validate", str(SPEC), "--no-data"]) == 0
    spec = load_spec(SPEC)
    task = spec.task("squad")
    assert spec.data_dir is None and task.hub.path == "rajpurkar/squad"  # the Hub without a copy
    assert (spec.max_seq_length, task.doc_stride) == (384, 128)
    monkeypatch.setenv("MTDNN_MORE_DIR", str(more))
    assert main(["validate", str(SPEC)]) == 0
    out = capsys.readouterr().out
    assert "squad        extractive_qa  files: train 11877, dev 10570 rows" in out


def test_an_answer_off_its_start_names_the_file_the_question_and_the_fix(tmp_path):
    context = "Café au lait is served at the house by the sea."
    served = context.index("served")
    path = squad_json(tmp_path / "train.json", [
        {"id": "q-ok", "question": "What?",
         "answers": [{"text": "served", "answer_start": served}]},
        {"id": "q-byte", "question": "What?",  # a UTF-8 byte offset: one too far after "é"
         "answers": [{"text": "served", "answer_start": served + 1}]},
        {"id": "q-missing", "question": "Who?", "answers": [{"text": "milk", "answer_start": 0}]},
        {"id": "q-type", "question": "Who?", "answers": [{"text": "Café", "answer_start": "0"}]},
    ], context)
    with pytest.raises(DataError) as e:
        read(tmp_path, train={"path": str(path), "format": "squad"})
    assert e.value.source == str(path) and len(e.value.problems) == 3
    byte, missing, typ = e.value.problems
    assert byte == ("article 0 ('Crafted'), paragraph 0, id 'q-byte': answer 'served' is not the "
                    f"context's text at answer_start {served + 1} (that reads 'erved '; it occurs "
                    f"at {served}): answer_start counts characters (Unicode code points) from 0: "
                    "fix answer_start or the answer text")
    assert "id 'q-missing'" in missing and "it does not occur in the context" in missing
    assert "id 'q-type'" in typ and "answer_start an integer" in typ


def test_unanswerable_questions_need_allow_no_answer(tmp_path):
    context = "The old man lived in the house by the sea."
    path = squad_json(tmp_path / "v2.json", [
        {"id": "a", "question": " Where did he live? ", "is_impossible": False,
         "answers": [{"text": "the house by the sea", "answer_start": 21}]},
        {"id": "b", "question": "Who was his mother?", "is_impossible": True, "answers": [],
         "plausible_answers": [{"text": "The old man", "answer_start": 0}]},
    ], context)
    with pytest.raises(DataError, match=r"id 'b': no answer: a question without answers \(SQuAD "
                                        r"v2.0\) needs tasks.qa.allow_no_answer: true"):
        read(tmp_path, train={"path": str(path)})  # a .json SQuAD file, read without format:
    rows = read(tmp_path, train={"path": str(path)}, allow_no_answer=True)
    assert rows.labels == [["the house by the sea"], []]
    assert rows.questions == ["Where did he live?", "Who was his mother?"]
    assert rows.settings == QASettings(allow_no_answer=True)
    both = squad_json(tmp_path / "both.json", [{"id": "c", "question": "Q", "is_impossible": True,
                      "answers": [{"text": "The", "answer_start": 0}]}], context)
    with pytest.raises(DataError, match="is_impossible is true but the question has answers"):
        read(tmp_path, train={"path": str(both)}, allow_no_answer=True)


def test_json_lines_take_both_answer_shapes_and_a_test_split_needs_none(tmp_path):
    rows = [{"id": "h", "question": "Q1", "context": "the sea", "answers":
             {"text": ["sea", "the sea"], "answer_start": [4, 0]}},  # the Hub's rajpurkar/squad
            {"id": "s", "question": "Q2", "context": "a man", "answers":
             [{"text": "man", "answer_start": 2}]}]  # SQuAD JSON's list
    for name in ("train.jsonl", "train.json"):  # .json: JSON lines unless it holds {"data": ...}
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        got = read(tmp_path, train={"path": str(path)})
        assert got.answers == [[("sea", 4), ("the sea", 0)], [("man", 2)]] and got.ids == ["h", "s"]
    with pytest.raises(DataError, match=r"not valid JSON \(line 2, column 1: Extra data\); format: "
                                        "squad reads one JSON document"):
        read(tmp_path, train={"path": str(path), "format": "squad"})
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "question": "Q", "context": "c", "answers": "c"}) + "\n",
                   encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1, id 'x': answers 'c' \(a JSON string\) are "
                                        "neither"):
        read(tmp_path, train={"path": str(bad)})
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"id": "t", "question": "Q", "context": "c"}) + "\n",
                    encoding="utf-8")
    assert read(tmp_path, "test", train={"path": str(path)}, test={"path": str(test)}).labels \
        is None


def test_hub_dataset_as_rajpurkar_squad(tmp_path, monkeypatch):
    hub = datasets.Dataset.from_dict({
        "id": ["1", "2"], "title": ["T", "T"], "context": ["the cat sat", "a dog ran"],
        "question": [" who sat?", "what ran?"],
        "answers": [{"text": ["the cat"], "answer_start": [0]},
                    {"text": ["dog"], "answer_start": [2]}]})
    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: asked.append((a, k)) or hub)
    spec = load_spec(SPEC, ["data_dir=null"])
    rows = KIND.read(spec, spec.task("squad"), "dev")
    assert asked[0][0] == ("rajpurkar/squad", None) and asked[0][1]["split"] == "validation"
    assert rows.questions == ["who sat?", "what ran?"] and rows.labels == [["the cat"], ["dog"]]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: hub.remove_columns("answers"))
    with pytest.raises(DataError, match=r"no column\(s\) \['answers'\] in split 'validation'"):
        KIND.read(spec, spec.task("squad"), "dev")


@pytest.mark.parametrize(("settings", "problem"), [
    ({"text": ["question"]}, "tasks.qa.text: an extractive_qa task reads two columns"),
    ({"labels": ["a", "b"]}, "tasks.qa.labels: extractive_qa tasks take no label list"),
    ({"label": None}, "tasks.qa.label: name the answers column"),
    ({"null_threshold": 1.5}, "tasks.qa.null_threshold: is read only with allow_no_answer: true"),
    ({"metrics": ["squad_f1", "no_answer_exact"]}, "['no_answer_exact'] split the questions"),
    ({"doc_stride": -1}, "tasks.qa.doc_stride: must be >= 0, got -1"),
    ({"n_best": 0}, "tasks.qa.n_best: must be >= 1, got 0"),
    ({"max_answer_length": 0}, "tasks.qa.max_answer_length: must be >= 1, got 0"),
    ({"positive_label": "yes"}, "tasks.qa.positive_label: 'yes' is used by task types ranking"),
])
def test_spec_problems(tmp_path, settings, problem):
    with pytest.raises(SpecError, match=None) as e:
        spec_of(tmp_path, train={"path": "x.json"}, **settings)
    assert any(problem in p for p in e.value.problems), e.value.problems


def test_a_tsv_file_is_refused_and_doc_stride_goes_to_qa_tasks_only(tmp_path):
    with pytest.raises(SpecError, match="files.train.format: 'tsv': extractive_qa reads SQuAD"):
        spec_of(tmp_path, train={"path": "x.tsv", "format": "tsv"})
    (tmp_path / "c.yaml").write_text(json.dumps({"encoder": "x", "tasks": {"c": {
        "type": "classification", "text": ["s"], "labels": ["0", "1"], "doc_stride": 64,
        "files": {"train": "x.tsv"}}}}), encoding="utf-8")
    with pytest.raises(SpecError, match="tasks.c.doc_stride: 64 is used by task types "
                                        "extractive_qa only"):
        load_spec(tmp_path / "c.yaml")


# --- windows and decoding -------------------------------------------------------------------------


def examples(questions: list[str], contexts: list[str], answers=None, **settings) -> QAExamples:
    return QAExamples(task="qa", split="train", where="crafted", questions=questions,
                      contexts=contexts, answers=answers,
                      ids=[f"q{i}" for i in range(len(contexts))], settings=QASettings(**settings))


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer)


def test_windows_overlap_by_doc_stride_and_label_the_answer(tokenizer):
    words = ("the old man said that the house by the sea was his home for many years and " * 4)
    context = words + "his name was water"  # the answer, in the last window only
    start = context.index("water")
    rows = examples(["what was his name?"], [context], [[("water", start)]], doc_stride=8)
    train_ds = KIND.features(rows, tokenizer, 40, for_training=True, use_cache=False)
    eval_ds = KIND.features(rows, tokenizer, 40, for_training=False, use_cache=False)
    assert len(train_ds) == len(eval_ds) == 3 and set(eval_ds["example"][:]) == {0}
    offsets = eval_ds["offset_mapping"][:]
    question = [o is None for o in offsets[0]].index(False)  # [CLS] what was his name ? [SEP]
    assert question == 7 and eval_ds["cls_index"][:] == [0] * len(eval_ds)
    context_tokens = [[tuple(o) for o in offs if o is not None] for offs in offsets]
    for a, b in zip(context_tokens, context_tokens[1:]):
        assert a[-8:] == b[:8]  # consecutive windows share doc_stride tokens
    labels = train_ds["labels"][:]
    assert labels[:-1] == [[0, 0]] * (len(labels) - 1)  # the answer is not inside: [CLS]
    first, last = labels[-1]
    assert context[offsets[-1][first][0]:offsets[-1][last][1]] == "water"
    assert train_ds["input_ids"][:] == eval_ds["input_ids"][:]
    assert "offset_mapping" not in train_ds.features


def test_a_question_longer_than_a_window_allows_is_a_data_error(tokenizer):
    rows = examples(["where " * 30, "where?"], ["the sea"] * 2, doc_stride=8)
    with pytest.raises(DataError, match=r"question 'q0': 30 tokens, but a window of max_seq_length "
                                        r"40 that overlaps the next by doc_stride 8 holds at most "
                                        r"28 question tokens: raise max_seq_length \(40\)"):
        KIND.features(rows, tokenizer, 40, for_training=False, use_cache=False)
    with pytest.raises(DataError, match="tasks.qa.doc_stride 40 leaves no room for a question"):
        KIND.features(dataclasses.replace(rows, settings=QASettings(doc_stride=40)), tokenizer,
                      40, for_training=False, use_cache=False)


def windows(*offsets: list) -> datasets.Dataset:
    """Evaluation features of example 0 with these offset mappings ([CLS] first)."""
    return datasets.Dataset.from_dict({"example": [0] * len(offsets),
                                       "cls_index": [0] * len(offsets),
                                       "offset_mapping": list(offsets)})


CONTEXT = "aa bb cc dd ee"
# [CLS] q [SEP] aa bb cc dd ee [SEP]
OFFSETS = [None, None, None, [0, 2], [3, 5], [6, 8], [9, 11], [12, 14], None]


def logits(start: dict[int, float], end: dict[int, float], n: int = 9) -> np.ndarray:
    out = np.zeros((n, 2), dtype=np.float32)
    for i, v in start.items():
        out[i, 0] = v
    for i, v in end.items():
        out[i, 1] = v
    return out


def decode(outputs: list[np.ndarray], ds: datasets.Dataset, **settings) -> list:
    return best_answers(outputs, ds, examples(["q"], [CONTEXT], **settings))


def test_decoding_by_hand():
    ds = windows(OFFSETS)
    best = decode([logits({4: 3, 1: 9}, {5: 2, 1: 9})], ds)[0]  # question tokens never answer
    assert (best.text, best.start, best.end) == ("bb cc", 3, 8)
    # start dd + end bb would score 10, but ends before it starts: bb alone scores 9
    assert decode([logits({6: 5, 4: 4}, {4: 5, 6: 1})], ds)[0].text == "bb"
    # max_answer_length counts tokens: aa..ee is 5 of them
    span = logits({3: 5, 7: 2}, {7: 5, 3: 1})
    assert decode([span], ds, max_answer_length=5)[0].text == CONTEXT
    assert decode([span], ds, max_answer_length=4)[0].text == "ee"  # 7 beats aa's 6
    # n_best: only the best n starts and ends are paired; cc..aa is no span, so none is left
    crossed = logits({5: 2, 3: 1}, {3: 2, 5: 1})
    assert decode([crossed], ds, n_best=1)[0].text == ""
    assert decode([crossed], ds, n_best=2)[0].text == "cc"  # ties with aa, found first
    # the score: the probability among the n best candidates (utils_qa's softmax): 4 and 3
    best = decode([logits({3: 2, 4: 1}, {3: 1, 4: 2})], ds, n_best=2)[0]
    assert (best.text, best.score) == ("aa bb", pytest.approx(1 / (1 + math.exp(-1))))


def test_the_best_span_over_windows_and_the_null_answer():
    second = [None, None, None, [6, 8], [9, 11], [12, 14], None]
    ds = windows(OFFSETS, second)
    outputs = [logits({3: 4}, {3: 4}), logits({0: 6, 4: 5}, {0: 6, 4: 5}, n=7)]
    assert decode(outputs, ds)[0].text == "dd"  # 10 in the second window beats 8 in the first
    # allow_no_answer: the null score is the smallest [CLS] start + end over the windows (0 here)
    no_null = logits({0: 1, 3: 4}, {0: 1, 3: 4})
    best = decode([no_null, logits({0: 6, 4: 5}, {0: 6, 4: 5}, n=7)], ds, allow_no_answer=True)[0]
    assert best.text == "dd"  # null 2 (the first window's) vs 10
    null = [logits({0: 9, 3: 4}, {0: 9, 3: 4}), logits({0: 9, 4: 3}, {0: 9, 4: 3}, n=7)]
    best = decode(null, ds, allow_no_answer=True)[0]
    assert (best.text, best.start, best.end) == ("", 0, 0)  # 18 - 8 = 10 > 0
    assert decode(null, ds, allow_no_answer=True, null_threshold=10.0)[0].text == "aa"
    assert decode(null, ds, allow_no_answer=True, null_threshold=9.9)[0].text == ""
    # a context without tokens (empty) has no span: ""
    assert decode([logits({}, {}, n=4)], windows([None] * 4))[0].text == ""


def brute_force(out: np.ndarray, offsets: list, max_len: int) -> tuple[float, int, int]:
    """The best start + end logit over every valid span of one window, by enumeration."""
    inside = [i for i, o in enumerate(offsets) if o is not None]
    return max((out[i, 0] + out[j, 1], offsets[i][0], offsets[j][1])
               for i in inside for j in inside if i <= j < i + max_len)


def test_decoding_equals_a_brute_force_search_when_n_best_covers_every_token():
    rng = np.random.default_rng(0)
    ds = windows(OFFSETS, OFFSETS[:6] + [None])
    for _ in range(200):
        outs = [rng.normal(size=(n, 2)).astype(np.float32) for n in (9, 7)]
        want = max(brute_force(o, f, 2) for o, f in zip(outs, ds["offset_mapping"][:]))
        got = decode(outs, ds, n_best=9, max_answer_length=2)[0]
        assert (got.start, got.end) == want[1:]


def test_loss_is_the_mean_start_and_end_cross_entropy_over_real_tokens():
    torch.manual_seed(0)
    out = torch.randn(2, 5, 2)
    labels = torch.tensor([[1, 2], [0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    loss = KIND.loss(_mask_padding(out, mask), labels, {})
    row = [-torch.log_softmax(out[b, :n, k], 0)[labels[b, k]] for b, n in ((0, 5), (1, 3))
           for k in (0, 1)]
    assert loss.item() == pytest.approx(((row[0] + row[2]) / 2 + (row[1] + row[3]) / 2).item() / 2)
    padded = out.clone()
    padded[1, 3:] = 50.0  # the head's outputs at padding do not matter
    assert KIND.loss(_mask_padding(padded, mask), labels, {}).item() == pytest.approx(loss.item())
    assert KIND.loss(_mask_padding(out.half(), mask), labels, {}).isfinite()


# --- training on real SQuAD questions: the CLI, resume, strategies, export ------------------------

STEPS = 6
SETTINGS = [f"train.max_steps={STEPS}", f"train.eval_every={STEPS}", "train.save_every=3",
            "train.log_every=1"]
SIDE = [("the man is very old", "1"), ("a new house by the sea", "0"), ("he is an old man", "1"),
        ("the new school year", "0")] * 4


def write_spec(root: Path, tiny_bert: str, more: Path) -> Path:
    """The shipped spec on the tiny BERT and 12 real training questions (the tiny tokenizer knows
    few words: windows of 128 tokens overlapping by 16), its head on layer 1 of 2, the task
    embedding, and a small classification task beside it. n_best covers a whole window, so that a
    brute-force search over every span gives the same answers."""
    side = root / "side.tsv"
    side.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in SIDE),
                    encoding="utf-8")
    task = {"max_train_examples": 12, "max_eval_examples": 6, "doc_stride": 16, "layer": 1,
            "n_best": 128}
    other = {"type": "classification", "text": ["sentence"], "labels": ["0", "1"],
             "files": {"train": str(side), "dev": str(side)}}
    path = root / "spec.yaml"
    path.write_text(f"""
include: [{SPEC}]
encoder: {tiny_bert}
data_dir: {more}
output_dir: {root / 'run'}
max_seq_length: 128
task_embedding: true
train: {{batch_size: 8, eval_batch_size: 32, learning_rate: 1.0e-3, report_to: [none]}}
tasks:
  squad: {json.dumps(task)}
  side: {json.dumps(other)}
""", encoding="utf-8")
    return path


def tensors(directory: Path) -> dict:
    from safetensors.torch import load_file

    return {**load_file(str(directory / "model.safetensors")),
            **load_file(str(directory / "heads.safetensors"))}


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert, more, one_thread) -> Path:
    """An uninterrupted alternating run (the reference of the resume test)."""
    from mtdnn.trainer import train

    root = tmp_path_factory.mktemp("squad")
    result = train(load_spec(write_spec(root, tiny_bert, more), SETTINGS), progress=False)
    assert set(result.metrics) == {"squad", "side"}
    return root / "run"


def dev_questions(more: Path, n: int = 6) -> tuple[list[dict], list[list[str]]]:
    data = json.loads((more / "squad" / "dev-v1.1.json").read_text(encoding="utf-8"))["data"]
    qas = [(qa, p["context"]) for p in data[0]["paragraphs"] for qa in p["qas"]][:n]
    return ([{"id": qa["id"], "question": qa["question"], "context": c} for qa, c in qas],
            [[a["text"] for a in qa["answers"]] for qa, _ in qas])


def test_training_reports_the_metrics_and_the_baseline(run):
    metrics = json.loads((run / "metrics.json").read_text())["tasks"]
    assert set(metrics["squad"]["dev"]) == {"squad_f1", "exact_match"}
    table = (run / "results.md").read_text()
    assert "| squad | squad_f1 |" in table and "| side | accuracy |" in table
    row = next(x for x in table.splitlines() if x.startswith("| squad | squad_f1 |"))
    assert not row.endswith("| - |")  # the first-words baseline is scored
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss/squad"] for r in log if "loss/squad" in r]
    assert losses and all(np.isfinite(losses))


def test_stop_and_resume_is_bitwise_identical(run, tmp_path, tiny_bert, more, one_thread):
    from mtdnn.trainer import train

    spec = load_spec(write_spec(tmp_path, tiny_bert, more), SETTINGS)
    train(spec, progress=False, stop_after=3)
    train(spec, progress=False, resume=True)
    a, b = tensors(run / "best"), tensors(tmp_path / "run" / "best")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert (run / "metrics.json").read_text() == (tmp_path / "run" / "metrics.json").read_text()


def test_joint_steps_from_the_cli(tmp_path, tiny_bert, more, one_thread):
    spec = write_spec(tmp_path, tiny_bert, more)
    assert main(["train", str(spec), "train.step_mode=joint", "train.max_steps=2",
                 "train.log_every=1", "--no-progress"]) == 0
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "lr" in r]
    assert len(steps) == 2 and all("loss/squad" in r and "loss/side" in r for r in steps)


def test_cli_evaluate_reproduces_the_dev_metrics(run, more, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(run / "best"), "--tasks", "squad", "--data-dir", str(more),
                 "--output", str(out)]) == 0
    trained = json.loads((run / "best" / "metrics.json").read_text())["tasks"]["squad"]
    assert json.loads(out.read_text())["squad"] == trained


def test_cli_predict_answers_with_offsets_and_the_training_settings(run, more, tmp_path):
    rows, golds = dev_questions(more)
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(run / "best"), "--task", "squad", "--input", str(inputs),
                 "--output", str(out)]) == 0
    got = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [g["id"] for g in got] == [r["id"] for r in rows]
    for g, r in zip(got, rows):
        assert set(g) == {"id", "answer", "score", "start", "end"} and 0 < g["score"] <= 1
        assert g["answer"] == r["context"][g["start"]:g["end"]] != ""
    # the same answers as the evaluation during training (its doc_stride and n_best): the same F1
    trained = json.loads((run / "best" / "metrics.json").read_text())["tasks"]["squad"]["dev"]
    assert compute_metrics(["squad_f1"], [g["answer"] for g in got], golds) == \
        {"squad_f1": trained["squad_f1"]}
    model = MultiTaskModel.from_pretrained(run / "best")
    pairs = [(r["question"], r["context"]) for r in rows]
    assert [p["answer"] for p in model.predict("squad", pairs)] == [g["answer"] for g in got]
    assert model.predict("squad", [{"question": "Who?", "context": "the man"}])[0]["answer"]
    with pytest.raises(ValueError, match=r"input 0: 'Who\?' is not a \(question, context\) pair"):
        model.predict("squad", ["Who?"])


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "squad"
    assert main(["export", str(run / "best"), "--task", "squad", "--output", str(out)]) == 0
    return out


def plain_answers(export_dir: Path, rows: list[dict], stride: int, max_len: int) -> list[str]:
    """Answers from the export with plain transformers: run_qa's windows, every span of at most
    max_len context tokens, the best start + end logit over the windows."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    model = AutoModelForQuestionAnswering.from_pretrained(export_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    answers = []
    for r in rows:
        enc = tokenizer(r["question"], r["context"], truncation="only_second", stride=stride,
                        max_length=tokenizer.model_max_length, return_overflowing_tokens=True,
                        return_offsets_mapping=True, padding=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping").tolist()
        enc.pop("overflow_to_sample_mapping")
        with torch.no_grad():
            out = model(**enc)
        logits = torch.stack([out.start_logits, out.end_logits], -1).numpy()
        best = max(brute_force(logits[w], [o if s == 1 else None for o, s in
                                           zip(offsets[w], enc.sequence_ids(w))], max_len)
                   for w in range(len(offsets)))
        answers.append(r["context"][best[1]:best[2]])
    return answers


def test_export_is_a_question_answering_model_with_the_answers_of_predict(run, exported, more):
    from transformers import AutoModelForQuestionAnswering

    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["BertForQuestionAnswering"]
    assert config["num_hidden_layers"] == 1  # the head reads layer 1: the layer above is cut
    ours = MultiTaskModel.from_pretrained(run / "best")
    rows, _ = dev_questions(more)
    dataset = KIND.features(ours_examples := KIND.examples_from_inputs(
        ours.tasks["squad"], [(r["question"], r["context"]) for r in rows]), ours.tokenizer, 128,
        for_training=False, use_cache=False)
    assert len(dataset) > len(rows)  # real contexts take several windows
    batch = KIND.collator(ours.tokenizer)([{k: dataset[i][k] for k in ("input_ids",
                                            "token_type_ids")} for i in range(len(dataset))])
    theirs = AutoModelForQuestionAnswering.from_pretrained(exported).eval()
    with torch.no_grad():
        expected = ours("squad", **batch)["logits"]  # the task vector is folded into the export
        got = KIND.exported_logits(theirs, dict(batch))
    real = batch["attention_mask"].bool()
    assert expected[real].abs().mean() > 0.01 and (got - expected).abs().max().item() <= 1e-5
    # transformers 5 removed pipeline("question-answering"): its decoding by plain transformers
    predicted = [p["answer"] for p in ours.predict("squad", [(r["question"], r["context"])
                                                               for r in rows])]
    assert predicted == plain_answers(exported, rows, stride=16, max_len=30)
    assert ours_examples.settings.n_best == 128  # the checkpoint's settings (see write_spec)


def test_model_card_says_question_answering(run):
    import yaml

    from mtdnn.hub import model_card

    card = model_card(run / "best", task="squad")
    meta = yaml.safe_load(card.split("\n---\n", 1)[0][4:])
    assert meta["pipeline_tag"] == "question-answering"
    assert meta["model-index"][0]["results"][0]["task"] == {"type": "question-answering",
                                                           "name": "Question Answering"}


@pytest.mark.parametrize("arch", ["bert", "roberta", "electra", "deberta-v2"])
def test_export_logits_equal_on_four_architectures(tmp_path, tiny_bert, arch):
    from test_export import tiny_encoder
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from mtdnn.export import export
    from mtdnn.model import load_encoder

    encoder = tiny_bert if arch == "bert" else tiny_encoder(tmp_path / arch, arch, tiny_bert)
    info = TaskInfo("qa", "extractive_qa", text_columns=["question", "context"], layer=-1)
    model = MultiTaskModel(load_encoder(encoder), [info], task_embedding=True)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random heads and task vectors far from zero
        for p in [*model.heads.parameters(), model.task_embedding.weight]:
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    model.save_pretrained(tmp_path / "ckpt", tokenizer=AutoTokenizer.from_pretrained(encoder),
                          extra={"max_seq_length": 64, "step": 1})
    out = export(tmp_path / "ckpt", "qa", tmp_path / "out")
    theirs = AutoModelForQuestionAnswering.from_pretrained(out).eval()
    ids = torch.randint(5, theirs.config.vocab_size, (3, 20), generator=generator)
    mask = torch.ones_like(ids)
    ids[1, 12:], mask[1, 12:] = theirs.config.pad_token_id, 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if arch == "bert":
        batch["token_type_ids"] = (torch.arange(20) >= 8).long().expand(3, 20) * mask
    ours = MultiTaskModel.from_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        expected = ours("qa", **batch)["logits"]
        got = KIND.exported_logits(theirs, batch)
    assert got.shape == expected.shape == (3, 20, 2) and expected[mask.bool()].abs().mean() > 0.1
    assert (got - expected).abs().max().item() <= 1e-5


def test_export_of_an_architecture_without_a_known_head_is_refused(tmp_path, tiny_bert):
    from test_export import tiny_encoder
    from transformers import AutoTokenizer

    from mtdnn.errors import UserError
    from mtdnn.export import export
    from mtdnn.model import load_encoder

    encoder = tiny_encoder(tmp_path / "distilbert", "distilbert", tiny_bert)
    model = MultiTaskModel(load_encoder(encoder), [TaskInfo("qa", "extractive_qa")])
    model.save_pretrained(tmp_path / "ckpt", tokenizer=AutoTokenizer.from_pretrained(encoder))
    with pytest.raises(UserError, match="cannot export an extractive_qa head for model_type "
                                        "'distilbert'.*--encoder-only"):
        export(tmp_path / "ckpt", "qa", tmp_path / "out")


@pytest.mark.slow
def test_minilm_learns_squad(tmp_path, more, minilm_path, one_thread):
    """The real MiniLM on 1,500 real training questions beats the trivial baseline on 300 dev
    questions by a wide margin (250 steps: 24 minutes on 2 busy CPU cores; measured F1 0.42 and
    EM 0.35 against the baseline's 0.03 and 0.01)."""
    from mtdnn.trainer import train

    spec = load_spec(SPEC, [f"encoder={minilm_path}", f"data_dir={more}",
                            f"output_dir={tmp_path / 'run'}", "max_seq_length=256",
                            "tasks.squad.max_train_examples=1500",
                            "tasks.squad.max_eval_examples=300", "train.max_steps=250",
                            "train.batch_size=16", "train.report_to=[none]"])
    result = train(spec, progress=False)
    dev, baseline = result.metrics["squad"]["dev"], result.baselines["squad"]
    assert dev["squad_f1"] > baseline["squad_f1"] + 0.2 and dev["exact_match"] > 0.1, \
        (dev, baseline)
