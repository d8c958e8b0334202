"""Why is single-task mtdnn ahead of the HF Trainer at short budgets? (issue: "find the cause")

    MTDNN_GLUE_DIR=../shared/data/glue HF_HUB_OFFLINE=1 python scripts/probe_hf_gap.py

bench_quality.py's quick preset (the first 600 training rows per task, 2 epochs = 38 optimizer
steps, learning rate 1e-4, batch 32, warmup 10%, weight decay 0.01, max_seq_length 128, MiniLM)
showed mtdnn single-task 10.7 points ahead of the Trainer on the mean, STS-B +32.9. The Trainer
and mtdnn share the encoder, optimizer settings, schedule and metric code; they differ in:

  order  the Trainer's `group_by_length` sorts each window of 50 batches longest-first and keeps
         that order; 600 rows fit in one window, so every epoch runs the same batches from the
         longest to the shortest. mtdnn groups by length too, then shuffles the batch order.
  head   the Trainer starts from the checkpoint's pretrained pooler; mtdnn's head dense layer is
         new (normal, std 0.02).
  eval   found on 2026-12-02: with group_by_length the Trainer also groups the dev set by length,
         and `predict()` returned the rows in that order, which bench_quality scored against
         the labels in file order (unrelated rows: STS-B Pearson ~0). Every arm now predicts in
         the dev set's order (bench_common.hf_predict_in_order); hf-grouped was rerun with it.

Arms, one change at a time, each on the same rows, seeds 1-3:
  hf-grouped          the Trainer as bench_quality runs it (run_glue's group_by_length)
  hf-random           the Trainer with train_sampling_strategy="random" (shuffled rows)
  hf-random-reinit    hf-random with the pooler re-initialised like mtdnn's head
  mtdnn-single        mtdnn train, one task

Each finished run is stored under --out (a rerun skips it); the report is --out/report.md/.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_quality_setup as bqs  # noqa: E402
import bench_results as br  # noqa: E402
from bench_quality import hf_train_task, mtdnn_train  # noqa: E402

ARMS = {"hf-grouped": {"sampling": "group_by_length", "reinit_pooler": False},
        "hf-random": {"sampling": "random", "reinit_pooler": False},
        "hf-random-reinit": {"sampling": "random", "reinit_pooler": True},
        "mtdnn-single": None}
TASKS = ["stsb", "rte", "mrpc"]
SEEDS = [1, 2, 3]
SETUP = {"lr": 1e-4, "batch_size": 32, "max_seq_length": 128, "warmup_ratio": 0.1,
         "weight_decay": 0.01, "max_train": 600, "epochs": 2.0}


def overrides(glue_dir: str, encoder: str, task: str, seed: int) -> list[str]:
    return bqs.base_overrides(glue_dir=glue_dir, encoder=encoder, seed=seed, lr=SETUP["lr"],
                              batch_size=SETUP["batch_size"],
                              max_seq_length=SETUP["max_seq_length"],
                              warmup_ratio=SETUP["warmup_ratio"],
                              weight_decay=SETUP["weight_decay"], tasks=[task],
                              max_train=SETUP["max_train"])


def run_one(arm: str, task: str, seed: int, glue_dir: str, encoder: str, work: Path
            ) -> dict[str, Any]:
    over = overrides(glue_dir, encoder, task, seed)
    run_dir = work / f"{arm}-{task}-{seed}"
    if ARMS[arm] is None:
        spec = bc.glue_spec([task], over + [f"train.epochs={SETUP['epochs']}",
                                            f"output_dir={run_dir}"])
        run = mtdnn_train(spec, keep_checkpoint=False)
    else:
        spec = bc.glue_spec([task], over)
        run = hf_train_task(spec, spec.tasks[0], run_dir, SETUP["epochs"], **ARMS[arm])
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"arm": arm, "task": task, "seed": seed, "metrics": run["metrics"][task],
            "steps": run["steps"], "train_s": run["train_s"]}


def report(results: list[dict[str, Any]], out: Path) -> str:
    from mtdnn.metrics import DEFAULT_METRICS

    spec = bc.glue_spec(TASKS, [])
    main = {t.name: (t.metrics or DEFAULT_METRICS[t.type])[0] for t in spec.tasks}
    value = {(r["arm"], r["task"], r["seed"]): 100 * r["metrics"][main[r["task"]]]
             for r in results}
    arms = [a for a in ARMS if any(k[0] == a for k in value)]
    header = ["arm", *[f"{t} {main[t]}" for t in TASKS], "mean"]
    rows, summary = [], {}

    def cells(per_task: dict[str, list[float]], diff: bool) -> list[str]:
        out_cells = []
        for t in TASKS:
            m, s = br.mean_std(per_task[t]) if per_task[t] else (None, None)
            spread = "" if s is None else f" ± {s:.1f}"  # one seed: no spread to show
            out_cells.append("-" if m is None else f"{m:+.1f}{spread}" if diff
                             else f"{m:.1f}{spread}")
        return out_cells

    for diff in (False, True):
        for arm in arms:
            if diff and arm == "mtdnn-single":
                continue
            per_task: dict[str, list[float]] = {}
            for t in TASKS:
                seeds = [s for s in SEEDS if (arm, t, s) in value
                         and (not diff or ("mtdnn-single", t, s) in value)]
                per_task[t] = [value[arm, t, s] - (value["mtdnn-single", t, s] if diff else 0)
                               for s in seeds]
            both = [s for s in SEEDS if all((arm, t, s) in value and (
                not diff or ("mtdnn-single", t, s) in value) for t in TASKS)]
            means = [sum(value[arm, t, s] - (value["mtdnn-single", t, s] if diff else 0)
                         for t in TASKS) / len(TASKS) for s in both]
            m, sd = br.mean_std(means) if means else (None, None)
            spread = "" if sd is None else f" ± {sd:.1f}"
            mean_cell = "-" if m is None else (f"{m:+.1f}{spread}" if diff else f"{m:.1f}{spread}")
            name = f"Δ {arm} − mtdnn-single" if diff else arm
            rows.append([name, *cells(per_task, diff), mean_cell])
            summary[name] = {"per_task": per_task, "mean": means}
    table = bc.markdown_table(header, rows)
    text = (f"Quick preset: first {SETUP['max_train']} training rows per task, "
            f"{SETUP['epochs']:g} epochs, learning rate {SETUP['lr']:g}, batch "
            f"{SETUP['batch_size']}, warmup {SETUP['warmup_ratio']:g}, weight decay "
            f"{SETUP['weight_decay']:g}; seeds {', '.join(map(str, SEEDS))}. Dev main metric x100, "
            f"mean ± sample std over seeds; Δ rows are per-seed paired differences.\n\n{table}\n")
    (out / "report.md").write_text(text, encoding="utf-8")
    (out / "report.json").write_text(json.dumps({"setup": SETUP, "rows": summary}, indent=1),
                                     encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--glue-dir", default=os.environ.get("MTDNN_GLUE_DIR") or bc.default_glue_dir())
    p.add_argument("--out", default="runs/probe_hf_gap")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--report", action="store_true", help="only rebuild the report")
    # for a smoke test on a tiny model; the probe is the defaults
    p.add_argument("--encoder", default=bc.MINILM, help=argparse.SUPPRESS)
    p.add_argument("--max-train", type=int, default=SETUP["max_train"], help=argparse.SUPPRESS)
    p.add_argument("--seeds", type=int, nargs="+", default=SEEDS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    SETUP["max_train"] = args.max_train
    SEEDS[:] = args.seeds
    bc.child_env()
    bc.check_glue_dir(args.glue_dir)
    out = Path(args.out)
    store = br.ResultStore(out / "runs")
    results = []
    for task in TASKS:  # STS-B first: the largest gap (+32.9 points) answers soonest
        for seed in SEEDS:
            for arm in args.arms:
                key = f"{arm}/{task}-seed{seed}"
                done = store.get(key)
                if done is None and not args.report:
                    print(f"probe: {arm} {task} seed {seed}", flush=True)
                    done = run_one(arm, task, seed, args.glue_dir, args.encoder, out / "work")
                    store.put(key, done)
                if done is not None:
                    results.append(done)
    print(report(results, out))


if __name__ == "__main__":
    main()
