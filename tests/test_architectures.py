"""The shared encoder is any AutoModel: tiny random BERT, RoBERTa, DeBERTa-v2 and ELECTRA models
train a step for every task type and survive a checkpoint round trip unchanged."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, DebertaV2Config, ElectraConfig, RobertaConfig

from mtdnn.model import MultiTaskModel, TaskInfo, load_encoder
from mtdnn.prepare import head_activation

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             max_position_embeddings=80)
CONFIGS = {
    "bert": lambda v: BertConfig(vocab_size=v, **SMALL),
    "roberta": lambda v: RobertaConfig(vocab_size=v, pad_token_id=0, **SMALL),
    "deberta-v2": lambda v: DebertaV2Config(vocab_size=v, type_vocab_size=0, **SMALL),
    "electra": lambda v: ElectraConfig(vocab_size=v, embedding_size=16, **SMALL),
}
TASKS = [TaskInfo("nli", "classification", ["entailment", "neutral", "contradiction"], ["a", "b"]),
         TaskInfo("sts", "regression", [], ["a", "b"]),
         TaskInfo("qa", "ranking", [], ["q", "c"])]


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_every_architecture_trains_and_round_trips(arch, tmp_path, tiny_tokenizer):
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer)
    directory = tmp_path / "encoder"
    torch.manual_seed(0)
    config = CONFIGS[arch](len(tokenizer))
    from transformers import AutoModel

    AutoModel.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)

    encoder = load_encoder(str(directory))
    tasks = [TaskInfo(t.name, t.type, t.labels, t.text_columns,
                      activation=head_activation(encoder.config)) for t in TASKS]
    model = MultiTaskModel(encoder, tasks)
    model.tokenizer = tokenizer
    enc = tokenizer(["a man plays", "the cat sat on the mat"], ["someone plays", "a cat sits"],
                    padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if config.type_vocab_size:
        batch["token_type_ids"] = enc["token_type_ids"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = {
        "nli": model("nli", **batch, labels=torch.tensor([0, 2]))["loss"],
        "sts": model("sts", **batch, labels=torch.tensor([4.5, 1.0]))["loss"],
        # one query with two candidates; the first is the relevant one
        "qa": model("qa", **batch, labels=torch.tensor([0]), group_sizes=torch.tensor([2]))["loss"],
    }
    sum(losses.values()).backward()
    for name in ("nli", "sts", "qa"):  # every head got a gradient through the shared encoder
        assert model.heads[name].out_proj.weight.grad.abs().sum() > 0
    optimizer.step()

    model.eval()
    with torch.no_grad():
        before = {t.name: model(t.name, **batch)["logits"] for t in tasks}
    model.save_pretrained(tmp_path / "ckpt")
    loaded = MultiTaskModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.encoder.config.model_type == arch
    with torch.no_grad():
        for name, logits in before.items():
            assert torch.equal(loaded(name, **batch)["logits"], logits), name
