"""head_init: pooler: a head's dense layer starts from the encoder checkpoint's pretrained pooler
(as AutoModelForSequenceClassification's does), the encoder itself still runs without one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import SPECS, build_tiny_bert
from safetensors.torch import load_file

from mtdnn.model import MultiTaskModel
from mtdnn.prepare import detach_pooler, load_model_parts, start_heads_from_pooler, task_info
from mtdnn.spec import SpecError, load_spec
from mtdnn.trainer import train


def _pooler(directory: str) -> dict[str, torch.Tensor]:
    tensors = load_file(str(Path(directory) / "model.safetensors"))
    return {k.split(".")[-1]: v for k, v in tensors.items() if k.startswith("pooler.dense.")}


def test_the_head_starts_as_the_pretrained_pooler_and_the_others_do_not(tiny_glue_spec, tiny_bert):
    spec = load_spec(tiny_glue_spec(tasks="[rte, stsb]"), ["tasks.rte.head_init=pooler"])
    _, encoder = load_model_parts(spec)
    dense = detach_pooler(encoder, spec)
    assert encoder.pooler is None  # the encoder runs (and is saved) without it, as always
    pooler = _pooler(tiny_bert)
    assert torch.equal(dense.weight, pooler["weight"]) and torch.equal(dense.bias, pooler["bias"])
    model = MultiTaskModel(encoder, [task_info(t) for t in spec.tasks])
    start_heads_from_pooler(model, spec, dense)
    assert torch.equal(model.heads["rte"].dense.weight, pooler["weight"])
    assert torch.equal(model.heads["rte"].dense.bias, pooler["bias"])
    assert not torch.allclose(model.heads["stsb"].dense.weight, pooler["weight"])  # random
    assert not any("pooler" in k for k in model.state_dict())


def test_training_starts_from_it_and_the_checkpoint_holds_no_pooler(tiny_glue_spec, tiny_bert):
    # a learning rate too small to move anything: after one step the head is still the pooler
    spec = load_spec(tiny_glue_spec(tasks="[rte, stsb]", steps=1),
                     ["tasks.rte.head_init=pooler", "train.learning_rate=1e-12"])
    best = train(spec, progress=False).best_dir
    heads = load_file(str(best / "heads.safetensors"))
    pooler = _pooler(tiny_bert)
    assert torch.allclose(heads["heads.rte.dense.weight"], pooler["weight"], atol=1e-9)
    assert not torch.allclose(heads["heads.stsb.dense.weight"], pooler["weight"], atol=1e-3)
    assert not any("pooler" in k for k in load_file(str(best / "model.safetensors")))
    # a fine-tuning run keeps the checkpoint's head: no pooler is needed (the checkpoint has none)
    again = load_spec(tiny_glue_spec(tasks="[rte]", steps=1), [
        f"init_checkpoint={best}", "tasks.rte.head_init=pooler",
        f"output_dir={best.parent / 'ft'}"])
    assert train(again, progress=False).best_dir.is_dir()
    # ... unless the head starts fresh
    fresh = load_spec(tiny_glue_spec(tasks="[rte]", steps=1), [
        f"init_checkpoint={best}", "tasks.rte.head_init=pooler", "fresh_heads=[rte]",
        f"output_dir={best.parent / 'ft2'}"])
    with pytest.raises(SpecError, match=r"tasks\.rte\.head_init: 'pooler' starts the head from the "
                                        r"encoder's pretrained pooler, and init_checkpoint .* "
                                        r"holds none: set head_init: random"):
        train(fresh, progress=False)


def test_an_encoder_without_pooler_weights_is_a_spec_error(tiny_glue_spec, tiny_tokenizer,
                                                             tmp_path):
    from transformers import BertModel

    directory = Path(build_tiny_bert(tmp_path / "bert", tiny_tokenizer))
    BertModel.from_pretrained(directory, add_pooling_layer=False).save_pretrained(directory)
    assert not _pooler(str(directory))
    spec = load_spec(tiny_glue_spec(tasks="[rte, stsb]"), [
        f"encoder={directory}", "tasks.rte.head_init=pooler", "tasks.stsb.head_init=pooler"])
    with pytest.raises(SpecError) as e:
        load_model_parts(spec)
    assert [p.split(":")[0] for p in e.value.problems] == ["tasks.rte.head_init",
                                                            "tasks.stsb.head_init"]
    assert f"encoder {directory} (bert) holds none: set head_init: random" in e.value.problems[0]


def test_head_init_is_checked_in_the_spec(tiny_glue_spec):
    with pytest.raises(SpecError, match=r"tasks\.rte\.head_init: 'bert' is not valid "
                                        r"\(choose one of: random, pooler\)"):
        load_spec(tiny_glue_spec(tasks="[rte]"), ["tasks.rte.head_init=bert"])


def test_a_head_without_a_dense_layer_cannot_start_from_the_pooler():
    with pytest.raises(SpecError, match=r"tasks\.ner\.head_init: 'pooler' starts a head's dense "
                                        r"layer from the encoder's pooler, and a "
                                        r"token_classification head has none"):
        load_spec(SPECS / "conll2003.yaml", ["tasks.ner.head_init=pooler"])
