"""Soft parameter sharing and hierarchical heads through the training loop (mtdnn/trainer.py,
mtdnn/finetune.py, the CLI), on the tiny BERT and real GLUE rows. The mathematics of the penalty,
its gradient and the layer a head reads are checked in tests/test_model.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtdnn.checkpoint import init_from_checkpoint
from mtdnn.finetune import finetune_spec
from mtdnn.model import MultiTaskModel, load_encoder
from mtdnn.prepare import task_info
from mtdnn.spec import SpecError, load_spec
from mtdnn.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")

# Overrides, not extra YAML: a second `train:` or `tasks:` mapping would replace the spec's own.
SOFT = ["train.sharing=soft", "tasks.rte.encoder_group=pairs", "tasks.stsb.encoder_group=pairs"]


def penalties(out: Path) -> list[float]:
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [r["soft_sharing_penalty"] for r in records if "soft_sharing_penalty" in r]


def test_soft_sharing_trains_one_copy_per_group_and_the_penalty_pulls_them(tiny_glue_spec,
                                                                          tmp_path: Path):
    spec_path = tiny_glue_spec(tasks="[rte, stsb, cola]", steps=8)
    free = train(load_spec(spec_path, [*SOFT, "train.soft_sharing_weight=0"]), progress=False)
    ckpt = free.best_dir
    registry = json.loads((ckpt / "mtdnn.json").read_text())
    assert {t["name"]: t["encoder_group"] for t in registry["tasks"]} == \
        {"rte": "pairs", "stsb": "pairs", "cola": "cola"}
    assert (ckpt / "encoders" / "cola" / "model.safetensors").is_file()
    apart = penalties(tmp_path / "run")
    assert len(apart) == 4 and apart[-1] > 0  # the copies moved apart

    pulled = train(load_spec(spec_path, [*SOFT, f"output_dir={tmp_path / 'pulled'}",
                                         "train.soft_sharing_weight=1000"]), progress=False)
    together = penalties(tmp_path / "pulled")
    assert together[-1] < apart[-1] / 10, (together, apart)
    # The checkpoint's copies are the trained ones: its penalty is the logged last-step value.
    model = MultiTaskModel.from_pretrained(pulled.best_dir)
    if pulled.best_step == 8:
        assert model.soft_sharing_penalty().item() == pytest.approx(together[-1], rel=1e-4)


def test_finetune_continues_with_the_task_s_own_copy(tiny_glue_spec, tmp_path: Path):
    spec_path = tiny_glue_spec(tasks="[rte, stsb, cola]", steps=2)
    ckpt = train(load_spec(spec_path, SOFT), progress=False).best_dir
    cola = finetune_spec(ckpt, "cola", ["train.max_steps=1"])
    rte = finetune_spec(ckpt, "rte", ["train.max_steps=1"])
    assert cola.encoder == str(ckpt / "encoders" / "cola") and rte.encoder == str(ckpt)
    assert cola.train.sharing == "hard" and cola.task("cola").encoder_group is None
    assert cola.tokenizer == str(ckpt)
    # init_checkpoint loads the copy each task used into the new (one-encoder) model.
    source = MultiTaskModel.from_pretrained(ckpt)
    for spec, task in ((cola, "cola"), (rte, "rte")):
        model = MultiTaskModel(load_encoder(spec.encoder), [task_info(spec.task(task))])
        loaded = init_from_checkpoint(model, spec.init_checkpoint)
        assert loaded["heads"] == [task]
        expected = source.encoder_for(task).state_dict()
        assert all(torch.equal(v, expected[k]) for k, v in model.encoder.state_dict().items())
    assert not torch.equal(source.encoder_for("cola").embeddings.word_embeddings.weight,
                           source.encoder_for("rte").embeddings.word_embeddings.weight)


def test_hierarchical_head_round_trip(tiny_glue_spec, tmp_path: Path):
    spec_path = tiny_glue_spec(tasks="[rte, cola]", steps=4)
    result = train(load_spec(spec_path, ["tasks.cola.layer=1"]), progress=False)
    registry = json.loads((result.best_dir / "mtdnn.json").read_text())
    assert {t["name"]: t["layer"] for t in registry["tasks"]} == {"rte": None, "cola": 1}
    model = MultiTaskModel.from_pretrained(result.best_dir)
    assert model.layer_index == {"rte": 2, "cola": 1}
    ids = model.tokenizer(["A short sentence."], return_tensors="pt")
    with torch.no_grad():
        hidden = model.encoder(**ids, output_hidden_states=True).hidden_states
        expected = model.heads["cola"](hidden[1][:, 0])
        torch.testing.assert_close(model("cola", **ids)["logits"], expected)


def test_a_layer_beyond_the_encoder_is_a_spec_error(tiny_glue_spec):
    spec_path = tiny_glue_spec(tasks="[rte, cola]")
    with pytest.raises(SpecError, match=r"tasks\.cola\.layer: layer 7 does not exist: the "
                       r"encoder has 2 layers \(give 1\.\.2, -1\.\.-2, or null for the last\)"):
        train(load_spec(spec_path, ["tasks.cola.layer=7"]), progress=False)
    r = subprocess.run([sys.executable, "-m", "mtdnn.cli", "train", str(spec_path),
                        "tasks.cola.layer=7"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "tasks.cola.layer: layer 7 does not exist" in r.stderr


def test_soft_sharing_that_does_not_fit_is_refused_before_copying(tiny_glue_spec, monkeypatch):
    import mtdnn.sharing

    spec_path = tiny_glue_spec(tasks="[rte, stsb, cola]")
    monkeypatch.setattr(mtdnn.sharing, "available_memory", lambda device: 1000)
    with pytest.raises(SpecError) as e:
        train(load_spec(spec_path, SOFT), progress=False)
    (problem,) = e.value.problems
    assert problem.startswith("train.sharing: soft sharing needs 2 encoder copies, ")
    assert problem.endswith("GiB is free on cpu: put tasks into fewer groups "
                            "(tasks.<name>.encoder_group) or use sharing: hard")


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.sharing=soft", "train.step_mode=joint", "train.gradient_surgery=pcgrad"],
     "train.gradient_surgery: 'pcgrad' works on the parameters every task shares; with "
     "sharing=soft no parameter is shared: use one of them"),
    (["tasks.rte.encoder_group=a"],
     "tasks.rte.encoder_group: is used by train.sharing=soft only: remove it, or set "
     "train.sharing: soft"),
    (["train.sharing=soft", "tasks.rte.encoder_group=a", "tasks.cola.encoder_group=a"],
     "train.sharing: soft sharing needs at least two encoder groups, got ['a']: give tasks "
     "different encoder_group values (or none)"),
    (["tasks.cola.layer=0"], "tasks.cola.layer: 0 is the embedding output, not an encoder "
     "layer: give 1 (the lowest layer) up to the number of layers, a negative number to count "
     "from the top (-1: the last), or null"),
])
def test_invalid_combinations_are_spec_errors(tiny_glue_spec, overrides: list[str],
                                              message: str):
    with pytest.raises(SpecError) as e:
        load_spec(tiny_glue_spec(tasks="[rte, cola]"), overrides)
    assert message in e.value.problems
