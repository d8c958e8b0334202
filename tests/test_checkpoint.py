"""The checkpoint format (mtdnn/checkpoint.py): init_checkpoint in any spec, remote-code encoders,
the trainer state, and what a checkpoint records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_bert
from safetensors.torch import load_file

from mtdnn.checkpoint import TrainerState, read_metrics
from mtdnn.cli import main
from mtdnn.errors import CheckpointError
from mtdnn.model import MultiTaskModel
from mtdnn.spec import load_spec
from mtdnn.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def _encoder(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Over the weights both hold (a pretrained encoder also has a pooler, which mtdnn drops)."""
    shared = a.keys() & b.keys()
    assert len(shared) >= 0.9 * len(a)
    return max((a[k].float() - b[k].float()).abs().max().item() for k in shared)


def test_init_checkpoint_in_a_user_spec_starts_from_its_encoder_and_heads(tiny_glue_spec,
                                                                         tiny_bert, tmp_path):
    spec_path = tiny_glue_spec(tasks="[rte, stsb]", steps=4)
    first = train(load_spec(spec_path, ["train.learning_rate=1e-2", "train.warmup_ratio=0",
                                        f"output_dir={tmp_path / 'first'}"]), progress=False)
    trained, init = _encoder(first.best_dir), _encoder(Path(tiny_bert))
    assert _max_diff(trained, init) > 1e-2  # the first run moved the encoder clearly
    # A user's spec (encoder: the random tiny BERT) that names the checkpoint: one step at a
    # learning rate of 1e-9 leaves the weights where they started.
    second = train(load_spec(spec_path, [
        f"init_checkpoint={first.best_dir}", "train.max_steps=1", "train.learning_rate=1e-9",
        f"output_dir={tmp_path / 'second'}"]), progress=False)
    started = _encoder(second.best_dir)
    assert _max_diff(started, trained) < 1e-6
    assert _max_diff(started, init) > 1e-2
    heads_a = load_file(str(first.best_dir / "heads.safetensors"))
    heads_b = load_file(str(second.best_dir / "heads.safetensors"))
    assert _max_diff(heads_a, heads_b) < 1e-6


def test_a_checkpoint_records_its_run_apart_from_the_model(tiny_glue_spec, tmp_path):
    result = train(load_spec(tiny_glue_spec(tasks="[rte]", steps=2)), progress=False)
    record = read_metrics(result.best_dir)
    assert record["step"] == result.best_step == 2
    assert record["tasks"] == result.metrics
    registry = MultiTaskModel.read_registry(result.best_dir)
    assert set(registry) == {"format_version", "task_embedding", "max_seq_length", "tasks"}


def test_trainer_state_round_trips_and_refuses_what_it_did_not_write(tmp_path):
    state = TrainerState(step=7, step_mode="joint", step_state={"task_samplers": {"a": {}}},
                         best_score=0.5, best_step=4, best_results={"a": {"accuracy": 0.5}},
                         running={"a": [0.25, 0.5]})
    path = tmp_path / "trainer_state.json"
    path.write_text(state.to_json())
    assert TrainerState.read(path) == state
    path.write_text(json.dumps({"step": 7, "sampler": {}}))  # the layout of an older version
    with pytest.raises(CheckpointError, match=r"not a trainer state of this mtdnn version"):
        TrainerState.read(path)
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"cannot be read"):
        TrainerState.read(path)


# --- encoders that ship their own code ------------------------------------------------------------

CONFIG_CODE = """from transformers import BertConfig


class TinyCustomConfig(BertConfig):
    model_type = "tiny-custom"
"""
MODEL_CODE = """from transformers import BertModel

from .configuration_tiny import TinyCustomConfig


class TinyCustomModel(BertModel):
    config_class = TinyCustomConfig
"""


@pytest.fixture(scope="module")
def remote_code_encoder(tmp_path_factory, tiny_tokenizer: str) -> str:
    """A tiny BERT declared as a custom architecture whose code ships with the weights."""
    path = Path(build_tiny_bert(tmp_path_factory.mktemp("custom"), tiny_tokenizer))
    (path / "configuration_tiny.py").write_text(CONFIG_CODE)
    (path / "modeling_tiny.py").write_text(MODEL_CODE)
    config = json.loads((path / "config.json").read_text())
    config.update(model_type="tiny-custom", architectures=["TinyCustomModel"], auto_map={
        "AutoConfig": "configuration_tiny.TinyCustomConfig",
        "AutoModel": "modeling_tiny.TinyCustomModel"})
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


def test_remote_code_runs_only_when_asked(tiny_glue_spec, remote_code_encoder, tmp_path, glue,
                                          capsys):
    spec_path = tiny_glue_spec(tasks="[rte]", steps=2)
    refused = main(["train", str(spec_path), f"encoder={remote_code_encoder}", "--no-progress",
                    f"output_dir={tmp_path / 'refused'}"])
    assert refused == 2 and "trust_remote_code" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()

    result = train(load_spec(spec_path, [f"encoder={remote_code_encoder}",
                                         "trust_remote_code=true"]), progress=False)
    ckpt = result.best_dir
    assert (ckpt / "modeling_tiny.py").is_file()  # the code travels with the checkpoint
    with pytest.raises(CheckpointError, match=r"needs code shipped with the checkpoint: pass "
                       r"trust_remote_code=True \(CLI: --trust-remote-code\)"):
        MultiTaskModel.from_pretrained(ckpt)
    model = MultiTaskModel.from_pretrained(ckpt, trust_remote_code=True)
    assert type(model.encoder).__name__ == "TinyCustomModel"

    # Every command that loads a checkpoint refuses without the flag and works with it.
    rows = tmp_path / "rows.tsv"
    rows.write_text("sentence1\tsentence2\nA man plays.\tSomeone plays.\n", encoding="utf-8")
    commands = {
        "evaluate": ["evaluate", str(ckpt)],
        "predict": ["predict", str(ckpt), "--task", "rte", "--input", str(rows), "--output",
                    str(tmp_path / "out.jsonl")],
        "export": ["export", str(ckpt), "--encoder-only", "--output", str(tmp_path / "enc")],
    }
    for name, argv in commands.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(f"error: {ckpt}: its encoder needs code shipped with the checkpoint")
        assert "--trust-remote-code" in err and "Traceback" not in err
        assert main([*argv, "--trust-remote-code"]) == 0, name
    assert json.loads((tmp_path / "out.jsonl").read_text())["label"] in ("entailment",
                                                                          "not_entailment")
    shutil.rmtree(tmp_path / "enc")
