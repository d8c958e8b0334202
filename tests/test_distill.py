"""Knowledge distillation (mtdnn/distill.py): which teachers cover which tasks, the averaged
targets, the losses against a hand computation, the cache, a student with another tokenizer, an
exported teacher, and training that resumes exactly."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import build_tiny_bert
from safetensors.torch import load_file

import mtdnn.distill
from mtdnn.cli import main
from mtdnn.distill import coverage, teacher_outputs
from mtdnn.errors import SpecError
from mtdnn.spec import load_spec
from mtdnn.tasks import task_type
from mtdnn.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, tiny_bert, glue):
    """Two tiny multi-task teachers (other seeds) of rte, stsb and wikiqa, and rte exported."""
    from conftest import SPECS, write_spec

    from mtdnn.export import export

    root = tmp_path_factory.mktemp("teachers")
    spec_path = write_spec(root / "spec.yaml", f"""
include: [{SPECS / 'glue.yaml'}, {SPECS / 'wikiqa.yaml'}]
use_tasks: [rte, stsb, wikiqa]
encoder: {tiny_bert}
data_dir: {glue}
max_seq_length: 64
train: {{batch_size: 8, max_steps: 4, learning_rate: 1.0e-3, report_to: [none]}}
tasks:
  rte: {{max_train_examples: 24, max_eval_examples: 8}}
  stsb: {{max_train_examples: 24, max_eval_examples: 8}}
  wikiqa: {{max_train_examples: 4, max_eval_examples: 2}}
""")
    dirs = [train(load_spec(spec_path, [f"seed={s}", f"output_dir={root / f't{s}'}"]),
                  progress=False).best_dir for s in (1, 2)]
    return dirs, export(dirs[0], "rte", root / "rte-export"), spec_path


def _student(spec_path: Path, teachers: list, *overrides: str):
    listed = "[" + ", ".join(str(t) if isinstance(t, Path) else
                             "{path: " + str(t[0]) + ", task: " + t[1] + "}"
                             for t in teachers) + "]"
    return load_spec(spec_path, [f"distill={{teachers: {listed}, alpha: 0.3, temperature: 2.0}}",
                                 *overrides])


def test_coverage_names_what_each_teacher_teaches(teachers, capsys):
    dirs, exported, spec_path = teachers
    spec = _student(spec_path, [dirs[0], dirs[1], (exported, "rte")])
    covered, problems = coverage(spec)
    assert problems == []
    assert {k: [Path(t.path).name for t in v] for k, v in covered.items()} == {
        "rte": ["best", "best", "rte-export"], "stsb": ["best", "best"],
        "wikiqa": ["best", "best"]}
    assert mtdnn.distill.settings(spec) == {"rte": (0.3, 2.0), "stsb": (0.3, 2.0),
                                            "wikiqa": (0.3, 2.0)}
    assert main(["validate", str(spec_path), "--no-data",
                 f"distill={{teachers: [{dirs[0]}]}}"]) == 0
    out = capsys.readouterr().out
    assert f"  distill rte          from {dirs[0]}" in out


def test_bad_teachers_are_spec_errors(teachers, tmp_path):
    dirs, exported, spec_path = teachers
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"id2label": {"0": "yes", "1": "no"}}))
    fake = tmp_path / "fake"  # an mtdnn registry with a token task of the same name as rte
    fake.mkdir()
    (fake / "mtdnn.json").write_text(json.dumps({"tasks": [
        {"name": "rte", "type": "token_classification", "labels": ["O", "B-X"]}]}))
    with pytest.raises(SpecError) as e:
        _student(spec_path, [tmp_path / "missing", exported, (plain, "rte"), fake],
                 "tasks.rte.distill_alpha=1.5", "distill.temperature=0")
    problems = e.value.problems
    assert problems[0] == "distill.temperature: must be > 0, got 0.0"
    assert problems[1].startswith(f"distill.teachers[0]: {tmp_path / 'missing'}: directory not "
                                  "found")
    assert problems[2].startswith(f"distill.teachers[1]: {exported}: not an mtdnn checkpoint "
                                  "(no mtdnn.json): for a plain transformers model, give")
    assert problems[3] == (f"distill.teachers[2]: {plain}: its labels ['yes', 'no'] are not task "
                           "'rte''s ['entailment', 'not_entailment']")
    assert problems[4].startswith(f"distill.teachers[3]: {fake}: teaches no task of this spec")
    with pytest.raises(SpecError, match=r"tasks\.stsb\.distill_alpha: 0\.5 is used by "
                                        r"distillation only \(no teacher"):
        _student(spec_path, [(exported, "rte")], "tasks.stsb.distill_alpha=0.5")


def test_the_losses_by_hand():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    soft = torch.softmax(torch.randn(4, 3), -1)
    batch = {"soft_labels": soft}
    kind = task_type("classification")
    t, a = 2.0, 0.3
    kl = (soft * (soft.log() - torch.log_softmax(logits / t, -1))).sum(-1).mean()
    expected = a * F.cross_entropy(logits, labels) + (1 - a) * t * t * kl
    assert kind.distill_loss(logits, labels, batch, a, t).item() == pytest.approx(expected.item())
    assert kind.distill_loss(logits, labels, batch, 1.0, t).item() == \
        pytest.approx(F.cross_entropy(logits, labels).item())
    reg = task_type("regression")
    scores, gold, teach = torch.randn(5, 1), torch.randn(5), torch.randn(5)
    assert reg.distill_loss(scores, gold, {"soft_labels": teach}, a, t).item() == pytest.approx(
        (a * ((scores[:, 0] - gold) ** 2).mean() + (1 - a) * ((scores[:, 0] - teach) ** 2).mean())
        .item())
    rank = task_type("ranking")  # two groups: 3 and 2 candidates
    cand = torch.randn(5, 1)
    sizes = torch.tensor([3, 2])
    p = [torch.tensor([0.6, 0.3, 0.1]), torch.tensor([0.8, 0.2])]
    soft = torch.tensor([[0.6, 0.3, 0.1], [0.8, 0.2, 0.0]])
    b = {"group_sizes": sizes, "soft_labels": soft}
    q = [torch.log_softmax(cand[:3, 0] / t, 0), torch.log_softmax(cand[3:, 0] / t, 0)]
    kl = sum((pi * (pi.log() - qi)).sum() for pi, qi in zip(p, q)) / 2
    hard = rank.loss(cand, torch.tensor([0, 0]), b)
    assert rank.distill_loss(cand, torch.tensor([0, 0]), b, a, t).item() == pytest.approx(
        (a * hard + (1 - a) * t * t * kl).item(), rel=1e-5)


def test_targets_average_the_teachers():
    from datasets import Dataset

    one, two = np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 0.0], [1.0, 1.0]])
    feats = Dataset.from_dict({"index": [1, 0]})
    got = task_type("classification").teacher_targets([one, two], feats, 2.0)

    def sm(x):
        e = np.exp(x - x.max())
        return e / e.sum()
    assert got[0] == pytest.approx(((sm(one[1] / 2) + sm(two[1] / 2)) / 2).tolist())
    assert got[1] == pytest.approx(((sm(one[0] / 2) + sm(two[0] / 2)) / 2).tolist())
    groups = Dataset.from_dict({"members": [[0, 2], [1, 2]]})
    scores = [np.array([[1.0], [2.0], [3.0]]), np.array([[3.0], [2.0], [1.0]])]
    got = task_type("ranking").teacher_targets(scores, groups, 1.0)
    assert got[0] == pytest.approx(((sm(np.array([1.0, 3.0])) + sm(np.array([3.0, 1.0]))) / 2)
                                   .tolist())
    assert sum(got[1]) == pytest.approx(1.0)


def test_teacher_outputs_are_the_teachers_scores_cached_and_from_an_export_the_same(
        teachers, monkeypatch):
    from mtdnn.checkpoint import load_model
    from mtdnn.data import read_split

    dirs, exported, spec_path = teachers
    spec = _student(spec_path, [dirs[0]])
    rows = read_split(spec, spec.task("rte"), "train")
    ours = teacher_outputs(spec.distill.teachers[0], spec, spec.task("rte"), rows)
    model = load_model(dirs[0])
    probs = [r["probabilities"] for r in model.predict("rte", list(zip(rows.text_a, rows.text_b)))]
    got = torch.softmax(torch.from_numpy(ours), -1).numpy()
    expected = np.array([[p["entailment"], p["not_entailment"]] for p in probs])
    assert np.abs(got - expected).max() < 1e-6
    calls = []
    monkeypatch.setattr(mtdnn.distill, "_score_mtdnn", lambda *a: calls.append(1))
    again = teacher_outputs(spec.distill.teachers[0], spec, spec.task("rte"), rows)
    assert calls == [] and np.array_equal(again, ours)  # from the cache
    plain = _student(spec_path, [(exported, "rte")]).distill.teachers[0]
    assert np.abs(teacher_outputs(plain, spec, spec.task("rte"), rows) - ours).max() < 1e-5


def test_a_student_with_another_tokenizer_trains_and_resumes_exactly(teachers, tmp_path,
                                                                     minilm_path, capsys):
    dirs, _, spec_path = teachers
    student = build_tiny_bert(tmp_path / "student", minilm_path)  # MiniLM's WordPiece vocabulary
    common = [f"encoder={student}", "train.max_steps=6", "train.save_every=2",
              "train.eval_every=6", "train.log_every=1"]
    spec = _student(spec_path, dirs, *common, f"output_dir={tmp_path / 'ref'}")
    ref = train(spec, progress=False)
    log = capsys.readouterr().out
    assert "mtdnn: distilling rte from 2 teacher(s)" in log
    assert re.search(r"mtdnn: the teachers' targets took \d+ s", log)
    plain = train(load_spec(spec_path, [*common, f"output_dir={tmp_path / 'plain'}"]),
                  progress=False)
    assert "teachers' targets" not in capsys.readouterr().out  # no distill section, no line
    a, b = (load_file(str(d / "heads.safetensors")) for d in (plain.best_dir, ref.best_dir))
    assert any(not a[k].equal(b[k]) for k in a)  # the teachers changed the training
    cut = _student(spec_path, dirs, *common, f"output_dir={tmp_path / 'cut'}",
                   "train.step_mode=joint")
    train(cut, progress=False, stop_after=3)
    resumed = train(cut, progress=False, resume=True)
    uninterrupted = train(_student(spec_path, dirs, *common, f"output_dir={tmp_path / 'j'}",
                                   "train.step_mode=joint"), progress=False)
    c, d = (load_file(str(x / "model.safetensors")) for x in (resumed.best_dir,
                                                              uninterrupted.best_dir))
    assert all(c[k].equal(d[k]) for k in c)
    assert math.isfinite(ref.metrics["rte"]["dev"]["accuracy"])
