"""Further fine-tuning from a multi-task checkpoint (MT-DNN's second stage)."""

from __future__ import annotations

import pytest
import torch
from conftest import SPECS
from safetensors.torch import load_file

from mtdnn.checkpoint import init_from_checkpoint
from mtdnn.finetune import finetune_spec
from mtdnn.model import MultiTaskModel
from mtdnn.spec import SpecError, load_spec
from mtdnn.trainer import train


def _init_from_checkpoint(model, spec) -> list[str]:
    """The heads a spec's init_checkpoint loads into a model (its encoder comes along)."""
    return init_from_checkpoint(model, spec.init_checkpoint, spec.fresh_heads)["heads"]


@pytest.fixture
def checkpoint(tiny_glue_spec):
    spec = load_spec(tiny_glue_spec(tasks="[rte, stsb]", extra="task_embedding: true\n"))
    return train(spec, progress=False).best_dir


def _fresh_model(spec):
    from mtdnn.model import load_encoder
    from mtdnn.prepare import task_info

    torch.manual_seed(123)
    encoder = load_encoder(spec.encoder)
    return MultiTaskModel(encoder, [task_info(t) for t in spec.tasks], spec.task_embedding)


def test_finetune_starts_from_the_checkpoint_encoder_and_the_task_head(checkpoint, tmp_path):
    spec = finetune_spec(checkpoint, "rte", ["train.max_steps=2", "train.log_every=1"],
                         output_dir=str(tmp_path / "ft"))
    assert [t.name for t in spec.tasks] == ["rte"]
    assert spec.encoder == str(checkpoint) and spec.init_checkpoint == str(checkpoint)
    assert spec.train.max_steps == 2 and spec.train.learning_rate == 5e-5  # its own schedule
    model = _fresh_model(spec)
    assert _init_from_checkpoint(model, spec) == ["rte"]
    source = MultiTaskModel.from_pretrained(checkpoint)
    for name, value in source.heads["rte"].state_dict().items():
        assert torch.equal(model.heads["rte"].state_dict()[name], value)
    for name, value in source.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[name], value), name
    # the task's vector moves to the new run's task id (rte is task 0 in both; check the value)
    assert torch.equal(model.task_embedding.weight[0], source.task_embedding.weight[0])
    assert source.task_embedding.weight[0].abs().sum() > 0

    result = train(spec, progress=False)
    saved = MultiTaskModel.read_registry(result.best_dir)
    assert [t["name"] for t in saved["tasks"]] == ["rte"]
    assert set(result.metrics) == {"rte"}
    assert (tmp_path / "ft" / "metrics.json").is_file()


def test_fresh_head_ignores_the_trained_one(checkpoint, tmp_path):
    spec = finetune_spec(checkpoint, "rte", fresh_head=True, output_dir=str(tmp_path / "ft"))
    assert spec.fresh_heads == ("rte",)
    model = _fresh_model(spec)
    before = {k: v.clone() for k, v in model.heads["rte"].state_dict().items()}
    assert _init_from_checkpoint(model, spec) == []
    for k, v in model.heads["rte"].state_dict().items():
        assert torch.equal(v, before[k])


def test_a_task_the_checkpoint_lacks_needs_its_spec_and_gets_a_fresh_head(checkpoint, tmp_path,
                                                                            glue):
    with pytest.raises(SpecError, match=r"unknown task 'cola'.*give the spec defining it: --spec"):
        finetune_spec(checkpoint, "cola")
    spec = finetune_spec(checkpoint, "cola", [f"data_dir={glue}", "train.max_steps=2",
                                              "tasks.cola.max_train_examples=16",
                                              "tasks.cola.max_eval_examples=8"],
                         spec_path=SPECS / "glue.yaml", output_dir=str(tmp_path / "ft"))
    assert spec.encoder == str(checkpoint)
    result = train(spec, progress=False)
    assert set(result.metrics) == {"cola"}
    heads = load_file(str(result.best_dir / "heads.safetensors"))
    assert heads["heads.cola.out_proj.weight"].shape == (2, 32)


def test_a_head_with_another_label_set_is_an_error_naming_the_fix(checkpoint, tmp_path):
    spec = finetune_spec(checkpoint, "rte", ["tasks.rte.labels=[pro, con, neutral]"],
                         output_dir=str(tmp_path / "ft"))
    with pytest.raises(SpecError, match=r"task 'rte': the checkpoint's head is a classification "
                       r"head with labels \['entailment', 'not_entailment'\].*--fresh-head"):
        _init_from_checkpoint(_fresh_model(spec), spec)


def test_cli_finetune(checkpoint, tmp_path):
    from mtdnn.cli import main

    assert main(["finetune", str(checkpoint), "--task", "stsb", "train.max_steps=2",
                 "--output-dir", str(tmp_path / "ft"), "--no-progress"]) == 0
    assert (tmp_path / "ft" / "best" / "heads.safetensors").is_file()
    assert main(["finetune", str(tmp_path / "nope"), "--task", "stsb"]) == 2
