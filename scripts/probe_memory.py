"""Where does mtdnn's peak RSS come from, against the Trainer's? (issue: "memory at the Trainer's
level")

    MTDNN_GLUE_DIR=../shared/data/glue HF_HUB_OFFLINE=1 python scripts/probe_memory.py

bench_throughput.py reported mtdnn's peak RSS 6% above the Trainer's with dynamic padding (2,430
vs 2,298 MiB) without saying where. This probe runs bench_throughput's own children (same spec,
rows, steps and plan; `--steps`, `--tasks`, ... as there) with a thread that reads the resident
set from /proc every 10 ms, and splits each child's time line into phases by the times the
instruments already take:

  setup    process start to the first training batch (imports, model load, tokenization)
  steps    first batch to the last optimizer step
  after    the last optimizer step to the end of the child (mtdnn: its final save; the Trainer:
           its end of training)

and per phase the peak and the RSS at its end. Each method runs under allocator variants (glibc
reads these at process start, so each is a fresh child):

  default          glibc's defaults: the mmap threshold grows with the largest freed block, so
                   large tensors freed once are later served from the heap, which is not returned
  mmap-128k        MALLOC_MMAP_THRESHOLD_=131072: every block over 128 KiB is its own mapping,
                   returned to the system when freed (fixes the threshold, no growth)

The report is --out (Markdown) and --json; medians over --repeats rounds.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_throughput as bt  # noqa: E402

VARIANTS = {"default": {}, "mmap-128k": {"MALLOC_MMAP_THRESHOLD_": "131072"}}
PHASES = ("setup", "steps", "after")
DEFAULT_METHODS = "hf-dynamic,mtdnn,mtdnn-full"


class RssSampler:
    """(perf_counter time, RSS MiB) every `interval` seconds, in a daemon thread."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def rss_mb(self) -> float:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * self._page_mb

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.rss_mb()))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter(), self.rss_mb()))


def phases(samples: list[tuple[float, float]], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Peak and end RSS of each phase; the phase bounds from the meter's runs (the Trainer trains
    one run per task: its steps phase spans them all, model loads in between included)."""
    first = min(r["first_batch_t"] for r in runs if r["first_batch_t"] is not None)
    last = max(r["step_t"][-1] for r in runs if r["step_t"])
    bounds = {"setup": (float("-inf"), first), "steps": (first, last),
              "after": (last, float("inf"))}
    out: dict[str, Any] = {}
    for name, (lo, hi) in bounds.items():
        inside = [rss for t, rss in samples if lo <= t < hi]
        out[name] = {"peak": max(inside, default=float("nan")),
                     "end": inside[-1] if inside else float("nan")}
    peak_t = max(samples, key=lambda s: s[1])[0]
    out["peak_phase"] = next(n for n, (lo, hi) in bounds.items() if lo <= peak_t < hi)
    out["peak_step"] = peak_step(samples, runs)
    return out


def peak_step(samples: list[tuple[float, float]], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The optimizer step whose window (the previous step's end, or the run's first batch, to its
    own end) holds the highest RSS: its run, its index in the run (0: the run's first step, before
    the optimizer has allocated its state) and its batch's rows x padded length."""
    best: dict[str, Any] = {"rss": float("-inf")}
    for run in runs:
        starts = [run["first_batch_t"], *run["step_t"][:-1]]
        for i, (lo, hi) in enumerate(zip(starts, run["step_t"])):
            inside = [rss for t, rss in samples if lo <= t <= hi]
            if inside and max(inside) > best["rss"]:
                rows, length = run["batches"][i][:2] if i < len(run["batches"]) else (0, 0)
                best = {"rss": max(inside), "run": run["name"], "index": i, "rows": rows,
                        "length": length}
    return best


def child(config_path: str, result_path: str) -> None:
    """bench_throughput's child, with the RSS sampled and the loaded packages listed."""
    bc.child_env()
    inner = Path(result_path).with_suffix(".inner.json")
    with RssSampler() as sampler:
        bt.child(config_path, str(inner))
    result = json.loads(inner.read_text(encoding="utf-8"))
    top = sorted({name.split(".")[0] for name in list(sys.modules)})
    big = [m for m in ("evaluate", "sklearn", "scipy", "pandas", "datasets", "accelerate",
                       "safetensors", "seqeval", "tensorboard", "matplotlib") if m in top]
    steady = [r for r in result["runs"] if len(r["step_t"]) >= 2]  # steps 2..n, as bench_meter
    seconds = sum(r["step_t"][-1] - r["step_t"][0] for r in steady)
    tokens = sum(b[2] for r in steady for b in r["batches"][1:len(r["step_t"])])
    result.update(real_tokens_per_s=tokens / seconds if seconds else float("nan"))
    result.update(phases=phases(sampler.samples, result["runs"]), packages=big,
                  samples=len(sampler.samples), runs=None,
                  allocator_env={k: v for k, v in os.environ.items() if k.startswith("MALLOC_")})
    Path(result_path).write_text(json.dumps(result), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    p_args = list(sys.argv[1:] if argv is None else argv)
    if p_args[:1] == ["--child"]:
        return child(*p_args[1:3])
    import argparse

    ours = argparse.ArgumentParser(add_help=False)
    ours.add_argument("--variants", default=",".join(VARIANTS))
    ours.add_argument("--json", default=None)
    own, rest = ours.parse_known_args(p_args)
    if "--methods" not in rest:
        rest += ["--methods", DEFAULT_METHODS]
    if "--out" not in rest:
        rest += ["--out", "/tmp/probe-memory.md"]
    args = bt.parse_args(rest)
    bc.child_env()
    bc.check_glue_dir(args.glue_dir)
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="mtdnn-memory-"))
    os.environ["MTDNN_CACHE"] = str(workdir / "cache")
    spec, spec_path = bt.build_spec(args, workdir)
    _, plan = bt.task_plan(spec)
    methods, variants = args.methods.split(","), own.variants.split(",")
    results: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for variant in variants:
            for m in methods:
                saved = {k: os.environ.get(k) for k in VARIANTS[variant]}
                os.environ.update(VARIANTS[variant])
                try:
                    cfg = bt.child_config(m, spec_path, plan, workdir, args, repeat)
                    r = bc.run_child(Path(__file__), cfg, workdir, f"{m}-{variant}-{repeat}")
                finally:
                    for k, v in saved.items():
                        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
                r.update(variant=variant, repeat=repeat)
                results.append(r)
                ph = r["phases"]
                print(f"round {repeat + 1} {variant} {m}: peak {r['peak_rss_mb']:.0f} MiB in "
                      f"{ph['peak_phase']} (setup {ph['setup']['peak']:.0f}, steps "
                      f"{ph['steps']['peak']:.0f}, after {ph['after']['peak']:.0f})", flush=True)
    text = report(results, methods, variants, args)
    if own.json:
        Path(own.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)


def report(results: list[dict[str, Any]], methods: list[str], variants: list[str],
           args: Any) -> str:
    rows = []
    for variant in variants:
        for m in methods:
            rs = [r for r in results if r["method"] == m and r["variant"] == variant]
            if not rs:
                continue
            cell = [bc.median([r["phases"][ph][k] for r in rs]) for ph in PHASES
                    for k in ("peak", "end")]
            peak_phases = sorted({r["phases"]["peak_phase"] for r in rs})
            steps = sorted({f"{s['run']} #{s['index'] + 1} ({s['rows']}x{s['length']})"
                            for s in (r["phases"]["peak_step"] for r in rs)})
            rows.append([variant, m, *cell, bc.median([r["peak_rss_mb"] for r in rs]),
                         bc.median([r["real_tokens_per_s"] for r in rs]),
                         "/".join(peak_phases), "; ".join(steps), ", ".join(rs[0]["packages"])])
    header = ["allocator", "method", "setup peak", "setup end", "steps peak", "steps end",
              "after peak", "after end", "process peak (ru_maxrss)", "real tok/s (steps 2..n)",
              "peak in", "peak step: run #step (rows x length)", "packages loaded"]
    return (f"Machine: {bc.machine_line(bc.machine_info())}. bench_throughput's children: "
            f"tasks {args.tasks}, {args.steps} steps, batch {args.batch_size}; RSS in MiB "
            f"sampled every 10 ms, medians of {args.repeats} round(s).\n\n"
            + bc.markdown_table(header, rows) + "\n")


if __name__ == "__main__":
    main()
