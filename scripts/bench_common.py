"""Shared pieces of the benchmark scripts: this checkout's package on sys.path, the options they
all share, the GLUE spec, the machine they run on, per-method child processes, and Markdown/JSON
output.

Its siblings hold the rest: bench_meter.py the instruments every method is measured with (the
clock, the batch meter, the FLOP formula, the matmul peak, the training counter),
bench_results.py the result store and the aggregation over seeds, bench_quality_setup.py what
the quality benchmarks' runs share (presets, spec overrides, split sizes, duration rates).

Not a module of the package: imported by the scripts beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The scripts measure this checkout's package, whether it is installed or not (or elsewhere).
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


# ---------------------------------------------------------------------------------------------
# Command line and data: the options every script has, those the speed scripts (throughput,
# overhead) share (the quality scripts': bench_quality_setup.add_quality_args), the GLUE spec


def default_glue_dir() -> str:
    return os.environ.get("MTDNN_GLUE_DIR") or str(REPO.parent / "shared" / "data" / "glue")


def common_parser(description: str, *, lr: float, out: str, out_help: str,
                  lr_help: str | None = None) -> argparse.ArgumentParser:
    """A parser holding the options of every benchmark script: the data, the encoder, the
    optimizer settings they all set, where the output goes, and the hidden `--child CONFIG
    RESULT` of a child process. Each script adds its own options (`add_mix_args`,
    bench_quality_setup.add_quality_args, then the rest)."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--glue-dir", default=default_glue_dir(),
                   help="GLUE files in their original layout ($MTDNN_GLUE_DIR if set)")
    p.add_argument("--encoder", default=MINILM, help="Hub model id or local directory")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=lr, help=lr_help)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--out", default=out, help=out_help)
    p.add_argument("--child", nargs=2, metavar=("CONFIG", "RESULT"), help=argparse.SUPPRESS)
    return p


def add_mix_args(p: argparse.ArgumentParser, *, tasks: str, tasks_help: str,
                 rows_help: str) -> None:
    """The speed scripts' options: one spec of several GLUE tasks (comma-separated), capped
    rows, one seed, a JSON file of the raw numbers."""
    p.add_argument("--tasks", default=tasks, help=tasks_help)
    p.add_argument("--max-rows-per-task", type=int, default=4000, help=rows_help)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", default=None, help="raw numbers (default: --out with .json)")


def check_glue_dir(glue_dir: str) -> None:
    if not (Path(glue_dir) / "RTE" / "train.tsv").is_file():
        sys.exit(f"no GLUE data in {glue_dir} (give --glue-dir or set MTDNN_GLUE_DIR)")


def glue_spec(tasks: list[str], overrides: list[str]) -> Any:
    """task_specs/glue.yaml with `overrides`, restricted to `tasks` (raises SpecError)."""
    from mtdnn.spec import load_spec

    return load_spec(REPO / "task_specs" / "glue.yaml", overrides, tasks=tasks)


# ---------------------------------------------------------------------------------------------
# The machine


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "usable_cores": usable,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def peak_rss_mb() -> float:
    """This process's high-water resident set (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------
# Child processes: one per measurement, so that peak RSS belongs to one method and no method
# inherits another's warm caches or allocator state.


def hf_predict_in_order(trainer: Any, dataset: Any) -> Any:
    """`trainer.predict(dataset)` with the predictions in the dataset's order.

    With `train_sampling_strategy="group_by_length"` the Trainer also groups the *evaluation* set
    by length (transformers PR #33514, in 5.x), and `predict()` returns the rows in that grouped
    order with nothing that maps them back: scored against the labels in file order, they
    compare unrelated rows (STS-B Pearson ~0). Evaluation here runs in the dataset's order,
    whatever the training sampler was."""
    strategy = trainer.args.train_sampling_strategy
    trainer.args.train_sampling_strategy = "random"  # _get_eval_sampler: sequential
    try:
        return trainer.predict(dataset)
    finally:
        trainer.args.train_sampling_strategy = strategy


def run_child(script: Path, config: dict[str, Any], workdir: Path, tag: str) -> dict[str, Any]:
    config_path, result_path = workdir / f"{tag}.config.json", workdir / f"{tag}.result.json"
    log_path = workdir / f"{tag}.log"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run([sys.executable, str(script), "--child", str(config_path),
                               str(result_path)], stdout=log, stderr=subprocess.STDOUT,
                              cwd=REPO, check=False)
    if proc.returncode != 0 or not result_path.is_file():
        tail = "".join(log_path.read_text(encoding="utf-8").splitlines(True)[-30:])
        raise RuntimeError(f"{tag}: child exited with {proc.returncode}; end of {log_path}:"
                           f"\n{tail}")
    # Wall time of the whole child (imports, model loads, tokenization or its cache): context only.
    return {**json.loads(result_path.read_text(encoding="utf-8")),
            "child_wall_s": time.perf_counter() - start}


def child_env() -> None:
    """Settings every child starts with: offline, and no tokenizer threads competing with torch's
    (tokenization happens before the timed window anyway)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ---------------------------------------------------------------------------------------------
# Output: medians, Markdown tables, bar plots, the machine and the command line in words


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if v != v else f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def bar_plot(values: dict[str, list[float]], ylabel: str, title: str, path: str,
             colors: list[str] | None = None) -> None:
    """Bars at the median of each label's values, whiskers from min to max."""
    import matplotlib

    matplotlib.use("Agg")  # no display on benchmark machines
    import matplotlib.pyplot as plt

    labels = list(values)
    med = [median(values[k]) for k in labels]
    err = [[m - min(values[k]) for m, k in zip(med, labels, strict=True)],
           [max(values[k]) - m for m, k in zip(med, labels, strict=True)]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(labels, med, yerr=err, capsize=6, color=colors)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine_line(m: dict[str, Any]) -> str:
    return (f"{m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), "
            f"torch {m['torch']} with {m['torch_threads']} threads, transformers "
            f"{m['transformers']}, Python {m['python']}")


def command_line() -> str:
    import shlex

    return "python " + " ".join(shlex.quote(a) for a in [
        os.path.relpath(sys.argv[0], REPO) if Path(sys.argv[0]).is_absolute() else sys.argv[0],
        *sys.argv[1:]])


def fmt_duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
