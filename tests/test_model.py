"""Tests of the multi-task model (mtdnn/model.py) on a tiny random BERT: heads by task name, the
checkpoint format, the task embedding, predict()."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from torch import nn

from mtdnn.errors import CheckpointError, UserError
from mtdnn.heads import task_loss
from mtdnn.model import MultiTaskModel, TaskInfo, load_encoder, resolve_encoder

TASKS = [
    TaskInfo("rte", "classification", labels=["entailment", "not_entailment"],
             text_columns=["sentence1", "sentence2"], metrics=["accuracy"]),
    TaskInfo("stsb", "regression", text_columns=["sentence1", "sentence2"],
             metrics=["pearson", "spearmanr"]),
    TaskInfo("cola", "classification", labels=["0", "1"], text_columns=["sentence"],
             metrics=["matthews_correlation"]),
    TaskInfo("wikiqa", "ranking", text_columns=["question", "answer"], metrics=["map"]),
    TaskInfo("mnli", "classification", labels=["entailment", "neutral", "contradiction"],
             text_columns=["premise", "hypothesis"], dropout=0.2, activation="gelu"),
]
PAIRS = [("A man is playing a guitar on the stage.", "Someone plays music."),
         ("The cat sat.", "A dog is barking loudly at the mailman in the street."),
         ("Stocks fell sharply on Monday.", "Markets dropped.")]


pytestmark = pytest.mark.usefixtures("one_thread")


def build(tiny_bert: str, task_embedding: bool = False, seed: int = 0) -> MultiTaskModel:
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    model = MultiTaskModel(load_encoder(tiny_bert), TASKS, task_embedding=task_embedding)
    model.tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    return model


def batch(model: MultiTaskModel, pairs=PAIRS) -> dict[str, torch.Tensor]:
    a, b = zip(*pairs, strict=True)
    return dict(model.tokenizer(list(a), list(b), padding=True, return_tensors="pt"))


@pytest.fixture(scope="module")
def model(tiny_bert: str) -> MultiTaskModel:
    return build(tiny_bert).eval()


def all_logits(model: MultiTaskModel) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {t.name: model(t.name, **batch(model))["logits"] for t in TASKS}


# --- heads by task name --------------------------------------------------------------------------


def test_heads_are_a_module_dict_keyed_by_task(model: MultiTaskModel):
    assert isinstance(model.heads, nn.ModuleDict)
    assert list(model.heads) == ["rte", "stsb", "cola", "wikiqa", "mnli"]
    assert [model.heads[t.name].out_proj.out_features for t in TASKS] == [2, 1, 2, 1, 3]
    assert model.heads["mnli"].dropout.p == 0.2 and isinstance(model.heads["mnli"].activation,
                                                                nn.GELU)
    assert isinstance(model.heads["rte"].activation, nn.Tanh)
    assert model.task_ids == {"rte": 0, "stsb": 1, "cola": 2, "wikiqa": 3, "mnli": 4}
    assert model.task_embedding is None
    # The heads read the first token themselves: the encoder is loaded without a pooler.
    assert model.encoder.pooler is None


def test_forward_shapes_and_loss(model: MultiTaskModel):
    logits = all_logits(model)
    assert {k: tuple(v.shape) for k, v in logits.items()} == {
        "rte": (3, 2), "stsb": (3, 1), "cola": (3, 2), "wikiqa": (3, 1), "mnli": (3, 3)}
    labels = torch.tensor([1, 0, 1])
    with torch.no_grad():
        out = model("rte", **batch(model), labels=labels)
    assert torch.equal(out["logits"], logits["rte"])
    assert out["loss"].item() == task_loss("classification", logits["rte"], labels).item()
    with torch.no_grad():
        ranked = model("wikiqa", **batch(model), labels=torch.tensor([0]),
                       group_sizes=torch.tensor([3]))
    assert ranked["loss"].item() == pytest.approx(
        -torch.log_softmax(logits["wikiqa"].squeeze(-1), 0)[0].item(), abs=1e-6)


def test_forward_on_unknown_task_suggests_the_closest(model: MultiTaskModel):
    with pytest.raises(KeyError) as e:
        model("rtee", **batch(model))
    assert e.value.args[0] == ("unknown task 'rtee'; did you mean 'rte'? "
                               "(known: cola, mnli, rte, stsb, wikiqa)")


# --- checkpoints ---------------------------------------------------------------------------------


@pytest.mark.parametrize("task_embedding", [False, True])
def test_checkpoint_round_trip_is_bitwise(tiny_bert: str, tmp_path: Path, task_embedding: bool):
    model = build(tiny_bert, task_embedding=task_embedding)
    with torch.no_grad():  # non-trivial values everywhere, so a head not loaded would show
        for p in model.heads.parameters():
            p.normal_(0, 0.5)
        if task_embedding:
            model.task_embedding.weight.normal_(0, 0.5)
    model.eval()
    before = all_logits(model)
    model.save_pretrained(tmp_path / "ckpt", extra={"max_seq_length": 48})

    loaded = MultiTaskModel.from_pretrained(tmp_path / "ckpt")
    assert not loaded.training
    assert not any(m.training for m in loaded.modules())
    assert loaded.max_seq_length == 48
    assert list(loaded.tasks.values()) == TASKS
    after = all_logits(loaded)
    for name in before:
        assert torch.equal(before[name], after[name]), name
    if task_embedding:
        assert torch.equal(loaded.task_embedding.weight, model.task_embedding.weight)
    else:
        assert loaded.task_embedding is None
    assert loaded.tokenizer("A man.")["input_ids"] == model.tokenizer("A man.")["input_ids"]


def test_checkpoint_directory_is_a_hugging_face_directory(tiny_bert: str, tmp_path: Path,
                                                          model: MultiTaskModel):
    from safetensors.torch import load_file
    from transformers import AutoModel

    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    names = {p.name for p in ckpt.iterdir()}
    assert {"config.json", "model.safetensors", "heads.safetensors", "mtdnn.json",
            "tokenizer.json", "tokenizer_config.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"))]

    registry = json.loads((ckpt / "mtdnn.json").read_text())
    assert registry["format_version"] == 2 and registry["task_embedding"] is False
    assert registry["tasks"] == [asdict(t) for t in TASKS]
    heads = load_file(str(ckpt / "heads.safetensors"))
    assert set(heads) == {f"heads.{k}" for k in model.heads.state_dict()}
    assert torch.equal(heads["heads.mnli.out_proj.weight"], model.heads["mnli"].out_proj.weight)

    # Any transformers user can open the shared encoder.
    encoder = AutoModel.from_pretrained(ckpt).eval()
    assert type(encoder).__name__ == "BertModel"
    inputs = batch(model)
    with torch.no_grad():
        theirs = encoder(**inputs).last_hidden_state
        ours = model.encoder(**inputs).last_hidden_state
    assert torch.equal(theirs, ours)


def test_from_pretrained_on_a_directory_without_registry(tmp_path: Path):
    with pytest.raises(CheckpointError, match=r"not an mtdnn checkpoint \(no mtdnn\.json\)"):
        MultiTaskModel.from_pretrained(tmp_path)


# --- task embedding ------------------------------------------------------------------------------


def capture_hidden(model: MultiTaskModel, task: str, inputs: dict) -> torch.Tensor:
    """The encoder's full last_hidden_state (B, T, H) when the model runs `task`."""
    seen = []
    handle = model.encoder.register_forward_hook(
        lambda module, args, output: seen.append(output.last_hidden_state))
    try:
        with torch.no_grad():
            model(task, **inputs)
    finally:
        handle.remove()
    return seen[0]


def test_task_embedding_starts_at_zero_and_changes_its_own_task_only(tiny_bert: str):
    plain = build(tiny_bert, seed=1).eval()
    embedded = build(tiny_bert, task_embedding=True, seed=1).eval()
    assert embedded.task_embedding.weight.shape == (len(TASKS), 32)
    assert embedded.task_embedding.weight.abs().sum().item() == 0.0
    reference = all_logits(plain)
    # Same heads (same seed), zero vectors: exactly the plain model's outputs.
    for name, value in all_logits(embedded).items():
        torch.testing.assert_close(value, reference[name], rtol=0, atol=1e-6)

    with torch.no_grad():
        embedded.task_embedding.weight[embedded.task_ids["stsb"]] = torch.randn(32)
    changed = all_logits(embedded)
    assert (changed["stsb"] - reference["stsb"]).abs().max().item() > 1e-3
    for name in ("rte", "cola", "wikiqa", "mnli"):
        torch.testing.assert_close(changed[name], reference[name], rtol=0, atol=1e-6)


def test_task_embedding_equals_shifting_the_word_embedding_table(tiny_bert: str):
    """What the export relies on: adding the task vector to every token's input embedding is the
    same as adding it to every row of the word embedding table."""
    model = build(tiny_bert, task_embedding=True).eval()
    v = torch.randn(32)
    with torch.no_grad():
        model.task_embedding.weight[model.task_ids["rte"]] = v
    shifted = copy.deepcopy(model.encoder)
    with torch.no_grad():
        shifted.get_input_embeddings().weight += v
    inputs = batch(model)
    ours = capture_hidden(model, "rte", inputs)
    with torch.no_grad():
        theirs = shifted(**inputs).last_hidden_state
        unshifted = model.encoder(**inputs).last_hidden_state
    assert ours.shape == (3, inputs["input_ids"].shape[1], 32)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert (ours - unshifted).abs().max().item() > 1e-2  # the vector did change the states
    with torch.no_grad():
        logits = model("rte", **inputs)["logits"]
        exported = model.heads["rte"](theirs[:, 0])
    torch.testing.assert_close(logits, exported, rtol=0, atol=1e-6)


def test_task_embedding_with_factorized_embeddings(tmp_path: Path):
    from transformers import ElectraConfig, ElectraModel

    config = ElectraConfig(vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    ElectraModel(config).save_pretrained(tmp_path / "electra")
    encoder = load_encoder(str(tmp_path / "electra"))
    tasks = TASKS[:2]
    torch.manual_seed(1)
    plain = MultiTaskModel(encoder, tasks).eval()
    torch.manual_seed(1)
    embedded = MultiTaskModel(encoder, tasks, task_embedding=True).eval()
    inputs = {"input_ids": torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}
    with torch.no_grad():
        expected = plain("rte", **inputs)["logits"]
        logits = embedded("rte", **inputs)["logits"]  # raises today
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
    assert embedded.task_embedding.weight.shape == (2, 16)


# --- predict -------------------------------------------------------------------------------------


def test_predict_classification_pairs_and_single_sentences(model: MultiTaskModel):
    out = model.predict("rte", PAIRS)
    assert len(out) == 3
    with torch.no_grad():
        probs = model("rte", **batch(model))["logits"].softmax(-1)
    for row, p in zip(out, probs.tolist(), strict=True):
        assert set(row) == {"label", "score", "probabilities"}
        assert list(row["probabilities"]) == ["entailment", "not_entailment"]
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
        assert row["label"] == ["entailment", "not_entailment"][p.index(max(p))]
        assert row["score"] == max(row["probabilities"].values())
        assert list(row["probabilities"].values()) == pytest.approx(p, abs=1e-6)

    single = model.predict("cola", ["The cat sat.", "Sat cat the on.", "Colorless green ideas."])
    assert len(single) == 3
    assert all(r["label"] in ("0", "1") for r in single)
    assert all(sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-6) for r in single)


def test_predict_scores_for_regression_and_ranking(model: MultiTaskModel):
    with torch.no_grad():
        logits = {t: model(t, **batch(model))["logits"].squeeze(-1) for t in ("stsb", "wikiqa")}
    for task in ("stsb", "wikiqa"):
        out = model.predict(task, PAIRS)
        assert [set(r) for r in out] == [{"score"}] * 3
        assert [r["score"] for r in out] == pytest.approx(logits[task].tolist(), abs=1e-6)


def test_predict_does_not_depend_on_batching(model: MultiTaskModel):
    one_by_one = model.predict("stsb", PAIRS, batch_size=1)
    together = model.predict("stsb", PAIRS, batch_size=64)
    assert [r["score"] for r in one_by_one] == pytest.approx([r["score"] for r in together],
                                                              abs=1e-5)


def test_predict_restores_training_mode(tiny_bert: str):
    model = build(tiny_bert).train()
    first = model.predict("stsb", PAIRS)
    assert model.training
    assert model.predict("stsb", PAIRS) == first  # dropout was off while predicting


def test_predict_validates_inputs(model: MultiTaskModel, tiny_bert: str):
    with pytest.raises(UserError, match=r"^predict: task 'rte' takes 2 text\(s\) per input; "
                                        r"input 0 has 1$"):
        model.predict("rte", ["a single sentence"])
    with pytest.raises(UserError, match=r"^predict: task 'cola' takes 1 text\(s\) per input; "
                                        r"input 1 has 2$"):
        model.predict("cola", ["fine", ("one", "two")])
    with pytest.raises(UserError) as e:
        model.predict("cole", ["x"])
    assert e.value.problems[0].startswith("unknown task 'cole'; did you mean 'cola'?")
    bare = MultiTaskModel(load_encoder(tiny_bert), TASKS)
    with pytest.raises(ValueError, match=r"^the model has no tokenizer: load it with "
                                         r"from_pretrained\(\)$"):
        bare.predict("cola", ["x"])


# --- encoders ------------------------------------------------------------------------------------


def test_resolve_encoder_finds_the_bundled_minilm(minilm_path: str, tiny_bert: str):
    assert resolve_encoder("sentence-transformers/all-MiniLM-L6-v2") == minilm_path
    assert Path(minilm_path, "config.json").is_file()
    assert resolve_encoder(tiny_bert) == tiny_bert
    assert resolve_encoder("bert-base-uncased") == "bert-base-uncased"


# --- hierarchical heads: a head reads a chosen layer ---------------------------------------------


def test_a_head_reads_the_first_token_of_its_layer(tiny_bert: str):
    from dataclasses import replace

    tasks = [replace(TASKS[0], layer=1), replace(TASKS[1], layer=-2), TASKS[2]]
    model = MultiTaskModel(load_encoder(tiny_bert), tasks).eval()  # tiny BERT: 2 layers
    model.tokenizer = build(tiny_bert).tokenizer
    inputs = batch(model)
    with torch.no_grad():
        hidden = model.encoder(**inputs, output_hidden_states=True).hidden_states
        assert model.layer_index == {"rte": 1, "stsb": 1, "cola": 2}
        for task, layer in (("rte", 1), ("stsb", 1), ("cola", 2)):
            expected = model.heads[task](hidden[layer][:, 0])
            assert torch.equal(model(task, **inputs)["logits"], expected), task
        assert not torch.allclose(hidden[1][:, 0], hidden[2][:, 0])
    # Only the layers at and below the head's get gradient from its loss.
    model.train()
    model(TASKS[0].name, **inputs, labels=torch.tensor([0, 1, 0]))["loss"].backward()
    grads = {i: model.encoder.encoder.layer[i].output.dense.weight.grad for i in (0, 1)}
    assert grads[0] is not None and grads[0].abs().sum() > 0 and grads[1] is None


@pytest.mark.parametrize("layer", [3, -3])
def test_a_layer_the_encoder_lacks_is_refused(tiny_bert: str, layer: int):
    from dataclasses import replace

    with pytest.raises(ValueError, match=re.escape(
            f"tasks.rte.layer: layer {layer} does not exist: the encoder has 2 layers (give 1..2, "
            "-1..-2, or null for the last)")):
        MultiTaskModel(load_encoder(tiny_bert), [replace(TASKS[0], layer=layer)])


# --- soft parameter sharing: an encoder copy per group, pulled together -------------------------


def soft_model(tiny_bert: str) -> MultiTaskModel:
    from dataclasses import replace

    tasks = [replace(TASKS[0], encoder_group="nli"), replace(TASKS[1], encoder_group="sim"),
             replace(TASKS[2], encoder_group="nli")]
    model = MultiTaskModel(load_encoder(tiny_bert), tasks)
    model.tokenizer = build(tiny_bert).tokenizer
    return model


def test_soft_sharing_gives_each_group_its_own_copy(tiny_bert: str, tmp_path: Path):
    model = soft_model(tiny_bert)
    assert model.main_group == "nli" and list(model.group_encoders) == ["sim"]
    assert model.encoder_for("rte") is model.encoder_for("cola") is model.encoder
    assert model.encoder_for("stsb") is model.group_encoders["sim"]
    # Copies start equal and are distinct tensors.
    for a, b in zip(model.encoder.parameters(), model.group_encoders["sim"].parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    assert model.soft_sharing_penalty().item() == 0.0
    # One task's loss moves its copy only.
    model(TASKS[1].name, **batch(model), labels=torch.tensor([0.5, 1.0, 2.0]))["loss"].backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert any(p.grad is not None for p in model.group_encoders["sim"].parameters())
    # The checkpoint keeps every copy; loading gives them back bitwise.
    with torch.no_grad():
        for p in model.group_encoders["sim"].parameters():
            p.add_(0.01)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "encoders" / "sim" / "model.safetensors").is_file()
    loaded = MultiTaskModel.from_pretrained(tmp_path / "ckpt")
    for name in ("encoder", "group_encoders"):
        ours, theirs = getattr(model, name).state_dict(), getattr(loaded, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_soft_sharing_penalty_and_its_gradient(tiny_bert: str):
    """The penalty is sum_g ||theta_g - mean||^2, and the gradient added in place equals
    autograd's gradient of weight * penalty."""
    from dataclasses import replace

    tasks = [replace(t, encoder_group=t.name) for t in TASKS[:3]]  # three copies
    model = MultiTaskModel(load_encoder(tiny_bert), tasks)
    generator = torch.Generator().manual_seed(0)
    encoders = [model.encoder, *model.group_encoders.values()]
    with torch.no_grad():
        for e in encoders[1:]:
            for p in e.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * 0.01)
    params = [list(e.parameters()) for e in encoders]
    # Crafted check on one parameter: three values -> deviations from their mean.
    a, b, c = (ps[0].detach() for ps in params)
    mean = (a + b + c) / 3
    one = ((a - mean) ** 2 + (b - mean) ** 2 + (c - mean) ** 2).sum()
    rest = sum(((torch.stack(ps) - torch.stack(ps).mean(0)) ** 2).sum()
               for ps in zip(*(p[1:] for p in params)))
    assert model.soft_sharing_penalty().item() == pytest.approx((one + rest).item(), rel=1e-5)

    weight = 0.3
    flat = [p for ps in params for p in ps]
    penalty = sum(((torch.stack(ps) - torch.stack(ps).mean(0)) ** 2).sum()
                  for ps in zip(*params))
    expected = torch.autograd.grad(weight * penalty, flat)
    model.add_soft_sharing_grad(weight)
    for p, g in zip(flat, expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-7)
    # Added to what is there: a second call doubles it.
    model.add_soft_sharing_grad(weight)
    torch.testing.assert_close(flat[0].grad, 2 * expected[0], rtol=1e-4, atol=1e-7)
