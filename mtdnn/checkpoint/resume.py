"""Resumable checkpoints: the loop's progress (`TrainerState`) next to Accelerate's state."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtdnn.checkpoint.layout import (
    CHECKPOINTS_DIR,
    DAMAGED_STATE,
    STATE_FILE,
)
from mtdnn.checkpoint.models import replace_dir
from mtdnn.errors import CheckpointError


@dataclass
class TrainerState:
    """The loop's progress, written as trainer_state.json with every resumable checkpoint."""

    step: int  # the last optimizer step done
    step_mode: str  # train.step_mode of the run: a state resumes only with the same one
    step_state: dict[str, Any]  # the step mode's own state (its samplers' positions)
    best_score: float | None = None  # the best selection score so far (None: no evaluation yet)
    best_step: int | None = None
    best_results: dict[str, dict[str, float]] = field(default_factory=dict)
    # the per-task losses of the steps since the last log record (means over processes)
    running: dict[str, list[float]] = field(default_factory=dict)
    # training rows (ranking: groups) run per task so far, all processes together
    examples: dict[str, int] = field(default_factory=dict)
    format_version: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def read(cls, path: Path) -> TrainerState:
        """Raises CheckpointError naming the file when it is not a state this version wrote."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(path, f"cannot be read ({e}): resume from another checkpoint "
                                        "(--resume PATH) or start afresh") from None
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or not {"step", "step_mode", "step_state"} <= set(data) \
                or set(data) - names:
            raise CheckpointError(path, "not a trainer state of this mtdnn version (keys "
                                        f"{sorted(data) if isinstance(data, dict) else data!r}): "
                                        "resume it with the version that wrote it, or start "
                                        "afresh")
        types = {"step": int, "step_mode": str, "step_state": dict, "best_results": dict,
                 "running": dict, "examples": dict}
        wrong = [f"{k}: {data[k]!r}" for k, t in types.items() if k in data and
                 (not isinstance(data[k], t) or isinstance(data[k], bool))]
        if not wrong and data["step"] < 0:
            wrong = [f"step: {data['step']}"]
        if wrong:
            raise CheckpointError(path, f"damaged trainer state ({', '.join(wrong)}): resume "
                                        "from another checkpoint (--resume PATH) or start afresh")
        return cls(**data)

    def selection(self) -> float:
        return -math.inf if self.best_score is None else self.best_score


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete resumable checkpoint under output_dir/checkpoints, or None."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    done = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file()] if root.is_dir() else []
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def resume_point(output_dir: Path, resume: bool | str | Path) -> Path | None:
    """Where `train(resume=...)` continues from: None (a fresh run), the newest checkpoint
    (resume=True; None when there is none), or a given path.

    Raises:
        CheckpointError: the given path is not a resumable checkpoint.
    """
    if resume is True:
        path = latest_checkpoint(output_dir)
    elif not resume:
        return None
    else:
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise CheckpointError(path, f"not a resumable checkpoint (no {STATE_FILE}); give a "
                                        f"directory under {output_dir / CHECKPOINTS_DIR}")
    if path is not None:  # read now: a damaged checkpoint is refused before any work is done
        TrainerState.read(path / STATE_FILE)
        if not (path / "accelerate").is_dir():
            raise CheckpointError(path, "incomplete resumable checkpoint: accelerate/ (weights, "
                                        "optimizer) is missing; resume from another checkpoint "
                                        "(--resume PATH) or start afresh")
    return path


def save_training_state(accelerator: Any, out: Path, state: TrainerState, keep: int) -> None:
    """A resumable checkpoint: Accelerate's state plus ours, renamed into place; keeps the `keep`
    newest."""
    root = out / CHECKPOINTS_DIR
    target = root / f"step-{state.step:07d}"
    tmp = root / f".tmp-step-{state.step:07d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "accelerate"), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(state.to_json(), encoding="utf-8")
        replace_dir(tmp, target)
        kept = sorted(p for p in root.glob("step-*") if p.is_dir())
        for stale in kept[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_training_state(accelerator: Any, path: Path, step_mode: str) -> TrainerState:
    """Restores Accelerate's state from a resumable checkpoint and returns the loop's.

    Raises:
        CheckpointError: unreadable, or saved with another step mode.
    """
    state = TrainerState.read(path / STATE_FILE)
    if state.step_mode != step_mode:
        raise CheckpointError(path, f"saved with train.step_mode={state.step_mode}: resume it "
                                    "with that step mode")
    from safetensors import SafetensorError

    try:
        accelerator.load_state(str(path / "accelerate"))  # weights, optimizer, scheduler, RNGs
    except (OSError, SafetensorError, EOFError, pickle.UnpicklingError, RuntimeError) as e:
        # torch reports a truncated file, and a state of another model, as RuntimeError: only
        # those are the user's; any other RuntimeError is a bug and keeps its traceback.
        if isinstance(e, RuntimeError) and not any(m in str(e) for m in DAMAGED_STATE):
            raise
        detail = " ".join(str(e).split())[:200]
        raise CheckpointError(path / "accelerate", f"cannot be restored ({detail}): the "
                                                   "checkpoint is damaged, or was saved by a run "
                                                   "of another model; resume from another "
                                                   "checkpoint (--resume PATH) or start "
                                                   "afresh") from None
    return state
