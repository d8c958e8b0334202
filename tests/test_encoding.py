"""The compute cut (mtdnn/encoding.py) is exact: per architecture and attention implementation,
training batches through the cut give the full forward's logits, losses and gradients within
float rounding, with task embeddings, hierarchical heads and token-level tasks; the layers it
skips are really skipped; unknown architectures fall back to the full forward and say so."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModel,
    BertConfig,
    DebertaV2Config,
    ElectraConfig,
    RobertaConfig,
    XLMRobertaConfig,
)

from mtdnn.encoding import BertLayersCut, EncoderRun, encoder_run
from mtdnn.model import FULL_RUN, MultiTaskModel, TaskInfo

SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
CONFIGS = {
    "bert": lambda: BertConfig(vocab_size=99, **SMALL),
    "roberta": lambda: RobertaConfig(vocab_size=99, pad_token_id=1, **SMALL),
    "xlm-roberta": lambda: XLMRobertaConfig(vocab_size=99, pad_token_id=1, **SMALL),
    "electra": lambda: ElectraConfig(vocab_size=99, embedding_size=16, **SMALL),
}
TASKS = [
    TaskInfo("nli", "classification", ["e", "n", "c"], ["a", "b"], dropout=0.0),
    TaskInfo("low", "regression", [], ["a", "b"], dropout=0.0, layer=1),  # a hierarchical head
    TaskInfo("tags", "token_classification", ["O", "B-X", "I-X"], ["tokens"], dropout=0.0,
             layer=2),
    TaskInfo("choice", "multiple_choice", [], ["q", "c"], dropout=0.0),
]


def batch_of(task: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (2, 3, 9) if task == "choice" else (3, 11)
    ids = torch.randint(5, 99, shape, generator=g)
    mask = torch.ones(shape, dtype=torch.long)
    mask[..., -3:] = 0  # padding at the end of the first rows
    mask[-1] = 1  # the last row (or question) without padding
    ids = ids.masked_fill(mask == 0, 1)
    types = torch.zeros(shape, dtype=torch.long)
    types[..., 4:] = 1
    labels = {"nli": torch.tensor([0, 2, 1]), "low": torch.tensor([0.5, 3.0, 1.5]),
              "tags": torch.randint(0, 3, shape, generator=g), "choice": torch.tensor([2, 0])}
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
            "labels": labels[task]}


def make_model(arch: str, attn: str, task_embedding: bool = True) -> MultiTaskModel:
    torch.manual_seed(0)
    config = CONFIGS[arch]()
    config._attn_implementation = attn
    encoder = AutoModel.from_config(config, attn_implementation=attn)
    model = MultiTaskModel(encoder, TASKS, task_embedding=task_embedding)
    with torch.no_grad():  # a task vector that is not zero, so that it matters
        if model.task_embedding is not None:
            model.task_embedding.weight.normal_(0, 0.5)
    return model.train()


def loss_and_grads(model: MultiTaskModel, task: str) -> tuple[torch.Tensor, torch.Tensor,
                                                              dict[str, torch.Tensor | None]]:
    model.zero_grad(set_to_none=True)
    out = model(task, **batch_of(task))
    out["loss"].backward()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    return out["logits"].detach(), out["loss"].detach(), grads


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_the_cut_gives_the_full_forwards_logits_and_gradients(arch, attn):
    model = make_model(arch, attn)
    run, line = encoder_run(model.encoder)
    assert isinstance(run, BertLayersCut) and line.startswith(f"compute cut: on ({arch})")
    for task in ("nli", "low", "tags", "choice"):
        model.encoder_run = FULL_RUN
        full_logits, full_loss, full_grads = loss_and_grads(model, task)
        model.encoder_run = run
        cut_logits, cut_loss, cut_grads = loss_and_grads(model, task)
        torch.testing.assert_close(cut_logits, full_logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(cut_loss, full_loss, rtol=1e-5, atol=1e-6)
        # The same parameters get a gradient (the layers above a head get none either way) ...
        assert {n for n, g in cut_grads.items() if g is not None} == \
            {n for n, g in full_grads.items() if g is not None}, task
        for name, grad in full_grads.items():  # ... and the same one
            if grad is not None:
                torch.testing.assert_close(cut_grads[name], grad, rtol=1e-4, atol=1e-6,
                                           msg=f"{arch}/{attn} {task}: {name}")


def test_the_cut_is_exact_through_soft_sharing_copies():
    """Under soft sharing each group's task runs through its own encoder copy, cut alike."""
    import dataclasses

    torch.manual_seed(0)
    tasks = [dataclasses.replace(TASKS[0], encoder_group="a"),
             dataclasses.replace(TASKS[1], encoder_group="b")]
    model = MultiTaskModel(AutoModel.from_config(CONFIGS["bert"]()), tasks).train()
    with torch.no_grad():  # the copy differs from the main encoder
        for p in model.group_encoders["b"].parameters():
            p.add_(0.01 * torch.randn_like(p))
    run, _ = encoder_run(model.encoder)
    for task in ("nli", "low"):
        model.encoder_run = FULL_RUN
        full_logits, _, full_grads = loss_and_grads(model, task)
        model.encoder_run = run
        cut_logits, _, cut_grads = loss_and_grads(model, task)
        torch.testing.assert_close(cut_logits, full_logits, rtol=1e-5, atol=1e-6)
        copy = "group_encoders.b." if task == "low" else "encoder."
        trained = {n for n, g in cut_grads.items() if g is not None}
        assert trained == {n for n, g in full_grads.items() if g is not None}
        assert any(n.startswith(copy) for n in trained), trained
        for name, grad in full_grads.items():
            if grad is not None:
                torch.testing.assert_close(cut_grads[name], grad, rtol=1e-4, atol=1e-6)


def test_the_cut_skips_the_work_the_heads_do_not_read():
    model = make_model("bert", "sdpa", task_embedding=False)
    model.encoder_run, _ = encoder_run(model.encoder)
    seen: dict[str, list[tuple[int, ...]]] = {}

    def record(name):
        return lambda module, args, output: seen.setdefault(name, []).append(tuple(args[0].shape))

    layers = model.encoder.encoder.layer
    for i, block in enumerate(layers):
        block.attention.self.query.register_forward_hook(record(f"query{i}"))
        block.attention.self.key.register_forward_hook(record(f"key{i}"))
        block.intermediate.dense.register_forward_hook(record(f"ffn{i}"))
    model("nli", **batch_of("nli"))  # head on the top layer (3 of 3)
    assert seen["query0"] == [(3, 11, 32)] and seen["ffn1"] == [(3, 11, 32)]
    # the top layer: keys of every token, the query and feed-forward of the first only
    assert seen["key2"] == [(3, 11, 32)]
    assert seen["query2"] == [(3, 1, 32)] and seen["ffn2"] == [(3, 1, 32)]
    seen.clear()
    model("low", **batch_of("low"))  # head on layer 1: layers 2 and 3 do not run
    assert seen["query0"] == [(3, 1, 32)] and seen["key0"] == [(3, 11, 32)]
    assert not any(k.endswith(("1", "2")) for k in seen), seen
    seen.clear()
    model("tags", **batch_of("tags"))  # a token-level head on layer 2: every position, no layer 3
    assert seen["ffn1"] == [(3, 11, 32)] and "ffn2" not in seen and "query2" not in seen
    seen.clear()
    model.eval()  # evaluation runs the encoder's own forward: every layer, every position
    with torch.no_grad():
        model("nli", **batch_of("nli"))
    assert seen["query2"] == [(3, 11, 32)]


def test_evaluation_runs_the_full_forward_bit_for_bit():
    model = make_model("bert", "sdpa", task_embedding=False).eval()
    model.encoder_run, _ = encoder_run(model.encoder)
    batch = batch_of("nli")
    with torch.no_grad():
        logits = model("nli", **{k: v for k, v in batch.items() if k != "labels"})["logits"]
        hidden = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               token_type_ids=batch["token_type_ids"]).last_hidden_state
        assert torch.equal(logits, model.heads["nli"](hidden[:, 0]))


def test_other_architectures_and_the_switch_run_in_full():
    deberta = AutoModel.from_config(DebertaV2Config(vocab_size=99, **SMALL))
    run, line = encoder_run(deberta)
    assert type(run) is EncoderRun
    assert line.startswith("compute cut: off, deberta-v2 is not among the architectures")
    assert line.endswith("full computation")
    bert = AutoModel.from_config(CONFIGS["bert"]())
    run, line = encoder_run(bert, enabled=False)
    assert type(run) is EncoderRun and line == "compute cut: off (train.compute_cut=false)"
    decoder = AutoModel.from_config(BertConfig(vocab_size=99, is_decoder=True, **SMALL))
    run, line = encoder_run(decoder)
    assert type(run) is EncoderRun and "a decoder configuration" in line


def test_the_trainer_states_the_cut_and_trains_through_it(tiny_glue_spec, capsys):
    from mtdnn.spec import load_spec
    from mtdnn.trainer import train

    path = tiny_glue_spec(tasks="[rte, stsb]", steps=2)
    spec = load_spec(path, ["train.eval_every=100000"])
    train(spec, progress=False)
    assert "mtdnn: compute cut: on (bert): sentence-level heads compute their layer for the " \
           "first token only" in capsys.readouterr().out
    spec = load_spec(path, ["train.eval_every=100000", "train.compute_cut=false"])
    train(spec, progress=False)
    assert "mtdnn: compute cut: off (train.compute_cut=false)" in capsys.readouterr().out
