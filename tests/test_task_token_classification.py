"""Tests of mtdnn/tasks/token_classification.py on the real CoNLL-2003 files: reading (CoNLL,
JSON lines, a Hub-style dataset with ClassLabel sequences) and its errors, the spec checks, sub-word
alignment and windows, the metrics against seqeval (IOB1 and IOB2 files, hand cases), training NER,
POS and chunking together (alternating and joint steps, hierarchical layers, task embedding, exact
resume), predict, export with logit parity and `pipeline("token-classification")` parity, the
model card, and the shipped task_specs/conll2003.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SPECS, write_spec

from mtdnn.errors import DataError, SpecError
from mtdnn.spec import load_spec, spec_from_dict
from mtdnn.tasks import task_type
from mtdnn.tasks.token_classification import (
    entity_f1,
    entity_precision,
    entity_recall,
    entity_spans,
    token_accuracy,
)

NER = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
KIND = task_type("token_classification")


def _spec(tasks: dict, data_dir: str | Path | None = None, **extra):
    return spec_from_dict({"encoder": "x", "data_dir": str(data_dir) if data_dir else None,
                           "tasks": tasks, **extra})


def _ner(files: dict, **extra) -> dict:
    return {"type": "token_classification", "text": [0], "label": 3, "labels": NER,
            "files": files, **extra}


def _names(examples) -> list[list[str]]:
    return [[examples.tag_names[t] for t in s] for s in examples.labels]


# --------------------------------------------------------------------------------------------------
# Reading and metrics on the real files


@pytest.fixture(scope="module")
def dev_both(more: Path):
    """CoNLL-2003 dev as IOB2 (valid.txt) and as the original IOB1 (eng.testa)."""
    spec = _spec({"iob2": _ner({"train": "conll2003/valid.txt"}),
                  "iob1": _ner({"train": {"path": "conll2003/original_iob1/eng.testa",
                                          "format": "conll"}})}, more)
    return (KIND.read(spec, spec.task("iob2"), "train"),
            KIND.read(spec, spec.task("iob1"), "train"))


def test_iob1_and_iob2_files_give_the_same_sentences_and_entities(dev_both):
    from seqeval.scheme import IOB1, IOB2, Entities

    iob2, iob1 = dev_both
    assert iob2.tokens == iob1.tokens and len(iob2) == 3250  # the README's counts
    assert sum(map(len, iob2.tokens)) == 51362
    spans2 = [entity_spans(w, t) for w, t in zip(iob2.tokens, _names(iob2))]
    assert spans2 == [entity_spans(w, t) for w, t in zip(iob1.tokens, _names(iob1))]
    counts: dict[str, int] = {}
    for span in (s for sentence in spans2 for s in sentence):
        counts[span["type"]] = counts.get(span["type"], 0) + 1
    assert counts == {"LOC": 1837, "MISC": 922, "ORG": 1341, "PER": 1842}  # README: 5,942
    # seqeval's strict mode reads each file with its own scheme to the same entities
    strict2 = Entities(_names(iob2), IOB2).entities
    strict1 = Entities(_names(iob1), IOB1).entities
    assert [[e.to_tuple() for e in s] for s in strict2] == \
        [[e.to_tuple() for e in s] for s in strict1]
    assert sum(map(len, strict2)) == 5942
    # conlleval chunking reads IOB1 predictions against IOB2 references as the same entities
    assert entity_f1(_names(iob1), _names(iob2)) == 1.0
    assert token_accuracy(_names(iob1), _names(iob2)) < 1.0


def test_metrics_are_seqeval_on_perturbed_dev_predictions(dev_both):
    import random

    from seqeval import metrics
    from seqeval.scheme import IOB2

    iob2, _ = dev_both
    gold = _names(iob2)[:1000]
    iob2 = KIND.subset(iob2, range(1000))
    rng = random.Random(0)
    pred = [[rng.choice(NER) if rng.random() < 0.1 else t for t in s] for s in gold]
    for mine, theirs in ((entity_f1, metrics.f1_score), (entity_precision,
                                                         metrics.precision_score),
                         (entity_recall, metrics.recall_score)):
        assert mine(pred, gold) == theirs(gold, pred)
        assert mine(pred, gold, scheme="IOB2") == theirs(gold, pred, mode="strict", scheme=IOB2)
    assert token_accuracy(pred, gold) == metrics.accuracy_score(gold, pred)
    # the task's score reads the scheme from the examples (tasks.<name>.tag_scheme)
    import dataclasses

    strict = KIND.score(["entity_f1"], pred, dataclasses.replace(iob2, tag_scheme="IOB2"))
    assert strict["entity_f1"] == metrics.f1_score(gold, pred, mode="strict", scheme=IOB2)
    assert strict["entity_f1"] != KIND.score(["entity_f1"], pred, iob2)["entity_f1"]


@pytest.mark.parametrize("gold, pred, scheme, expected", [
    # one of two entities right: P = R = F1 = 1/2; 3 of 4 words right
    ([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-ORG"]], None,
     (0.5, 0.5, 0.5, 0.75)),
    # conlleval starts an entity at I- after O; IOB2's strict mode does not
    ([["B-PER", "I-PER"]], [["I-PER", "I-PER"]], None, (1.0, 1.0, 1.0, 0.5)),
    ([["B-PER", "I-PER"]], [["I-PER", "I-PER"]], "IOB2", (0.0, 0.0, 0.0, 0.5)),
    # IOB1 (B- only between adjacent same-type entities) against IOB2: the same two entities
    ([["I-PER", "I-PER", "B-PER"]], [["B-PER", "I-PER", "B-PER"]], None, (1.0, 1.0, 1.0, 2 / 3)),
    # BILOU strict: B-PER never closed by L-PER is no entity
    ([["U-PER", "O", "B-LOC", "L-LOC"]], [["B-PER", "O", "B-LOC", "L-LOC"]], "BILOU",
     (2 / 3, 1.0, 0.5, 0.75)),
    # nothing predicted: precision 0 (seqeval's value), no warning
    ([["B-PER", "O"]], [["O", "O"]], None, (0.0, 0.0, 0.0, 0.5)),
])
def test_metrics_on_hand_cases(gold, pred, scheme, expected):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = (entity_f1(pred, gold, scheme=scheme), entity_precision(pred, gold, scheme=scheme),
               entity_recall(pred, gold, scheme=scheme), token_accuracy(pred, gold))
    assert got == pytest.approx(expected)


def test_entity_spans():
    words = ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
    tags = ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]
    assert entity_spans(words, tags) == [
        {"type": "ORG", "start": 0, "end": 1, "text": "EU"},
        {"type": "MISC", "start": 2, "end": 3, "text": "German"},
        {"type": "MISC", "start": 6, "end": 7, "text": "British"}]
    assert entity_spans(["New", "York", "rocks"], ["B-LOC", "L-LOC", "U-PER"]) == [
        {"type": "LOC", "start": 0, "end": 2, "text": "New York"},
        {"type": "PER", "start": 2, "end": 3, "text": "rocks"}]


# --------------------------------------------------------------------------------------------------
# Reading: formats, limits and bad rows


def test_conll_reader_skips_docstart_and_blank_lines_and_counts_sentences(tmp_path):
    (tmp_path / "a.txt").write_text(
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\n"
        "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n-DOCSTART- -X- -X- O\n"
        "BRUSSELS NNP B-NP B-LOC\n", encoding="utf-8")
    spec = _spec({"ner": _ner({"train": "a.txt"}, max_train_examples=2)}, tmp_path)
    rows = KIND.read(spec, spec.task("ner"), "train")
    assert rows.tokens == [["EU", "rejects"], ["Peter", "Blackburn"]]  # 3 sentences, 2 kept
    assert _names(rows) == [["B-ORG", "O"], ["B-PER", "I-PER"]] and rows.ids == ["0", "1"]


def test_a_tag_outside_the_list_names_file_line_value_and_fix(tmp_path):
    (tmp_path / "a.conll").write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nBonn NNP B-NP "
                                      "B-GPE\nand CC O O\nBerlin NNP B-NP B-GPE\n",
                                      encoding="utf-8")
    spec = _spec({"ner": _ner({"train": "a.conll"})}, tmp_path)
    with pytest.raises(DataError) as e:
        KIND.read(spec, spec.task("ner"), "train")
    assert e.value.source.endswith("a.conll")
    assert e.value.problems == [
        f"line 4: tag 'B-GPE' is not in tasks.ner.labels {NER} (add it to the list, or fix the "
        "tag); 2 words have it"]


def test_short_conll_line_and_test_file_without_tags(tmp_path):
    (tmp_path / "a.txt").write_text("EU NNP B-NP B-ORG\nrejects VBZ\n", encoding="utf-8")
    (tmp_path / "t.txt").write_text("EU\nrejects\n\nPeter\n", encoding="utf-8")
    spec = _spec({"ner": _ner({"train": "a.txt", "test": "t.txt"})}, tmp_path)
    with pytest.raises(DataError, match=r"line 2: 2 field\(s\) \['rejects', 'VBZ'\], the columns "
                                        r"read need 4"):
        KIND.read(spec, spec.task("ner"), "train")
    test = KIND.read(spec, spec.task("ner"), "test")
    assert test.tokens == [["EU", "rejects"], ["Peter"]] and test.labels is None


def test_json_lines_rows_and_their_errors(tmp_path):
    good = [{"id": "a", "words": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
            {"id": "b", "words": "Peter Blackburn", "tags": ["B-PER", "I-PER"]}]
    (tmp_path / "good.jsonl").write_text("\n".join(map(json.dumps, good)), encoding="utf-8")
    bad = [{"id": "a", "words": ["EU", "rejects"], "tags": ["B-ORG"]},
           {"id": "b", "tokens": ["x"], "tags": ["O"]},
           {"id": "c", "words": ["x", 3, ""], "tags": ["O", "O", "O"]},
           {"id": "d", "words": ["x"], "tags": [5]}]
    (tmp_path / "bad.jsonl").write_text("\n".join(map(json.dumps, bad)), encoding="utf-8")
    task = {"type": "token_classification", "text": ["words"], "label": "tags", "id": "id",
            "labels": NER}
    spec = _spec({"ner": {**task, "files": {"train": "good.jsonl", "dev": "bad.jsonl"}}},
                 tmp_path)
    rows = KIND.read(spec, spec.task("ner"), "train")
    assert rows.tokens == [["EU", "rejects"], ["Peter", "Blackburn"]] and rows.ids == ["a", "b"]
    with pytest.raises(DataError) as e:
        KIND.read(spec, spec.task("ner"), "dev")
    assert e.value.problems == [
        "line 1: 'tags' is [\"B-ORG\"], not a list of one tag per word",
        "line 2: no key 'words' (the row has keys ['id', 'tokens', 'tags']; set "
        "tasks.ner.files.dev.text)",
        "line 3: 'words' has words that are not text: word 2 is 3 (a JSON number), word 3 is '' "
        "(a JSON string)",
        f"line 4, word 1: tag 5 (a JSON number) is not in tasks.ner.labels {NER} (add it to the "
        "list, or fix the tag)"]


def test_hub_dataset_with_classlabel_sequences(tmp_path):
    """A local parquet dataset written by `datasets` keeps its ClassLabel features, as the Hub's
    eriktks/conll2003 does: tag ids become names through the feature."""
    import datasets

    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    features = datasets.Features({
        "id": datasets.Value("string"), "tokens": datasets.Sequence(datasets.Value("string")),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    folder = tmp_path / "hubcopy"
    folder.mkdir()
    for split, rows in {"train": [["EU", "rejects"], [3, 0]],
                        "validation": [["Peter", "Blackburn"], [1, 2]]}.items():
        datasets.Dataset.from_dict({"id": ["0"], "tokens": [rows[0]], "ner_tags": [rows[1]]},
                                   features=features).to_parquet(folder / f"{split}.parquet")
    hub = {"path": str(folder), "text": ["tokens"], "label": "ner_tags", "id": "id"}
    ner = {**_ner({}), "files": {}, "hub": hub, "labels": list(reversed(NER))}
    spec = _spec({"ner": ner})
    dev = KIND.read(spec, spec.task("ner"), "dev")
    assert dev.tokens == [["Peter", "Blackburn"]] and _names(dev) == [["B-PER", "I-PER"]]
    spec = _spec({"ner": {**ner, "labels": ["O", "B-ORG", "B-PER"]}})
    with pytest.raises(DataError, match=r"row 0, word 2: tag 'I-PER' is not in tasks.ner.labels"):
        KIND.read(spec, spec.task("ner"), "dev")


# --------------------------------------------------------------------------------------------------
# Spec checks


@pytest.mark.parametrize("change, message", [
    ({"text": [0, 1]}, "tasks.ner.text: a token_classification task reads one column"),
    ({"labels": ["O"]}, "tasks.ner.labels: the tag set: at least 2 unique tags"),
    ({"labels": ["O", "O", "B-PER"]}, "tasks.ner.labels: the tag set: at least 2 unique tags"),
    ({"labels": ["NN", "VB"]}, r"the entity metrics \['entity_f1', 'entity_precision', "
                               r"'entity_recall'\] read\(s\) tags O and B-, I-, E-, S-TYPE; "
                               r"\['NN', 'VB'\] are not \(score tags that mark no entities \(POS\) "
                               r"with metrics: \[token_accuracy\]\)"),
    ({"labels": ["O", "B-PER", "L-PER", "U-PER"]}, r"\['L-PER', 'U-PER'\] are not \(set "
                                                   r"tag_scheme: BILOU\)"),
    ({"tag_scheme": "IOE2"}, r"tag_scheme IOE2 read\(s\) tags O and I-, E-TYPE; \['B-PER'"),
    ({"metrics": ["accuracy"]}, r"\['accuracy'\] do not score tag sequences"),
    ({"files": {"train": "a.tsv"}}, "tasks.ner.files.train.format: .*a.tsv: a "
                                    "token_classification task reads CoNLL-style files"),
    ({"text": ["tokens"]}, r"CoNLL columns are 0-based positions, not names"),
    ({"label": None}, "tasks.ner.label: give the column of the tags"),
])
def test_spec_checks(change, message):
    with pytest.raises(SpecError, match=message):
        _spec({"ner": {**_ner({"train": "a.txt"}), **change}})


def test_tag_scheme_belongs_to_token_classification_only(tmp_path):
    (tmp_path / "a.txt").write_text("EU NNP B-NP B-ORG\n", encoding="utf-8")
    with pytest.raises(SpecError, match="tasks.rte.tag_scheme: 'IOB2' is used by task types "
                                        "token_classification only"):
        _spec({"rte": {"type": "classification", "text": ["a"], "labels": ["x", "y"],
                       "tag_scheme": "IOB2", "files": {"train": "a.tsv"}}})
    spec = _spec({"ner": _ner({"train": "a.txt"}, tag_scheme="IOB2")}, tmp_path)
    assert spec.tasks[0].tag_scheme == "IOB2"


def test_shipped_spec_validates_with_and_without_the_data(more, monkeypatch, capsys):
    from mtdnn.cli import main

    path = str(SPECS / "conll2003.yaml")
    monkeypatch.delenv("MTDNN_MORE_DIR", raising=False)
    assert main(["validate", path, "--no-data"]) == 0
    spec = load_spec(path)
    assert {t.name: (t.layer, len(t.labels)) for t in spec.tasks} == \
        {"ner": (None, 9), "pos": (2, 45), "chunk": (4, 21)}
    assert {t.hub.label for t in spec.tasks} == {"ner_tags", "pos_tags", "chunk_tags"}
    # token classification trains on random batches unless a task or nothing else says so
    assert [spec.group_by_length(t) for t in spec.tasks] == [False, False, False]
    grouped = load_spec(path, ["tasks.ner.group_by_length=true"])
    assert [grouped.group_by_length(t) for t in grouped.tasks] == [True, False, False]
    monkeypatch.setenv("MTDNN_MORE_DIR", str(more))
    assert main(["validate", path]) == 0
    out = capsys.readouterr().out
    assert "pos          token_classification files: train 14041, dev 3250, test 3453" in out


# --------------------------------------------------------------------------------------------------
# Features


def test_long_sentences_become_windows_of_whole_words(dev_both, tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    dev = KIND.subset(dev_both[0], range(60))
    for max_len in (12, 4096):  # the tiny tokenizer splits most words into characters
        ds = KIND.features(dev, tokenizer, max_len, for_training=True, use_cache=False)
        assert max(ds["length"]) <= max_len
        first = {}
        for i, word_ids, labels in zip(ds["index"], ds["word_ids"], ds["labels"]):
            for w, label in zip(word_ids, labels):
                assert (label == -100) == (w < 0)
                if w >= 0:
                    assert (i, w) not in first
                    first[i, w] = label
        # every word has exactly one first sub-word, which carries its tag
        assert first == {(i, w): t for i, s in enumerate(dev.labels) for w, t in enumerate(s)}
    assert ds["index"] == list(range(60))  # 4096 fits every sentence


def test_a_word_without_sub_words_and_a_word_longer_than_a_window(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    info = type("Info", (), {"name": "ner", "labels": NER})()
    examples = KIND.examples_from_inputs(info, [["a", "\u200b", "b"], ["x" * 30, "the"]])
    ds = KIND.features(examples, tokenizer, 8, for_training=False, use_cache=False)
    assert tokenizer.unk_token_id in ds[0]["input_ids"]  # the zero-width space reads as [UNK]
    assert ds["word_ids"] == [[-1, 0, 1, 2, -1], [-1, 0, -1, -1, -1, -1, -1, -1], [-1, 1, -1]]


def _byte_level_bpe(directory: Path) -> str:
    """A tiny RoBERTa-style tokenizer (byte-level BPE, no add_prefix_space), trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["EU rejects German call to boycott British lamb ."] * 20,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=[
                                "<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    RobertaTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                         pad_token="<pad>", unk_token="<unk>", mask_token="<mask>"
                         ).save_pretrained(directory)
    return str(directory)


def test_byte_level_words_get_the_sub_words_of_running_text(tmp_path, tiny_bert):
    """RoBERTa-style tokenizers see each word as inside a sentence (what `add_prefix_space=True`
    gives, as the HF NER example loads them), not as a text's first word; WordPiece is as is."""
    from transformers import AutoTokenizer

    info = type("Info", (), {"name": "ner", "labels": NER})()
    words = ["EU", "rejects", "German", "lamb"]
    examples = KIND.examples_from_inputs(info, [words])
    path = _byte_level_bpe(tmp_path / "bpe")
    plain = AutoTokenizer.from_pretrained(path)
    # the trap: each word tokenized as a text's first word
    assert plain(words, is_split_into_words=True).tokens() == [
        "<s>", "EU", "rej", "ects", "Ge", "rman", "lam", "b", "</s>"]
    prefixed = AutoTokenizer.from_pretrained(path, add_prefix_space=True)
    expected = prefixed(words, is_split_into_words=True)
    assert expected.tokens() == ["<s>", "\u0120", "EU", "\u0120rejects", "\u0120German",
                                 "\u0120lamb", "</s>"]
    ds = KIND.features(examples, plain, 32, for_training=False, use_cache=False)
    assert ds[0]["input_ids"] == expected["input_ids"]
    assert ds[0]["word_ids"] == [-1, 0, -1, 1, 2, 3, -1]  # a word's first sub-word carries it
    # windows of a sentence too long for one (3 sub-words each here) are tokenized alike
    windows = KIND.features(examples, plain, 5, for_training=False, use_cache=False)
    assert [plain.convert_ids_to_tokens(ids) for ids in windows["input_ids"]] == [
        ["<s>", "\u0120", "EU", "\u0120rejects", "</s>"],
        ["<s>", "\u0120German", "\u0120lamb", "</s>"]]
    assert windows["word_ids"] == [[-1, 0, -1, 1, -1], [-1, 2, 3, -1]]
    bert = AutoTokenizer.from_pretrained(tiny_bert)
    ds = KIND.features(examples, bert, 32, for_training=False, use_cache=False)
    assert ds[0]["input_ids"] == bert(words, is_split_into_words=True)["input_ids"]


def test_collated_batches_pad_labels_with_minus_100(tiny_bert):
    from transformers import AutoTokenizer

    from mtdnn.collate import fetch_batch

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    info = type("Info", (), {"name": "ner", "labels": NER})()
    examples = KIND.examples_from_inputs(info, ["the cat", "a"])
    examples = type(examples)(**{**examples.__dict__, "labels": [[1, 2], [0]]})
    ds = KIND.features(examples, tokenizer, 16, for_training=True, use_cache=False)
    batch = fetch_batch(ds, [0, 1], KIND.collator(tokenizer), "cpu", KIND.columns(True))
    # [CLS] the c ##a ##t [SEP] / [CLS] a [SEP]
    assert batch["labels"].tolist() == [[-100, 1, 2, -100, -100, -100],
                                        [-100, 0, -100, -100, -100, -100]]
    assert batch["attention_mask"].sum(1).tolist() == [6, 3]


# --------------------------------------------------------------------------------------------------
# Training, prediction, export


@pytest.fixture(scope="module")
def few(more: Path, tmp_path_factory) -> Path:
    """The first sentences of the real CoNLL-2003 files, copied byte for byte (training tests read
    them several times; the whole files take seconds)."""
    root = tmp_path_factory.mktemp("conll-few")
    (root / "conll2003").mkdir()
    for name, blocks in (("train.txt", 120), ("valid.txt", 50), ("test.txt", 10)):
        text = (more / "conll2003" / name).read_text(encoding="utf-8")
        (root / "conll2003" / name).write_text("\n\n".join(text.split("\n\n")[:blocks]) + "\n",
                                               encoding="utf-8")
    return root


def _conll_run(tmp_path: Path, tiny_bert: str, few: Path, extra: str = "") -> Path:
    """A spec over the shipped conll2003.yaml: the tiny BERT, a few real sentences, 8 steps."""
    return write_spec(tmp_path / "spec.yaml", f"""
include: [{SPECS / 'conll2003.yaml'}]
encoder: {tiny_bert}
data_dir: {few}
output_dir: {tmp_path / 'run'}
max_seq_length: 64
seed: 3
train:
  batch_size: 8
  eval_batch_size: 16
  max_steps: 8
  learning_rate: 1.0e-3
  report_to: [none]
  save_every: 4
tasks:
  ner: {{max_train_examples: 40, max_eval_examples: 24}}
  pos: {{max_train_examples: 40, max_eval_examples: 24, layer: 1}}
  chunk: {{max_train_examples: 40, max_eval_examples: 24, layer: 2}}
{extra}""")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert, few, one_thread):
    from mtdnn.trainer import train

    tmp = tmp_path_factory.mktemp("conll-run")
    result = train(load_spec(_conll_run(tmp, tiny_bert, few)), progress=False)
    return tmp, result


def test_training_evaluates_every_task_with_its_metrics_and_baseline(run):
    tmp, result = run
    assert set(result.metrics["ner"]["dev"]) == {"entity_f1", "entity_precision",
                                                 "entity_recall", "token_accuracy"}
    assert set(result.metrics["pos"]["dev"]) == {"token_accuracy"}
    assert set(result.metrics["chunk"]["dev"]) == {"entity_f1", "token_accuracy"}
    # the baseline tags every word with the most frequent training tag: O for NER (no entity)
    spec = load_spec(tmp / "spec.yaml")
    for name in ("ner", "pos"):
        train, dev = (KIND.read(spec, spec.task(name), s) for s in ("train", "dev"))
        top = max(set(t for s in train.labels for t in s),
                  key=lambda t: sum(s.count(t) for s in train.labels))
        words = [t for s in dev.labels for t in s]
        assert result.baselines[name]["token_accuracy"] == words.count(top) / len(words)
    assert result.baselines["ner"]["entity_f1"] == 0.0
    assert result.baselines["chunk"]["entity_f1"] > 0  # all I-NP: conlleval sees NP chunks


@pytest.mark.parametrize("mode", ["joint", "alternating"])
def test_joint_and_alternating_steps_with_task_embedding(tmp_path, tiny_bert, few, one_thread,
                                                        mode):
    from mtdnn.cli import main

    settings = [f"train.step_mode={mode}", "task_embedding=true", "train.max_steps=3"]
    assert main(["train", str(_conll_run(tmp_path, tiny_bert, few)), *settings,
                 "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["tasks"]
    assert set(metrics) == {"ner", "pos", "chunk"}
    assert all(v == v for m in metrics.values() for v in m["dev"].values())  # no NaN


def test_stop_and_resume_gives_bitwise_identical_weights(run, tmp_path, tiny_bert, few,
                                                         one_thread):
    from safetensors.torch import load_file

    from mtdnn.trainer import train

    reference, _ = run
    spec = load_spec(_conll_run(tmp_path, tiny_bert, few))
    train(spec, progress=False, stop_after=4)
    train(spec, progress=False, resume=True)
    for name in ("model.safetensors", "heads.safetensors"):
        ours = load_file(str(tmp_path / "run" / "best" / name))
        theirs = load_file(str(reference / "run" / "best" / name))
        assert ours.keys() == theirs.keys()
        assert all(ours[k].equal(theirs[k]) for k in ours), name


def test_predict_in_python_and_from_the_cli(run, tmp_path, capsys):
    from mtdnn.cli import main
    from mtdnn.model import MultiTaskModel

    model = MultiTaskModel.from_pretrained(run[0] / "run" / "best")
    out = model.predict("ner", [["EU", "rejects", "German", "call"], "Peter Blackburn"])
    assert [len(r["tags"]) for r in out] == [4, 2]
    assert all(t in NER for r in out for t in r["tags"])
    assert out[0]["spans"] == entity_spans(["EU", "rejects", "German", "call"], out[0]["tags"])
    pos = model.predict("pos", ["the cat sat"])
    assert len(pos[0]["tags"]) == 3 and "spans" not in pos[0]  # POS tags mark no entities
    rows = [{"id": "s1", "tokens": ["EU", "rejects", "German", "call"]},
            {"id": "s2", "tokens": "Peter Blackburn"}]
    (tmp_path / "in.jsonl").write_text("\n".join(map(json.dumps, rows)), encoding="utf-8")
    assert main(["predict", str(run[0] / "run" / "best"), "--task", "ner", "--input",
                 str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl")]) == 0
    written = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert written == [{"id": "s1", **out[0]}, {"id": "s2", **out[1]}]
    (tmp_path / "in.conll").write_text("EU\nrejects\nGerman\ncall\n\nPeter\nBlackburn\n")
    assert main(["predict", str(run[0] / "run" / "best"), "--task", "ner", "--input",
                 str(tmp_path / "in.conll"), "--output", str(tmp_path / "out2.jsonl")]) == 0
    written = [json.loads(x) for x in (tmp_path / "out2.jsonl").read_text().splitlines()]
    assert written == [{"id": "0", **out[0]}, {"id": "1", **out[1]}]
    (tmp_path / "in.tsv").write_text("id\ttext\nx\tPeter Blackburn\n")
    assert main(["predict", str(run[0] / "run" / "best"), "--task", "ner", "--input",
                 str(tmp_path / "in.tsv"), "--output", str(tmp_path / "out3.jsonl"),
                 "--text-columns", "text"]) == 0
    assert json.loads((tmp_path / "out3.jsonl").read_text()) == {"id": "x", **out[1]}
    assert main(["export", str(run[0] / "run" / "best"), "--task", "chunk", "--output",
                 str(tmp_path / "chunk")]) == 0
    config = json.loads((tmp_path / "chunk" / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"]
    assert config["num_hidden_layers"] == 2 and len(config["id2label"]) == 21


def test_dev_predictions_score_as_training_reported_and_windows_join_back(run):
    """The best checkpoint's dev predictions, decoded by the type, give the metrics the run wrote
    for it; cut into windows of at most 10 tokens, each sentence's tags are those of its windows
    predicted one by one, in order."""
    from mtdnn.checkpoint import read_spec
    from mtdnn.evaluation import evaluate_task, outputs_of
    from mtdnn.model import MultiTaskModel

    tmp, result = run
    model = MultiTaskModel.from_pretrained(tmp / "run" / "best")
    spec = read_spec(tmp / "run" / "best")
    rows = KIND.read(spec, spec.task("ner"), "dev")
    ds = KIND.features(rows, model.tokenizer, 64, for_training=False, use_cache=False)
    got = evaluate_task(model, model.tasks["ner"], ds, rows, None, 16)
    assert got == pytest.approx(result.metrics["ner"]["dev"], abs=1e-12)
    rows = KIND.subset(rows, range(16))
    windows = KIND.features(rows, model.tokenizer, 10, for_training=False, use_cache=False)
    assert len(windows) > 2 * len(rows)
    joined = KIND.predictions(outputs_of(model, "ner", windows, 16), windows, rows)
    pieces = [rows.tokens[i][min(w for w in word_ids if w >= 0):max(word_ids) + 1]
              for i, word_ids in zip(windows["index"], windows["word_ids"])]
    one_by_one: list[list[str]] = [[] for _ in rows.tokens]
    for i, alone in zip(windows["index"], model.predict("ner", pieces)):
        one_by_one[i] += alone["tags"]
    assert joined == one_by_one
    # a bootstrap resample (mtdnn compare) may draw a sentence twice
    picked = [3, 3, 0, 7]
    assert KIND.score(["entity_f1", "token_accuracy"], [joined[i] for i in picked],
                      KIND.subset(rows, picked)) == KIND.score(
        ["entity_f1", "token_accuracy"], [joined[i] for i in picked],
        type(rows)(**{**rows.__dict__, "tokens": [rows.tokens[i] for i in picked],
                      "labels": [rows.labels[i] for i in picked]}))


def test_evaluate_a_checkpoint(run):
    from mtdnn.evaluation import evaluate

    tmp, result = run
    got = evaluate(tmp / "run" / "best", tasks=["ner"])
    assert got["ner"]["dev"] == pytest.approx(result.metrics["ner"]["dev"], abs=1e-12)


def _random_heads_checkpoint(path: Path, encoder: str, layer: int | None,
                             task_embedding: bool) -> Path:
    """A checkpoint whose token heads (NER, POS tags) and task vectors are random and far from
    zero, so that every word gets a varied tag and a wrong weight in the export shows."""
    from transformers import AutoTokenizer

    from mtdnn.model import MultiTaskModel, TaskInfo, load_encoder

    spec = load_spec(SPECS / "conll2003.yaml")
    tasks = [TaskInfo("ner", "token_classification", labels=NER, text_columns=[0],
                      layer=layer),
             TaskInfo("pos", "token_classification", labels=list(spec.task("pos").labels),
                      text_columns=[0], metrics=["token_accuracy"])]
    model = MultiTaskModel(load_encoder(encoder), tasks, task_embedding=task_embedding)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in [*model.heads.parameters(), *(
                [model.task_embedding.weight] if task_embedding else [])]:
            # BERT's embeddings are ~0.02 wide: a larger task vector makes all words alike
            scale = 0.01 if p.shape[0] == len(tasks) else 2
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    model.save_pretrained(path, tokenizer=AutoTokenizer.from_pretrained(encoder),
                          extra={"max_seq_length": 64, "step": 1})
    return path


def _pipeline_word_tags(entities: list[dict], words: list[str]) -> list[str]:
    """The pipeline's entity groups (character offsets into " ".join(words)) as one tag per
    word: the group's type, or O."""
    tags, start = [], 0
    for w in words:
        group = next((e for e in entities if e["start"] <= start < e["end"]), None)
        tags.append(group["entity_group"] if group else "O")
        start += len(w) + 1
    return tags


def _check_export_parity(ckpt: Path, tmp_path: Path, dev, layer: int | None) -> None:
    """Exports both tasks of `ckpt`: the logits equal the checkpoint's, and
    `pipeline("token-classification", aggregation_strategy="first")` on the export gives the word
    tags (and, for NER, the entities) of `MultiTaskModel.predict` on 40 real dev sentences."""
    from transformers import AutoModelForTokenClassification, pipeline

    from mtdnn.export import export
    from mtdnn.model import MultiTaskModel

    model = MultiTaskModel.from_pretrained(ckpt)
    tokenizer = model.tokenizer
    # Sentences whose words are whole words to the pipeline too: it groups sub-words by their "##"
    # mark, so a word WordPiece splits at punctuation ("U.S.", "1-0") is several words to it. And
    # short enough not to be cut at the export's 64 tokens (the pipeline truncates, no windows).
    sentences = [w for w in dev.tokens if len(w) >= 3 and len(tokenizer(
        " ".join(w))["input_ids"]) <= 64 and all(
        t.startswith("##") == (i > 0) for word in w
        for i, t in enumerate(tokenizer.tokenize(word)))][:40]
    assert len(sentences) == 40
    for task in ("ner", "pos"):
        out = export(ckpt, task, tmp_path / task)
        exported = AutoModelForTokenClassification.from_pretrained(out).eval()
        assert type(exported).__name__ == "BertForTokenClassification"
        assert exported.config.id2label == dict(enumerate(model.tasks[task].labels))
        assert exported.config.num_hidden_layers == (
            layer if layer and task == "ner" else model.encoder.config.num_hidden_layers)
        batch = tokenizer([" ".join(s) for s in sentences[:8]], padding=True,
                          return_tensors="pt")
        with torch.no_grad():
            ours = model(task, **batch)["logits"]
            theirs = exported(**batch).logits
        assert (ours - theirs).abs().max().item() <= 1e-5
        tagger = pipeline("token-classification", model=str(out), aggregation_strategy="first")
        predicted = model.predict(task, sentences)
        seen = set()
        for words, ours_row in zip(sentences, predicted):
            entities = tagger(" ".join(words))
            assert _pipeline_word_tags(entities, words) == [
                t[2:] if t[:2] in ("B-", "I-") else t for t in ours_row["tags"]]
            if task == "ner":  # the entity groups are our spans
                assert [(e["entity_group"], e["start"], e["end"]) for e in entities] == [
                    (s["type"], len(" ".join(words[:s["start"]])) + (s["start"] > 0),
                     len(" ".join(words[:s["end"]]))) for s in ours_row["spans"]]
            seen.update(ours_row["tags"])
        assert len(seen) >= (6 if task == "ner" else 10)  # varied tags, not one everywhere


@pytest.mark.parametrize("layer, task_embedding", [(None, False), (1, True)])
def test_export_has_logit_parity_and_pipeline_parity(dev_both, tiny_bert, tmp_path, layer,
                                                     task_embedding):
    ckpt = _random_heads_checkpoint(tmp_path / "ckpt", tiny_bert, layer, task_embedding)
    _check_export_parity(ckpt, tmp_path, dev_both[0], layer)


@pytest.mark.slow
def test_minilm_export_pipeline_parity_and_the_shipped_layers(dev_both, minilm_path, tmp_path):
    """The real MiniLM and its WordPiece tokenizer (real sub-words of real sentences), the NER
    head on layer 4; and the shipped spec's hierarchical layers exist in the 6-layer encoder."""
    from mtdnn.model import MultiTaskModel, load_encoder
    from mtdnn.prepare import task_info

    ckpt = _random_heads_checkpoint(tmp_path / "ckpt", minilm_path, 4, True)
    _check_export_parity(ckpt, tmp_path, dev_both[0], 4)
    spec = load_spec(SPECS / "conll2003.yaml")
    model = MultiTaskModel(load_encoder(minilm_path), [task_info(t) for t in spec.tasks])
    assert model.layer_index == {"ner": 6, "pos": 2, "chunk": 4}


def test_model_card_front_matter(run):
    import yaml

    from mtdnn.hub import model_card

    card = model_card(run[0] / "run" / "best", task="ner", repo_id="me/conll-ner")
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["pipeline_tag"] == "token-classification"
    assert "token-classification" in meta["tags"]
    assert meta["model-index"][0]["results"][0]["task"] == {"type": "token-classification",
                                                           "name": "Token Classification"}
    assert 'pipeline("token-classification", model="me/conll-ner",' in card
    assert "| ner | token_classification | a sentence (its words) | a tag per word: `O`, `B-PER`," \
        in card
