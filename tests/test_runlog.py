"""The run's log (mtdnn/runlog.py): train_log.jsonl and the trackers, TensorBoard by default."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mtdnn.errors import SpecError
from mtdnn.runlog import trackers
from mtdnn.spec import load_spec
from mtdnn.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_default_report_to_writes_tensorboard_events_equal_to_the_log(tiny_glue_spec,
                                                                          tmp_path: Path):
    pytest.importorskip("tensorboard")  # the test extra installs it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # report_to's default is auto; tiny_glue_spec turns it off, the override puts it back.
    spec = load_spec(tiny_glue_spec(tasks="[rte, stsb]", steps=4),
                     ["train.report_to=[auto]", "train.log_every=1", "train.eval_every=4"])
    assert trackers(spec) == ["tensorboard"]
    train(spec, progress=False)
    out = tmp_path / "run"
    # Accelerate's TensorBoard tracker writes into <output_dir>/<project name> (the run's config
    # goes into a subfolder of its own).
    assert list((out / "mtdnn").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(out / "mtdnn"))
    acc.Reload()
    scalars = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    compared = 0
    for record in records:
        for key, value in record.items():
            if key.startswith(("loss/", "dev/")) or key in ("lr", "score"):
                assert scalars[key][record["step"]] == pytest.approx(value, rel=1e-6), key
                compared += 1
    assert compared >= 4 + 4 + 3  # losses and lr of 4 steps, an evaluation's score and metrics


def test_a_tracker_that_is_not_installed_is_a_spec_error(tiny_glue_spec, monkeypatch):
    spec = load_spec(tiny_glue_spec(tasks="[rte]"), ["train.report_to=[tensorboard]"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("tensorboard") else real(name, *a))
    with pytest.raises(SpecError, match=r"train.report_to: 'tensorboard' is not installed \(pip "
                                        r"install tensorboard\), or remove it"):
        trackers(spec)
    # auto quietly means "none" when TensorBoard is missing
    assert trackers(load_spec(tiny_glue_spec(tasks="[rte]"), ["train.report_to=[auto]"])) == []
    assert trackers(load_spec(tiny_glue_spec(tasks="[rte]"), ["train.report_to=[none]"])) == []
