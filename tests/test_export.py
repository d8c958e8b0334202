"""Tests of mtdnn/export.py: an exported task, opened with plain transformers, gives the logits of
the multi-task model (tiny random BERT, RoBERTa, ELECTRA and DeBERTa-v2 encoders, random nonzero
heads and task vectors), its config carries the label maps, and misuse fails with a clear
message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtdnn.errors import UserError
from mtdnn.export import LAYOUTS, export
from mtdnn.model import MultiTaskModel, TaskInfo, load_encoder

TASKS = [
    TaskInfo("rte", "classification", labels=["entailment", "not_entailment"],
             text_columns=["sentence1", "sentence2"]),
    TaskInfo("cola", "classification", labels=["0", "1"], text_columns=["sentence"]),
    TaskInfo("mnli", "classification", labels=["entailment", "neutral", "contradiction"],
             text_columns=["premise", "hypothesis"]),
    TaskInfo("stsb", "regression", text_columns=["sentence1", "sentence2"]),
    TaskInfo("wikiqa", "ranking", text_columns=["question", "answer"]),
]
SENTENCES = ["The cat sat on the mat.", "Stocks fell sharply on Monday after the report.",
             "A fine film."]
PAIRS = [("A man is playing a guitar.", "Someone plays music."),
         ("The cat sat.", "A dog is barking loudly at the mailman."),
         ("Stocks fell sharply.", "Markets dropped.")]


def make_checkpoint(path: Path, encoder_dir: str, task_embedding: bool, activation: str = "tanh",
                    tasks: list[TaskInfo] = TASKS) -> Path:
    """A checkpoint whose heads and task vectors are random and far from zero, so that a wrong or
    missing weight in the export changes the logits."""
    from dataclasses import replace

    from transformers import AutoTokenizer

    tasks = [replace(t, activation=activation) for t in tasks]
    model = MultiTaskModel(load_encoder(encoder_dir), tasks, task_embedding=task_embedding)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in [*model.heads.parameters(), *(
                [model.task_embedding.weight] if task_embedding else [])]:
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    model.save_pretrained(path, tokenizer=AutoTokenizer.from_pretrained(encoder_dir),
                          extra={"max_seq_length": 64, "step": 1})
    return path


def tiny_encoder(path: Path, model_type: str, tokenizer_dir: str) -> str:
    """A tiny random encoder of another architecture, saved with the BERT tokenizer (parity is
    checked on token ids, so the tokenizer only has to cover the vocabulary size)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    sizes = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=130)
    extra = {"roberta": dict(pad_token_id=1, type_vocab_size=1),
             "electra": dict(embedding_size=32),
             "deberta-v2": dict(relative_attention=True, pos_att_type=["p2c", "c2p"],
                                position_biased_input=False),
             "distilbert": dict(dim=32, n_layers=1, n_heads=2, hidden_dim=64)}[model_type]
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.for_model(model_type, **sizes, **extra)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory, tiny_bert: str) -> dict[str, str]:
    root = tmp_path_factory.mktemp("encoders")
    out = {"bert": tiny_bert}
    for model_type in ("roberta", "electra", "deberta-v2", "distilbert"):
        out[model_type] = tiny_encoder(root / model_type, model_type, tiny_bert)
    return out


def probe(config, pair: bool) -> dict[str, torch.Tensor]:
    """Token ids of 4 rows of different lengths, right-padded; BERT gets segment ids for pairs."""
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(5, config.vocab_size, (4, 20), generator=generator)
    mask = torch.ones_like(ids)
    for row, length in enumerate((20, 13, 7, 16)):
        ids[row, length:], mask[row, length:] = config.pad_token_id, 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if config.model_type == "bert":
        types = torch.zeros_like(ids)
        types[:, 10:] = 1 if pair else 0
        batch["token_type_ids"] = types * mask
    return batch


def parity(ours: MultiTaskModel, task: str, export_dir: Path) -> float:
    """Max |logit difference| between the checkpoint's head and the exported model."""
    from transformers import AutoModelForSequenceClassification

    theirs = AutoModelForSequenceClassification.from_pretrained(export_dir).eval()
    batch = probe(theirs.config, ours.tasks[task].is_pair)
    with torch.no_grad():
        expected = ours(task, **batch)["logits"]
        got = theirs(**batch).logits
    assert got.shape == expected.shape == (4, ours.tasks[task].num_outputs)
    # Logits far from zero: a head left at zero (or a missing bias) could not pass unseen.
    assert expected.abs().mean() > 0.1
    return (got - expected).abs().max().item()


@pytest.mark.parametrize("task_embedding", [False, True], ids=["plain", "task-embedding"])
@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_exported_logits_equal_the_multitask_head(tmp_path, encoders, arch, task_embedding):
    ckpt = make_checkpoint(tmp_path / "ckpt", encoders[arch], task_embedding)
    ours = MultiTaskModel.from_pretrained(ckpt)
    for task in ("rte", "cola", "stsb", "wikiqa"):  # pair, single sentence, regression, ranking
        out = export(ckpt, task, tmp_path / task)
        assert parity(ours, task, out) == 0.0, (arch, task)
        config = json.loads((out / "config.json").read_text())
        assert config["architectures"] == [
            {"bert": "BertForSequenceClassification",
             "roberta": "RobertaForSequenceClassification"}[arch]]


@pytest.mark.parametrize("arch", ["electra", "deberta-v2"])
def test_gelu_architectures_export_exactly(tmp_path, encoders, arch):
    # ELECTRA's head and DeBERTa's ContextPooler apply GELU, the trainer's head activation there.
    ckpt = make_checkpoint(tmp_path / "ckpt", encoders[arch], task_embedding=True,
                           activation="gelu", tasks=TASKS[:1] + TASKS[3:4])
    ours = MultiTaskModel.from_pretrained(ckpt)
    for task in ("rte", "stsb"):
        assert parity(ours, task, export(ckpt, task, tmp_path / task)) == 0.0


@pytest.fixture(scope="module")
def bert_export(tmp_path_factory, tiny_bert: str) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("bert-export")
    ckpt = make_checkpoint(root / "ckpt", tiny_bert, task_embedding=True)
    return ckpt, {t.name: export(ckpt, t.name, root / t.name) for t in TASKS}


def test_config_holds_labels_and_problem_type(bert_export):
    _, exports = bert_export
    configs = {t: json.loads((d / "config.json").read_text()) for t, d in exports.items()}
    assert configs["mnli"]["id2label"] == {"0": "entailment", "1": "neutral",
                                           "2": "contradiction"}
    assert configs["mnli"]["label2id"] == {"entailment": 0, "neutral": 1, "contradiction": 2}
    assert configs["mnli"]["problem_type"] == "single_label_classification"
    assert configs["cola"]["id2label"] == {"0": "0", "1": "1"}
    for task in ("stsb", "wikiqa"):  # one output: a regression value / a relevance score
        assert configs[task]["id2label"] == {"0": "score"}
        assert configs[task]["problem_type"] == "regression"
    for directory in exports.values():
        names = sorted(p.name for p in directory.iterdir())
        assert names == ["config.json", "model.safetensors", "tokenizer.json",
                         "tokenizer_config.json"]  # no pickle, nothing mtdnn-specific
        assert json.loads((directory / "tokenizer_config.json").read_text())[
            "model_max_length"] == 64  # truncation where training truncated


def test_pipeline_gives_the_predictions_of_predict(bert_export):
    from transformers import pipeline

    ckpt, exports = bert_export
    model = MultiTaskModel.from_pretrained(ckpt)
    for task, inputs, to_pipeline in (
            ("cola", SENTENCES, lambda x: x),
            ("rte", PAIRS, lambda p: {"text": p[0], "text_pair": p[1]}),
            ("stsb", PAIRS, lambda p: {"text": p[0], "text_pair": p[1]})):
        classifier = pipeline("text-classification", model=str(exports[task]))
        expected = model.predict(task, inputs)
        got = [classifier(to_pipeline(x)) for x in inputs]
        got = [g[0] if isinstance(g, list) else g for g in got]
        for e, g in zip(expected, got, strict=True):
            assert g["label"] == e.get("label", "score")
            assert g["score"] == pytest.approx(e["score"], abs=1e-5)
    labels = {p["label"] for p in model.predict("rte", PAIRS)}
    assert labels <= {"entailment", "not_entailment"}


def test_ranking_export_scores_pairs_like_predict(bert_export):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    ckpt, exports = bert_export
    expected = [r["score"] for r in MultiTaskModel.from_pretrained(ckpt).predict("wikiqa", PAIRS)]
    tokenizer = AutoTokenizer.from_pretrained(exports["wikiqa"])
    scorer = AutoModelForSequenceClassification.from_pretrained(exports["wikiqa"]).eval()
    a, b = zip(*PAIRS, strict=True)
    with torch.no_grad():
        scores = scorer(**tokenizer(list(a), list(b), padding=True, return_tensors="pt")
                        ).logits[:, 0]
    assert scores.tolist() == pytest.approx(expected, abs=1e-5)


def test_task_vector_is_folded_into_the_word_embeddings(bert_export, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModel

    ckpt, exports = bert_export
    model = MultiTaskModel.from_pretrained(ckpt)
    table = model.encoder.get_input_embeddings().weight
    vector = model.task_embedding.weight[model.task_ids["rte"]]
    assert vector.abs().min() > 0
    exported = load_file(str(exports["rte"] / "model.safetensors"))
    assert torch.equal(exported["bert.embeddings.word_embeddings.weight"], table + vector)

    # The encoder alone: the vector is folded only when a task is named.
    plain = AutoModel.from_pretrained(export(ckpt, None, tmp_path / "enc", encoder_only=True),
                                      add_pooling_layer=False)
    folded = AutoModel.from_pretrained(export(ckpt, "rte", tmp_path / "enc-rte",
                                              encoder_only=True), add_pooling_layer=False)
    assert torch.equal(plain.get_input_embeddings().weight, table)
    assert torch.equal(folded.get_input_embeddings().weight, table + vector)
    batch = probe(folded.config, pair=True)
    with torch.no_grad():
        hidden = folded(**batch).last_hidden_state[:, 0]
        expected = model.encode("rte", **batch)
    assert (hidden - expected).abs().max() < 1e-5
    assert not (tmp_path / "enc" / "heads.safetensors").exists()


def test_unknown_task_suggests_the_closest(bert_export, tmp_path):
    ckpt, _ = bert_export
    with pytest.raises(UserError, match="unknown task 'rtee'; did you mean 'rte'"):
        export(ckpt, "rtee", tmp_path / "out")
    with pytest.raises(ValueError, match="name the task to export"):
        export(ckpt, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture_and_activation_are_refused(tmp_path, encoders):
    ckpt = make_checkpoint(tmp_path / "distil", encoders["distilbert"], task_embedding=False,
                           tasks=TASKS[:1])
    with pytest.raises(ValueError) as e:
        export(ckpt, "rte", tmp_path / "out")
    message = str(e.value)
    assert "model_type 'distilbert'" in message and "--encoder-only" in message
    assert all(name in message for name in LAYOUTS)
    assert (export(ckpt, None, tmp_path / "enc", encoder_only=True) / "config.json").is_file()

    gelu_bert = make_checkpoint(tmp_path / "gelu", encoders["bert"], task_embedding=False,
                                activation="gelu", tasks=TASKS[:1])
    with pytest.raises(ValueError, match="head uses 'gelu', but bert's classification head "
                                         "applies tanh"):
        export(gelu_bert, "rte", tmp_path / "out2")


def test_refuses_a_non_empty_output_dir(bert_export, tmp_path):
    ckpt, _ = bert_export
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "pytorch_model.bin").write_bytes(b"stale")
    with pytest.raises(ValueError, match="not an empty directory"):
        export(ckpt, "rte", tmp_path / "old")


def test_cli_export(bert_export, tmp_path):
    from transformers import AutoConfig

    ckpt, _ = bert_export
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "mtdnn.cli", "export", str(ckpt), "--task",
                          "mnli", "--output", str(tmp_path / "mnli")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert str(tmp_path / "mnli") in run.stdout
    assert AutoConfig.from_pretrained(tmp_path / "mnli").label2id["neutral"] == 1


def test_cli_reports_an_unknown_task_without_traceback(bert_export, tmp_path, capsys):
    from mtdnn.cli import main

    ckpt, _ = bert_export  # in-process: main() is what the console script runs
    assert main(["export", str(ckpt), "--task", "mnly", "--output", str(tmp_path / "x")]) == 2
    assert f"error: {ckpt}: unknown task 'mnly'; did you mean 'mnli'?" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--output", str(tmp_path / "x")]) == 2
    assert "name the task to export" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["bert", "deberta-v2"])
def test_a_head_on_a_lower_layer_exports_a_shorter_encoder(tmp_path, encoders, arch):
    """Hierarchical heads: the export keeps the layers up to the head's, so its last hidden state
    is the one the head reads."""
    from dataclasses import replace

    activation = "gelu" if arch == "deberta-v2" else "tanh"
    tasks = [replace(TASKS[0], layer=1), TASKS[3]]
    ckpt = make_checkpoint(tmp_path / "ckpt", encoders[arch], task_embedding=True,
                           activation=activation, tasks=tasks)
    ours = MultiTaskModel.from_pretrained(ckpt)
    low, top = export(ckpt, "rte", tmp_path / "rte"), export(ckpt, "stsb", tmp_path / "stsb")
    assert json.loads((low / "config.json").read_text())["num_hidden_layers"] == 1
    assert json.loads((top / "config.json").read_text())["num_hidden_layers"] == 2
    assert parity(ours, "rte", low) == 0.0 and parity(ours, "stsb", top) == 0.0


def test_soft_sharing_exports_the_task_s_own_encoder_copy(tmp_path, tiny_bert):
    from dataclasses import replace

    from transformers import AutoModel

    tasks = [replace(TASKS[0], encoder_group="nli"), replace(TASKS[3], encoder_group="sim")]
    ckpt = make_checkpoint(tmp_path / "ckpt", tiny_bert, task_embedding=False, tasks=tasks)
    model = MultiTaskModel.from_pretrained(ckpt)
    with torch.no_grad():  # make the copies differ
        for p in model.group_encoders["sim"].parameters():
            p.add_(0.05)
    model.save_pretrained(tmp_path / "ckpt2", extra={"max_seq_length": 64})
    ours = MultiTaskModel.from_pretrained(tmp_path / "ckpt2")
    for task in ("rte", "stsb"):
        assert parity(ours, task, export(tmp_path / "ckpt2", task, tmp_path / task)) == 0.0
    encoder = AutoModel.from_pretrained(export(tmp_path / "ckpt2", "stsb", tmp_path / "enc",
                                               encoder_only=True))
    sim = ours.group_encoders["sim"].state_dict()
    assert all(torch.equal(v, sim[k]) for k, v in encoder.state_dict().items() if k in sim)


def test_the_pipeline_parity_script_on_a_trained_checkpoint(tiny_glue_spec, tmp_path, glue):
    """scripts/export_pipeline_parity.py regenerates the README's pipeline figure."""
    from conftest import load_script

    from mtdnn.spec import load_spec
    from mtdnn.trainer import train

    script = load_script("export_pipeline_parity")
    ckpt = train(load_spec(tiny_glue_spec(tasks="[rte]", steps=2)), progress=False).best_dir
    result = script.parity(str(ckpt), "rte", rows=12, data_dir=str(glue))
    truncated = result["truncation=True"]
    assert truncated["rows"] == 12 and truncated["same_label"] == 12
    assert truncated["max_score_diff"] < 1e-6
    assert set(result) == {"truncation=True", "no truncation"}
