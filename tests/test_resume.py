"""Exact resume and atomic checkpoints: a run killed with SIGKILL (even inside a save) and resumed
ends with the same weights, bit for bit, as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mtdnn.checkpoint import latest_checkpoint
from mtdnn.errors import CheckpointError
from mtdnn.spec import load_spec
from mtdnn.trainer import train

STEPS = 24
SETTINGS = [f"train.max_steps={STEPS}", f"train.eval_every={STEPS}", "train.save_every=4",
            "train.save_total_limit=2", "train.log_every=1"]


def _tensors(directory: Path) -> dict:
    return {**load_file(str(directory / "model.safetensors")),
            **load_file(str(directory / "heads.safetensors"))}


def _assert_same_run(a: Path, b: Path) -> None:
    ta, tb = _tensors(a / "best"), _tensors(b / "best")
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].equal(tb[k]), f"{k} differs"
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (a, b)]
    assert metrics[0] == metrics[1]
    log_a = [json.loads(x) for x in (a / "train_log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (b / "train_log.jsonl").read_text().splitlines()]
    strip = [{k: v for k, v in r.items() if k != "elapsed_s"} for r in log_a]
    assert strip == [{k: v for k, v in r.items() if k != "elapsed_s"} for r in log_b]


@pytest.fixture
def reference(tiny_glue_spec, tmp_path_factory) -> tuple[Path, Path]:
    spec_path = tiny_glue_spec(tasks="[rte, stsb, wikiqa]")
    out = tmp_path_factory.mktemp("uninterrupted")
    train(load_spec(spec_path, [*SETTINGS, f"output_dir={out}"]), progress=False)
    return spec_path, out


def test_stop_and_resume_in_process_is_bitwise_identical(reference, tmp_path):
    spec_path, ref = reference
    spec = load_spec(spec_path, [*SETTINGS, f"output_dir={tmp_path}"])
    train(spec, progress=False, stop_after=10)
    assert latest_checkpoint(tmp_path).name == "step-0000010"
    # save_total_limit=2: only the two newest resumable checkpoints are kept
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == \
        ["step-0000008", "step-0000010"]
    train(spec, progress=False, resume=True)
    _assert_same_run(ref, tmp_path)


_KILL_INSIDE_SAVE = """
import os, signal, sys
import accelerate
from mtdnn.cli import main
original = accelerate.Accelerator.save_state
def save_state(self, output_dir=None, **kwargs):
    result = original(self, output_dir, **kwargs)
    if "step-0000008" in str(output_dir):  # state written, trainer_state.json not yet, not renamed
        os.kill(os.getpid(), signal.SIGKILL)
    return result
accelerate.Accelerator.save_state = save_state
sys.exit(main(sys.argv[1:]))
"""


def _cli(args: list[str], script: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", script, *args] if script else \
        [sys.executable, "-m", "mtdnn.cli", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_sigkill_inside_a_save_keeps_the_previous_checkpoint_and_resumes_exactly(reference,
                                                                                 tmp_path):
    spec_path, ref = reference
    args = ["train", str(spec_path), *SETTINGS, f"output_dir={tmp_path}", "--no-progress"]
    proc = _cli(args, _KILL_INSIDE_SAVE)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    # The half-written step-8 state is never taken for a checkpoint; step 4 is whole.
    assert latest_checkpoint(tmp_path).name == "step-0000004"
    assert any(p.name.startswith(".tmp-step-0000008") for p in (tmp_path / "checkpoints").iterdir())
    proc = _cli([*args, "--resume"])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    _assert_same_run(ref, tmp_path)


def test_sigkill_at_a_random_moment_then_resume(reference, tmp_path):
    spec_path, ref = reference
    args = ["train", str(spec_path), *SETTINGS, f"output_dir={tmp_path}", "--no-progress"]
    proc = _cli(args)
    deadline = time.time() + 240
    while latest_checkpoint(tmp_path) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    proc = _cli([*args, "--resume"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "resumed from" in out
    _assert_same_run(ref, tmp_path)


def test_resume_from_a_path_that_is_not_a_checkpoint(tiny_glue_spec, tmp_path):
    spec = load_spec(tiny_glue_spec(tasks="[rte]"))
    with pytest.raises(CheckpointError, match="not a resumable checkpoint"):
        train(spec, progress=False, resume=tmp_path)


def test_resumable_checkpoints_follow_a_step_or_time_cadence_not_evaluations(tiny_glue_spec,
                                                                            tmp_path):
    """A run killed before its first evaluation (an MNLI epoch is ~12k steps) still has a
    checkpoint to resume from: saving does not wait for evaluations."""
    spec_path = tiny_glue_spec(tasks="[rte, stsb]")
    common = ["train.max_steps=6", "train.eval_every=1000", "train.save_total_limit=10"]
    by_steps = load_spec(spec_path, [*common, "train.save_every=2",
                                     f"output_dir={tmp_path / 'a'}"])
    train(by_steps, progress=False)
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == \
        ["step-0000002", "step-0000004"]  # the last step has its results instead
    log = [json.loads(x) for x in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "score" in r] == [6]  # one evaluation, at the end
    by_time = load_spec(spec_path, [*common, "train.save_every=null",
                                    "train.save_every_minutes=1e-9",
                                    f"output_dir={tmp_path / 'b'}"])
    train(by_time, progress=False)
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == \
        [f"step-000000{s}" for s in range(1, 6)]
    defaults = load_spec(spec_path).train  # the Hugging Face Trainer's 500 steps, or 10 minutes
    assert (defaults.save_every, defaults.save_every_minutes) == (500, 10.0)
