"""The task spec: YAML in, frozen typed dataclasses out.

A spec file describes one run: the shared encoder, the training settings and the tasks. It is turned
into dataclasses once, here; nothing past this package handles untyped dicts. Every problem found
(unknown keys, wrong types, bad choices, settings that do not combine, missing files) is collected
and reported together in one `SpecError` that names the file, the key, the value and the fix.

    schema.py   the dataclasses; their field comments are the reference of the format
    convert.py  plain data -> dataclasses, collecting problems; ${VAR} expansion
    checks.py   the checks of the whole spec (CHECKS); task_checks.py: of each task (TASK_CHECKS)
    load.py     reading YAML (strict keys, include, overrides, use_tasks), load/save

Loading a spec imports neither torch nor the training code.

Example:
    >>> spec = load_spec("task_specs/demo.yaml", overrides=["train.learning_rate=3e-5"])
    >>> [t.name for t in spec.tasks]
"""

from __future__ import annotations

from mtdnn.errors import SpecError
from mtdnn.spec.checks import CHECKS
from mtdnn.spec.convert import unknown_name_message
from mtdnn.spec.load import load_spec, save_spec, set_override, spec_from_dict
from mtdnn.spec.schema import (
    SPLITS,
    STANDALONE_TRACKERS,
    TRACKERS,
    Column,
    DistillSpec,
    FileSource,
    HubSource,
    SamplerName,
    SharingName,
    Spec,
    StageSpec,
    StepMode,
    SurgeryName,
    TaskSpec,
    TaskType,
    TeacherSpec,
    Tracker,
    TrainSpec,
    WeightingName,
)
from mtdnn.spec.task_checks import TASK_CHECKS

__all__ = [
    "CHECKS", "SPLITS", "STANDALONE_TRACKERS", "TASK_CHECKS", "TRACKERS", "Column", "DistillSpec",
    "FileSource", "HubSource", "TeacherSpec", "SamplerName", "SharingName", "Spec", "SpecError",
    "StageSpec", "StepMode",
    "SurgeryName", "TaskSpec", "TaskType", "Tracker", "TrainSpec", "WeightingName", "load_spec",
    "save_spec", "set_override", "spec_from_dict", "unknown_name_message",
]
