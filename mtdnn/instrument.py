"""A public hook to observe a training run from outside: benchmarks and tests measure `train()`
through it instead of rebinding the package's private names.

Pass an `Instrument` subclass to `train(spec, instrument=...)`; every method is a no-op here and
is called on every process. Times are `time.perf_counter()` seconds.

Example:
    >>> class Count(Instrument):
    ...     def __init__(self):
    ...         self.rows = 0
    ...     def on_train_batch(self, task, batch, started):
    ...         self.rows += len(batch["input_ids"])
    >>> count = Count()
    >>> train(spec, instrument=count)
"""

from __future__ import annotations

from typing import Any


class Instrument:
    def on_train_batch(self, task: str, batch: dict[str, Any], started: float) -> None:
        """A training micro-batch is ready on the device (before its forward pass). `started`: when
        fetching it began (sampler, Arrow read, collation and the copy to the device come after)."""

    def on_collate(self, seconds: float) -> None:
        """A batch (training or evaluation) was collated in `seconds`."""

    def on_step_end(self, step: int) -> None:
        """Optimizer step `step` is done (update, scheduler, zeroed gradients)."""

    def on_evaluation(self, step: int, started: float, ended: float) -> None:
        """The dev evaluation after step `step` ran from `started` to `ended`."""

    def on_log(self, record: dict[str, Any]) -> None:
        """A record was written to train_log.jsonl (main process only)."""
