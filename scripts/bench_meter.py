"""The instruments the benchmark scripts measure training with, and what their records come to:
one clock and one batch meter for every method (`Meter`, `MtdnnProbe`), a counter of what mtdnn's
loop trained (`TrainCounter`), the FLOP formula, a matmul peak, and the rates of a timed window.

Every method is measured by the same instruments, so that no method is timed by its own logging:

  * step ends: a global `torch.optim` post-step hook (fires once per optimizer step, for the HF
    Trainer's and for mtdnn's AdamW alike; Accelerate's wrapper does not fire it a second time);
  * batches: (rows, padded length, real tokens, sum of squared real lengths) of every training
    batch and the time the first batch of a training run starts. mtdnn's loop is observed through
    its public hook, `mtdnn.instrument.Instrument` (`MtdnnProbe`): the package's private names are
    never rebound. The HF Trainer's collator is wrapped (`Meter.wrap`).

The quality benchmarks count what mtdnn's loop trained and how long it took with `TrainCounter`,
an Instrument too.

Not a module of the package: imported by the scripts beside it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402  (puts this checkout's package on sys.path)

from mtdnn.instrument import Instrument  # noqa: E402  (torch-free: the parents import it too)

# ---------------------------------------------------------------------------------------------
# The clock and the batch meter of the speed scripts


def _rss_high_water_mb(reset: bool = False) -> float | None:
    """VmHWM, the high-water RSS, from /proc (Linux); reset=True then restarts it from the
    current RSS (`clear_refs` 5, Linux >= 4.0), so that a later read gives the peak of a
    window. None where /proc does not allow it."""
    try:
        status = Path("/proc/self/status").read_text()
        hwm = int(next(line for line in status.splitlines() if line.startswith("VmHWM:"))
                  .split()[1]) / 1024
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
        return hwm
    except (OSError, StopIteration, ValueError):
        return None


class Meter:
    """Step-end times and per-batch token counts, grouped into training runs (a method that trains
    several tasks one after another has one run per task).

    A context manager: inside `with Meter() as meter:` a global torch.optim post-step hook
    records the step ends (removed on exit, so that a test can run a child in-process).
    Token counts of a batch on an accelerator stay there until `end_run` (no host sync per
    step inside the timed window)."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.optimizer: str | None = None  # which AdamW implementation ran (they differ in speed)
        self._hooks: list[Any] = []

    def __enter__(self) -> Meter:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._hooks.append(register_optimizer_step_post_hook(self._on_step))
        return self

    def __exit__(self, *_: Any) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    def add_hook(self, handle: Any) -> None:
        """A hook handle of the caller's, removed with the meter's own on exit."""
        self._hooks.append(handle)

    def start_run(self, name: str) -> None:
        self.runs.append({"name": name, "first_batch_t": None, "step_t": [], "batches": []})

    def _on_step(self, optimizer: Any, *_: Any) -> None:
        if self.runs:
            self.runs[-1]["step_t"].append(time.perf_counter())
        if self.optimizer is None:
            self.optimizer = optimizer_text(optimizer)

    def end_run(self) -> None:
        """Call when a training run returns: the batches' counts as numbers, and the peak RSS
        since its first batch."""
        run = self.runs[-1]
        run["batches"] = [[int(v) for v in b] for b in run["batches"]]
        run["rss_train_peak_mb"] = _rss_high_water_mb() if run.get("rss_setup_peak_mb") else None

    def peak_rss(self) -> dict[str, float | None]:
        """{"train": peak RSS from a run's first batch to its end (the highest over runs),
        "process": the peak of the whole process, setup (model load, tokenization) included}."""
        train = [r["rss_train_peak_mb"] for r in self.runs if r.get("rss_train_peak_mb")]
        setup = [r["rss_setup_peak_mb"] for r in self.runs if r.get("rss_setup_peak_mb")]
        return {"train": max(train, default=None),
                "process": max([bc.peak_rss_mb(), *train, *setup])}

    def record(self, batch: dict[str, Any], started: float) -> None:
        """One training batch: [rows, padded length, real tokens, sum of squared real lengths]
        (the last two as tensors until `end_run`); `started`: when making it began."""
        run = self.runs[-1]
        if run["first_batch_t"] is None:
            run["first_batch_t"] = started
            # Peak so far (setup), then restart the high-water mark for the training window.
            run["rss_setup_peak_mb"] = _rss_high_water_mb(reset=True)
        mask = batch["attention_mask"]
        lengths = mask.sum(1)
        b, t = mask.shape
        run["batches"].append([b, t, lengths.sum(), (lengths * lengths).sum()])

    def wrap(self, collate: Any) -> Any:
        """A collator that records what `collate` returns (the HF Trainer's)."""
        def counting(features: list[dict[str, Any]]) -> dict[str, Any]:
            started = time.perf_counter()
            batch = collate(features)
            self.record(batch, started)
            return batch
        return counting


def optimizer_text(optimizer: Any) -> str:
    """'AdamW(fused=True, foreach=None)': the class and the implementation it was built for
    (None: torch picks at step time: foreach on CUDA, the per-tensor loop on CPU)."""
    d = optimizer.defaults
    return f"{type(optimizer).__name__}(fused={d.get('fused')}, foreach={d.get('foreach')})"


class MtdnnProbe(Instrument):
    """What the speed scripts observe of `mtdnn.trainer.train`, through its public hook
    (`train(spec, instrument=MtdnnProbe(meter))`):

      fetch      (started, ready) of each training batch: from the start of its fetch (sampler,
                 Arrow read, collation, copy to the device) to the batch ready on the device
      collate_s  the collation time of each training batch (evaluation batches left out)
      tasks      the task of each training batch
      evaluations  (step, started, ended) of each dev evaluation

    and the meter, if given, records every training batch (`Meter.record`)."""

    def __init__(self, meter: Meter | None = None):
        self.meter = meter
        self.fetch: list[tuple[float, float]] = []
        self.collate_s: list[float] = []
        self.tasks: list[str] = []
        self.evaluations: list[tuple[int, float, float]] = []
        self._collated = float("nan")

    def on_collate(self, seconds: float) -> None:
        # A training batch is collated inside its fetch, right before on_train_batch: the last
        # collation seen then is the batch's own.
        self._collated = seconds

    def on_train_batch(self, task: str, batch: dict[str, Any], started: float) -> None:
        ready = time.perf_counter()
        self.fetch.append((started, ready))
        self.collate_s.append(self._collated)
        self._collated = float("nan")
        self.tasks.append(task)
        if self.meter is not None:
            self.meter.record(batch, started)

    def on_evaluation(self, step: int, started: float, ended: float) -> None:
        self.evaluations.append((step, started, ended))


# ---------------------------------------------------------------------------------------------
# FLOPs. Forward matmul FLOPs of a BERT encoder, per sequence of length T:
#   2 * L * (4 H^2 + 2 H I) * T      projections Q, K, V, O and the two FFN matrices
#   + 4 * L * H * T^2                attention scores QK^T and the weighted sum with V
#   + 2 * H^2                        the head's dense layer on the first token (the C outputs of
#                                    the last layer, C <= 3, are left out)
# Training = 3 x forward (the backward pass costs two forwards). The embedding lookup, softmax,
# LayerNorm, GELU and the optimizer are not matmuls and are not counted. "computed" counts every
# position the model was given (pads included: they are computed); "useful" counts the real tokens
# only, so useful <= computed, and their ratio is the cost of padding.


def model_dims(config: Any) -> dict[str, int]:
    return {"layers": config.num_hidden_layers, "hidden": config.hidden_size,
            "intermediate": config.intermediate_size}


def batch_flops(batch: list[int], dims: dict[str, int]) -> tuple[float, float]:
    """(computed, useful) training FLOPs of one batch record [rows, padded T, real, sum real^2]."""
    rows, t, real, sumsq = batch
    L, H, inter = dims["layers"], dims["hidden"], dims["intermediate"]
    per_token, attn, head = 2 * L * (4 * H * H + 2 * H * inter), 4 * L * H, 2 * H * H
    computed = per_token * rows * t + attn * rows * t * t + head * rows
    useful = per_token * real + attn * sumsq + head * rows
    return 3.0 * computed, 3.0 * useful


def matmul_peak(dims: dict[str, int], rows: tuple[int, ...], seconds: float = 0.3
                ) -> dict[str, Any]:
    """Best fp32 `torch.mm` FLOP/s at the encoder's shapes: (rows, H) x (H, I), (rows, I) x (I, H),
    (rows, H) x (H, H), rows = batch size x a typical padded length. This is the peak the model's
    own matmuls could reach on this machine now, with torch's default threads; MFU is relative
    to it (a spec-sheet peak would need the CPU's AVX width and clock under load)."""
    import torch

    H, inter = dims["hidden"], dims["intermediate"]
    shapes, best = {}, 0.0
    with torch.no_grad():
        for m in rows:
            for k, n in ((H, inter), (inter, H), (H, H)):
                a, b = torch.randn(m, k), torch.randn(k, n)
                torch.mm(a, b)  # first call: thread pool and kernel selection
                count, start = 0, time.perf_counter()
                while (elapsed := time.perf_counter() - start) < seconds:
                    torch.mm(a, b)
                    count += 1
                rate = 2.0 * m * k * n * count / elapsed
                shapes[f"({m},{k})x({k},{n})"] = rate
                best = max(best, rate)
    return {"flops_per_s": best, "shapes": shapes}


# ---------------------------------------------------------------------------------------------
# From raw runs to rates


def window_totals(runs: list[dict[str, Any]], dims: dict[str, int], steady: bool
                  ) -> dict[str, float]:
    """Sums over the timed window of every run.

    steady=True: from the end of each run's first optimizer step to the end of its last one, so
    the window holds steps 2..n (the first step, with one-off costs, is left out of time AND
    counts). steady=False: from the start of the first batch's collation to the end of the last
    step (steps 1..n). Batches collated ahead of their step (a DataLoader's look-ahead) are matched
    to steps by order: batch i belongs to step i.
    """
    tot = dict.fromkeys(("seconds", "steps", "samples", "real_tokens", "padded_tokens",
                         "flops_computed", "flops_useful"), 0.0)
    for run in runs:
        n = len(run["step_t"])
        if n == 0 or (steady and n < 2):
            continue
        first = 1 if steady else 0
        start = run["step_t"][0] if steady else run["first_batch_t"]
        tot["seconds"] += run["step_t"][n - 1] - start
        for batch in run["batches"][first:n]:
            computed, useful = batch_flops(batch, dims)
            tot["steps"] += 1
            tot["samples"] += batch[0]
            tot["padded_tokens"] += batch[0] * batch[1]
            tot["real_tokens"] += batch[2]
            tot["flops_computed"] += computed
            tot["flops_useful"] += useful
    return tot


def rates(tot: dict[str, float], peak: float) -> dict[str, float]:
    s = tot["seconds"] or float("nan")
    return {"seconds": tot["seconds"], "steps": tot["steps"],
            "samples_per_s": tot["samples"] / s, "real_tokens_per_s": tot["real_tokens"] / s,
            "padded_tokens_per_s": tot["padded_tokens"] / s,
            "pad_fraction": 1 - tot["real_tokens"] / tot["padded_tokens"]
            if tot["padded_tokens"] else float("nan"),
            "s_per_step": s / tot["steps"] if tot["steps"] else float("nan"),
            "mfu_computed": tot["flops_computed"] / s / peak,
            "mfu_useful": tot["flops_useful"] / s / peak}


# ---------------------------------------------------------------------------------------------
# What mtdnn's loop trained, for the quality benchmarks


class TrainCounter(Instrument):
    """What mtdnn's loop trained, observed through its public hook (`train(spec,
    instrument=counter)`): training rows, tokens and batches, optimizer steps, and the training
    time (from the first training batch's fetch to the last optimizer step's end, in segments
    that an evaluation closes, so evaluations and what runs between stages are not counted)."""

    def __init__(self) -> None:
        self.rows = self.batches = self.steps = 0
        self.tokens: Any = 0  # a tensor on the run's device until `totals` (no sync per batch)
        self.seconds = 0.0
        self._start: float | None = None
        self._last_step: float | None = None

    def on_train_batch(self, task: str, batch: dict[str, Any], started: float) -> None:
        if self._start is None:
            self._start, self._last_step = started, None
        self.batches += 1
        self.rows += int(batch["attention_mask"].shape[0])
        self.tokens = self.tokens + batch["attention_mask"].sum()

    def on_step_end(self, step: int) -> None:
        self.steps += 1
        self._last_step = time.perf_counter()

    def on_evaluation(self, step: int, started: float, ended: float) -> None:
        self._close()  # the segment ended at the last step, before the evaluation started

    def _close(self) -> None:
        if self._start is not None and self._last_step is not None:
            self.seconds += self._last_step - self._start
        self._start = self._last_step = None

    def totals(self) -> dict[str, float]:
        self._close()
        return {"train_rows": self.rows, "train_tokens": int(self.tokens),
                "train_batches": self.batches, "steps": self.steps, "train_s": self.seconds}
