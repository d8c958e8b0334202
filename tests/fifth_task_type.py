"""A task type from outside the package: binary classification with one logit (a sigmoid and
binary cross-entropy, where `classification` has two logits and a softmax).

It is the proof of "adding a task type is one module plus one registry line": nothing under
mtdnn/ knows it; `register()` is the line a contributor would add to mtdnn/tasks/__init__.py's
`TASK_TYPES`. Run as a script, it registers itself and drives the CLI through validate, train,
evaluate, predict and export, then checks the export and the transformers pipeline against
mtdnn's own outputs; it prints one JSON object that tests/test_task_plugin.py asserts on.

    python tests/fifth_task_type.py SPEC OUT_DIR
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtdnn.tasks.classification import Classification

NAME = "binary_classification"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class BinaryClassification(Classification):
    """Two labels, one logit: the probability of the second label is sigmoid(logit)."""

    name = NAME
    default_metrics = ("accuracy", "f1")
    problem_type = "multi_label_classification"  # the exported head: one sigmoid output
    distillable = False

    def check(self, task: Any, report: Any) -> None:
        super().check(task, report)
        if len(task.labels) != 2:
            report.fail(f"tasks.{task.name}.labels", "a binary_classification task takes exactly "
                        f"2 labels (negative first), got {list(task.labels)}")

    def num_outputs(self, labels: Sequence[str]) -> int:
        return 1

    def loss(self, logits: Any, labels: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(logits.float()[:, 0], labels.float())

    def divergence(self, a: Any, b: Any, batch: dict[str, Any]) -> Any:
        import torch

        from mtdnn.smart import sym_kl

        # a logit x is the softmax of (0, x): the Bernoulli's two probabilities
        return sym_kl(torch.cat([torch.zeros_like(a), a], -1),
                      torch.cat([torch.zeros_like(b), b], -1))

    def predictions(self, outputs: list[Any], dataset: Any, examples: Any) -> np.ndarray:
        if not outputs:
            return np.zeros(0, dtype=np.int64)
        return (np.stack(outputs)[:, 0] > 0).astype(np.int64)

    def decode(self, info: Any, predictions: Any, outputs: list[Any], dataset: Any,
               examples: Any) -> list[dict[str, Any]]:
        results = []
        for x in outputs:
            p = float(_sigmoid(np.asarray(x, dtype=np.float64))[0])
            label = info.labels[int(p > 0.5)]
            results.append({"label": label, "score": max(p, 1 - p),
                            "probabilities": {info.labels[0]: 1 - p, info.labels[1]: p}})
        return results

    def export_labels(self, info: Any) -> list[str]:
        return [info.labels[1]]


def register() -> None:
    """The registry line (before a spec is loaded: the spec's `type` field is checked against the
    table as it stands when mtdnn.spec is first imported)."""
    from mtdnn.tasks import TASK_TYPES

    TASK_TYPES[NAME] = f"{__name__}:BinaryClassification"


def drive(spec: str, out: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, pipeline

    from mtdnn.cli import main
    from mtdnn.export import probe_batch
    from mtdnn.model import MultiTaskModel

    report: dict[str, Any] = {}
    run = out / "run"
    report["validate"] = main(["validate", spec])
    report["train"] = main(["train", spec, f"output_dir={run}", "--no-progress"])
    report["metrics"] = json.loads((run / "metrics.json").read_text())["tasks"]
    report["evaluate"] = main(["evaluate", str(run / "best"), "--output", str(out / "eval.json")])
    report["evaluated"] = json.loads((out / "eval.json").read_text())

    model = MultiTaskModel.from_pretrained(run / "best")
    report["head_outputs"] = {t: model.tasks[t].num_outputs for t in model.tasks}
    pairs = [["A man plays a guitar.", "A person makes music."],
             ["The cat sleeps.", "The dog is barking loudly."],
             ["It rained all day.", "The ground was wet."]]
    inputs = out / "in.jsonl"
    inputs.write_text("".join(json.dumps({"sentence1": a, "sentence2": b}) + "\n"
                              for a, b in pairs), encoding="utf-8")
    report["predict"] = main(["predict", str(run / "best"), "--task", "rte_binary", "--input",
                              str(inputs), "--output", str(out / "pred.jsonl")])
    report["predicted"] = [json.loads(x) for x in (out / "pred.jsonl").read_text().splitlines()]
    report["api_predicted"] = model.predict("rte_binary", pairs)

    report["export"] = main(["export", str(run / "best"), "--task", "rte_binary", "--output",
                             str(out / "export")])
    theirs = AutoModelForSequenceClassification.from_pretrained(out / "export").eval()
    report["exported_config"] = {"num_labels": theirs.config.num_labels,
                                 "problem_type": theirs.config.problem_type,
                                 "id2label": theirs.config.id2label}
    real = model.tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True,
                           return_tensors="pt")
    diffs = []
    for batch in (probe_batch(theirs.config), dict(real)):
        with torch.no_grad():
            diffs.append((model("rte_binary", **batch)["logits"]
                          - theirs(**batch).logits).abs().max().item())
    report["export_max_diff"] = max(diffs)
    classifier = pipeline("text-classification", model=str(out / "export"),
                          function_to_apply="sigmoid", top_k=None)
    report["pipeline"] = [classifier({"text": a, "text_pair": b}) for a, b in pairs]
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fifth_task_type

    fifth_task_type.register()
    print(json.dumps(drive(sys.argv[1], Path(sys.argv[2]))))
