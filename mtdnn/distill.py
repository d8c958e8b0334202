"""Multi-task knowledge distillation (MT-DNN-KD, Liu et al. 2019): a student trained on the
averaged soft targets of an ensemble of teachers, next to the gold labels.

    distill:
      teachers: [runs/mt-1/best, runs/mt-2/best, {path: exports/rte, task: rte}]
      alpha: 0.5          # the weight of the gold labels
      temperature: 1.0

A teacher is an mtdnn checkpoint (it teaches every task of the spec it holds with the same name,
type and labels) or a plain transformers model exported for one task (`task:`). Each teacher
scores the training rows of its tasks once, with its own tokenizer (a student with another
tokenizer is the usual case), and the outputs are cached on disk (keyed by the rows' content and
the teacher's weights). The ensemble's targets are averaged per task type
(`TaskType.teacher_targets`: the mean of the teachers' softmax at temperature T for
classification, of their scores for regression, of their listwise softmaxes for ranking) and
travel with the training batches as `soft_labels`; the task's loss becomes
`TaskType.distill_loss` (alpha * gold + (1 - alpha) * distillation). Only these three task types
can be distilled: the token-level types' outputs depend on the teacher's tokenization.

The student exports like any checkpoint. `mtdnn validate` says which teachers cover which tasks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mtdnn.spec import Spec, TaskSpec, TeacherSpec


def _teacher_tasks(teacher: TeacherSpec) -> tuple[dict[str, tuple[str, list[str]]], str | None]:
    """What a teacher holds: {task: (type, labels)}, or (the problem)."""
    path = Path(teacher.path)
    if not path.is_dir():
        return {}, f"{teacher.path}: directory not found (give an mtdnn checkpoint, e.g. " \
                   "runs/mt/best, or a model exported with `mtdnn export` and its `task:`)"
    if teacher.task is None:
        registry = path / "mtdnn.json"
        if not registry.is_file():
            return {}, f"{teacher.path}: not an mtdnn checkpoint (no mtdnn.json): for a plain " \
                       "transformers model, give {path: ..., task: <the task it scores>}"
        held = json.loads(registry.read_text(encoding="utf-8"))["tasks"]
        return {t["name"]: (t["type"], list(t.get("labels", []))) for t in held}, None
    config = path / "config.json"
    if not config.is_file():
        return {}, f"{teacher.path}: no config.json: not a transformers model"
    conf = json.loads(config.read_text(encoding="utf-8"))
    id2label = conf.get("id2label") or {}
    labels = [id2label[str(i)] if str(i) in id2label else id2label.get(i)
              for i in range(len(id2label))]
    return {teacher.task: ("plain", labels)}, None


def coverage(spec: Spec) -> tuple[dict[str, list[TeacherSpec]], list[tuple[str, str]]]:
    """({task: the teachers that cover it}, [(key, problem)]) of the spec's distill section
    (torch-free: reads the teachers' mtdnn.json / config.json)."""
    from mtdnn.tasks import task_type

    covered: dict[str, list[TeacherSpec]] = {}
    problems: list[tuple[str, str]] = []
    if spec.distill is None:
        return covered, problems
    tasks = {t.name: t for t in spec.tasks}
    for i, teacher in enumerate(spec.distill.teachers):
        key = f"distill.teachers[{i}]"
        held, problem = _teacher_tasks(teacher)
        if problem:
            problems.append((key, problem))
            continue
        hits = []
        for name, (kind, labels) in held.items():
            task = tasks.get(name)
            if task is None:
                continue
            if kind == "plain":
                wanted = list(task.labels) if task.type == "classification" else None
                if wanted is not None and sorted(labels) != sorted(wanted):
                    problems.append((key, f"{teacher.path}: its labels {labels} are not task "
                                          f"'{name}''s {wanted}"))
                    continue
                if wanted is None and len(labels) != 1:
                    problems.append((key, f"{teacher.path}: {len(labels)} outputs; a "
                                          f"{task.type} task's teacher has one"))
                    continue
            elif (kind, labels) != (task.type, list(task.labels)):
                continue  # another task of the same name: not this task's teacher
            hits.append(name)
        if teacher.task is not None and teacher.task not in tasks:
            from mtdnn.spec import unknown_name_message

            problems.append((f"{key}.task", unknown_name_message("task", teacher.task, tasks)))
        elif not hits and not any(k == key for k, _ in problems):
            problems.append((key, f"{teacher.path}: teaches no task of this spec (it holds "
                                  f"{sorted(held)} ; a task is taught when its name, type and "
                                  "labels match)"))
        for name in hits:
            covered.setdefault(name, []).append(teacher)
    for name in covered:
        if not task_type(tasks[name].type).distillable:
            problems.append((f"tasks.{name}", f"a {tasks[name].type} task cannot be distilled "
                                              "(its outputs depend on the teacher's "
                                              "tokenization): classification, regression and "
                                              "ranking tasks can; remove its teacher"))
    return covered, problems


def settings(spec: Spec) -> dict[str, tuple[float, float]]:
    """task -> (alpha, temperature) for every distilled task."""
    if spec.distill is None:
        return {}
    d = spec.distill
    return {name: (task.distill_alpha if task.distill_alpha is not None else d.alpha,
                   task.distill_temperature if task.distill_temperature is not None
                   else d.temperature)
            for name in coverage(spec)[0] for task in [spec.task(name)]}


def _weights_digest(path: Path) -> str:
    """The teacher's identity for the cache: its weight files' content."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")):
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:24]


def teacher_outputs(teacher: TeacherSpec, spec: Spec, task: TaskSpec, rows: Any) -> np.ndarray:
    """The teacher's outputs (N, outputs) on the rows (in row order, labels in the task's order),
    from its own tokenization; cached on disk."""
    from mtdnn.features import cache_dir, content_key

    path = Path(teacher.path)
    key = content_key(task.name, f"teacher-{rows.split}", rows.where, _NoTokenizer(), 0,
                      f"{_weights_digest(path)},{teacher.task}",
                      [rows.text_a, rows.text_b or []])
    cached = cache_dir() / "teachers" / f"{task.name}-{key}.npy"
    if cached.is_file():
        return np.load(cached)
    out = _score_mtdnn(path, spec, task, rows) if teacher.task is None else \
        _score_plain(path, spec, task, rows)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(cached)
    return out


class _NoTokenizer:
    """content_key's tokenizer fields for teacher outputs (the teacher's weights name it)."""

    name_or_path = "teacher"
    init_kwargs: dict[str, Any] = {}

    def __len__(self) -> int:
        return 0


def _score_mtdnn(path: Path, spec: Spec, task: TaskSpec, rows: Any) -> np.ndarray:
    from mtdnn.checkpoint import load_model
    from mtdnn.evaluation import logits_of

    model = load_model(path, trust_remote_code=spec.trust_remote_code)
    kind = model.task_types[task.name]
    dataset = kind.features(rows, model.tokenizer, model.max_seq_length, for_training=False,
                            task=task, use_cache=False)
    return logits_of(model, task.name, dataset, spec.train.eval_batch_size)


def _score_plain(path: Path, spec: Spec, task: TaskSpec, rows: Any) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, trust_remote_code=spec.trust_remote_code).eval()
    max_len = min(spec.max_seq_length, tokenizer.model_max_length or spec.max_seq_length)
    texts = [rows.text_a] + ([rows.text_b] if rows.text_b is not None else [])
    order = np.argsort([-len(a) for a in rows.text_a], kind="stable")  # less padding
    out = np.zeros((len(rows), model.config.num_labels))
    size = spec.train.eval_batch_size
    with torch.inference_mode():
        for start in range(0, len(order), size):
            idx = order[start:start + size].tolist()
            enc = tokenizer(*[[col[i] for i in idx] for col in texts], truncation=True,
                            max_length=max_len, padding=True, return_tensors="pt")
            out[idx] = model(**enc).logits.float().numpy()
    if task.type == "classification":  # the export's label order -> the task's
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        out = out[:, [names.index(label) for label in task.labels]]
    return out


def attach_targets(spec: Spec, data: dict[str, Any]) -> dict[str, list[str]]:
    """Adds the teachers' averaged targets to the training features of every distilled task
    (`soft_labels`); returns {task: the teachers' paths}. Does nothing without a distill
    section."""
    covered = coverage(spec)[0]
    from mtdnn.tasks import task_type

    for name, teachers in covered.items():
        d = data[name]
        if d.train is None:
            continue
        outputs = [teacher_outputs(t, spec, d.spec, d.train_rows) for t in teachers]
        temperature = settings(spec)[name][1]
        targets = task_type(d.spec.type).teacher_targets(outputs, d.train, temperature)
        d.train = d.train.add_column("soft_labels", targets)
    return {name: [t.path for t in ts] for name, ts in covered.items()}
