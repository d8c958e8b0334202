"""A fifth task type added from outside the package (tests/fifth_task_type.py: one module, one
registry line): it validates, trains next to a built-in type, evaluates, predicts, exports with
exact parity and serves the transformers pipeline, through the CLI, with no change under mtdnn/.
Without its registry line the same spec is refused, naming the known types."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mtdnn.cli import main

TESTS = Path(__file__).resolve().parent
SPECS = TESTS.parent / "task_specs"


def write_spec(path: Path, tiny_bert: str, glue: Path) -> Path:
    files = "{train: RTE/train.tsv, dev: RTE/dev.tsv}"
    path.write_text(f"""
encoder: {tiny_bert}
data_dir: {glue}
output_dir: {path.parent / 'unused'}
max_seq_length: 64
train: {{batch_size: 8, max_steps: 8, eval_every: 8, save_every: 4, learning_rate: 1.0e-3,
        report_to: [none]}}
tasks:
  rte:
    type: classification
    text: [sentence1, sentence2]
    labels: [entailment, not_entailment]
    files: {files}
    max_train_examples: 48
    max_eval_examples: 40
  rte_binary:
    type: binary_classification
    text: [sentence1, sentence2]
    labels: [entailment, not_entailment]
    files: {files}
    max_train_examples: 48
    max_eval_examples: 40
""", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory, tiny_bert, glue) -> dict:
    root = tmp_path_factory.mktemp("plugin")
    spec = write_spec(root / "spec.yaml", tiny_bert, glue)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(TESTS / "fifth_task_type.py"), str(spec),
                           str(root)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_its_registry_line_the_type_is_unknown(tmp_path, tiny_bert, glue, capsys):
    spec = write_spec(tmp_path / "spec.yaml", tiny_bert, glue)
    assert main(["validate", str(spec), "--no-data"]) == 2
    err = capsys.readouterr().err
    assert "tasks.rte_binary.type" in err and "'binary_classification'" in err
    assert "'classification'" in err and "Traceback" not in err


def test_it_validates_trains_and_evaluates_beside_a_builtin_type(report):
    assert report["validate"] == report["train"] == report["evaluate"] == 0
    assert report["head_outputs"] == {"rte": 2, "rte_binary": 1}
    for task in ("rte", "rte_binary"):
        dev = report["metrics"][task]["dev"]
        assert 0.0 <= dev["accuracy"] <= 1.0
    assert set(report["metrics"]["rte_binary"]["dev"]) == {"accuracy", "f1"}  # its defaults
    assert report["evaluated"] == report["metrics"]  # evaluate reproduces the run's metrics


def test_predict_from_the_cli_and_the_api_agree_and_are_sigmoids(report):
    got, api = report["predicted"], report["api_predicted"]
    assert report["predict"] == 0 and len(got) == len(api) == 3
    for row, expected in zip(got, api, strict=True):
        p = row["probabilities"]
        assert p == pytest.approx(expected["probabilities"], abs=1e-6)
        assert p["entailment"] + p["not_entailment"] == pytest.approx(1.0)
        assert row["label"] == max(p, key=p.get) and row["score"] == pytest.approx(max(p.values()))


def test_export_is_a_one_logit_classifier_with_parity_and_the_pipeline_agrees(report):
    assert report["export"] == 0
    assert report["exported_config"] == {"num_labels": 1,
                                         "problem_type": "multi_label_classification",
                                         "id2label": {"0": "not_entailment"}}
    assert report["export_max_diff"] < 1e-5
    for scores, expected in zip(report["pipeline"], report["api_predicted"], strict=True):
        assert [s["label"] for s in scores] == ["not_entailment"]
        assert scores[0]["score"] == pytest.approx(expected["probabilities"]["not_entailment"],
                                                   abs=1e-5)


def test_the_plugin_lives_outside_the_package():
    import mtdnn

    package = Path(mtdnn.__file__).parent
    assert not any("binary_classification" in p.read_text(encoding="utf-8")
                   for p in package.rglob("*.py"))


def test_its_loss_is_binary_cross_entropy_of_the_one_logit():
    import math

    import torch

    sys.path.insert(0, str(TESTS))
    from fifth_task_type import BinaryClassification

    kind = BinaryClassification()
    logits, labels = torch.tensor([[2.0], [-1.0], [0.5]]), torch.tensor([1, 0, 0])
    expected = -(math.log(1 / (1 + math.exp(-2.0))) + math.log(1 - 1 / (1 + math.exp(1.0)))
                 + math.log(1 - 1 / (1 + math.exp(-0.5)))) / 3
    assert kind.loss(logits, labels, {}).item() == pytest.approx(expected, rel=1e-6)
    assert kind.predictions(list(logits.numpy()), None, None).tolist() == [1, 0, 1]
    a, b = torch.tensor([[0.3], [1.0]]), torch.tensor([[0.3], [-1.0]])
    d = kind.divergence(a, b, {})
    assert d.item() > 0 and kind.divergence(a, a, {}).item() == pytest.approx(0.0, abs=1e-7)
