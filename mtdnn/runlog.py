"""A run's log: `train_log.jsonl` (one JSON record per log step and per evaluation) and the
Accelerate trackers (TensorBoard, ...), written by the main process.

A resumed run first drops the records of the steps it will run again, so the log of a resumed run
equals that of an uninterrupted one.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtdnn.errors import SpecError

if TYPE_CHECKING:
    from mtdnn.instrument import Instrument
    from mtdnn.spec import Spec

LOG_FILE = "train_log.jsonl"
# tracker -> the module it needs (Accelerate's own check names the same packages)
_TRACKER_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",),
                    "comet_ml": ("comet_ml",), "mlflow": ("mlflow",), "aim": ("aim",),
                    "clearml": ("clearml",), "dvclive": ("dvclive",), "swanlab": ("swanlab",),
                    "trackio": ("trackio",)}


def _installed(tracker: str) -> bool:
    return any(importlib.util.find_spec(m) for m in _TRACKER_MODULES.get(tracker, (tracker,)))


def trackers(spec: Spec) -> list[str]:
    """The Accelerate trackers of `train.report_to`: auto is TensorBoard when it is installed.

    Raises:
        SpecError: a tracker named explicitly is not installed.
    """
    wanted = list(spec.train.report_to)
    if wanted == ["auto"]:
        return ["tensorboard"] if _installed("tensorboard") else []
    chosen = [w for w in wanted if w != "none"]
    missing = [w for w in chosen if not _installed(w)]
    if missing:
        raise SpecError(spec.source, [f"train.report_to: {w!r} is not installed (pip install "
                                      f"{_TRACKER_MODULES.get(w, (w,))[0]}), or remove it"
                                      for w in missing])
    return chosen


class RunLog:
    """Writes log records to train_log.jsonl and the trackers.

    Args:
        out: the run's output directory (created by the caller).
        accelerator: the run's Accelerator (its trackers are initialised by the caller).
        resumed_at: the step a resumed run continues after (its later records are dropped);
            None for a fresh run (an old log is replaced).
        instrument: sees every record.
    """

    def __init__(self, out: Path, accelerator: Any, resumed_at: int | None,
                 instrument: Instrument):
        self.accelerator, self.instrument = accelerator, instrument
        self.file = None
        if accelerator.is_main_process:
            path = out / LOG_FILE
            if resumed_at is not None:
                _truncate(path, resumed_at)
            elif path.exists():
                path.unlink()
            self.file = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
            self.instrument.on_log(record)
        self.accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))},
                             step=record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _truncate(path: Path, last_step: int) -> None:
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
