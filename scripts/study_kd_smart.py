"""MT-DNN's two extras, measured on the quality study's runs (BENCHMARKS.md "Distillation and
SMART"): a distilled student against one multi-task model and against the ensemble it learns
from, and SMART on against off. Runs after scripts/study_quality.py's main comparison, whose
runs it reuses.

    MTDNN_GLUE_DIR=../shared/data/glue python scripts/study_kd_smart.py   # resumable, hours
    MTDNN_GLUE_DIR=../shared/data/glue python scripts/study_kd_smart.py --report

- Teachers: the study's three multi-task runs (seeds 1-3 at its learning rate; targets RTE,
  MRPC, STS-B with the MNLI helper). The ensemble: the mean of their dev
  outputs (classification: softmax probabilities; regression: scores).
- Student: the same MiniLM and multi-task run (same data, lr, 2 epochs, seeds 1-3), trained with
  `distill:` from the three teachers (alpha 0.5, T 1). Goal: close at least half of the gap
  between one multi-task model (the study's multi runs, paired by seed) and the ensemble.
- SMART: the study's single-task runs (seeds 1-3 at its learning rate) again with
  `adv_weight: 1` (one adversarial step, the paper's step size and epsilon) on every target,
  paired by seed with the runs without it; and the cost per step of each.
Every run is a `mtdnn compare` record (stored as it finishes, resumable).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import study_quality as sq  # noqa: E402

SEEDS = [1, 2, 3]


def teachers(study: Path, lr: float) -> list[Path]:
    dirs = [sq.lr_dir(study, lr) / "multi" / f"seed-{s}" / "best" for s in SEEDS]
    missing = [str(d) for d in dirs if not (d / "mtdnn.json").is_file()]
    if missing:
        raise SystemExit(f"teacher checkpoints missing: {missing}")
    return dirs


def ensemble(glue_dir: str, dirs: list[Path], lr: float) -> dict[str, dict[str, float]]:
    """Each target's dev metrics of the teachers' averaged outputs."""
    from mtdnn.checkpoint import load_model
    from mtdnn.data import read_split
    from mtdnn.evaluation import outputs_of

    spec = sq.study_spec(glue_dir, lr, sq.TARGETS, Path("unused"))
    probs: dict[str, list[np.ndarray]] = {t: [] for t in sq.TARGETS}
    for directory in dirs:
        model = load_model(directory)
        for target in sq.TARGETS:
            kind, task = model.task_types[target], spec.task(target)
            rows = read_split(spec, task, "dev")
            ds = kind.features(rows, model.tokenizer, model.max_seq_length, for_training=False,
                               task=task)
            out = np.stack(outputs_of(model, target, ds, spec.train.eval_batch_size))
            if task.type == "classification":  # average probabilities, not logits
                out = np.exp(out - out.max(-1, keepdims=True))
                out = out / out.sum(-1, keepdims=True)
            probs[target].append(out)
    result = {}
    for target in sq.TARGETS:
        task = spec.task(target)
        from mtdnn.tasks import task_type

        kind = task_type(task.type)
        rows = read_split(spec, task, "dev")
        mean = list(np.mean(probs[target], axis=0))
        result[target] = kind.score(list(task.metrics or kind.default_metrics),
                                    kind.predictions(mean, None, rows), rows)
    return result


def main_metric_mean(metrics: dict[str, dict[str, float]]) -> float:
    from mtdnn.metrics import main_metric

    return float(np.mean([m[main_metric(list(m))] for m in metrics.values()]))


def records(root: Path, route: str) -> list[dict[str, Any]]:
    return sq.records(root, route)


def per_seed_main(rows: list[dict[str, Any]]) -> dict[int, float]:
    return {s: sq.main_score(rows, s) for s in SEEDS
            if not math.isnan(sq.main_score(rows, s))}


def main(argv: list[str] | None = None) -> None:
    from mtdnn.compare import compare
    from mtdnn.compare_report import build_report, write_report
    from mtdnn.spec import spec_from_dict
    from mtdnn.stats import t_interval

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--glue-dir", default=os.environ.get("MTDNN_GLUE_DIR") or bc.default_glue_dir())
    p.add_argument("--study", default="runs/study", help="scripts/study_quality.py's --out")
    p.add_argument("--out", default="runs/kd_smart")
    p.add_argument("--report", action="store_true", help="tables from stored runs only")
    # for a smoke test of the script on a tiny model; the study is the defaults
    p.add_argument("--encoder", default=bc.MINILM, help=argparse.SUPPRESS)
    p.add_argument("--max-train", type=int, help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=float, default=sq.EPOCHS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sq.SETUP.update(encoder=args.encoder, max_train=args.max_train, epochs=args.epochs)
    bc.child_env()
    study, out = Path(args.study), Path(args.out)
    lr = {"single": sq.LR, "multi": sq.LR}  # the study runs every arm at one rate
    dirs = teachers(study, lr["multi"])
    all_tasks = [*sq.TARGETS, *sq.HELPERS]
    # ---- distillation
    student_spec = sq.study_spec(args.glue_dir, lr["multi"], all_tasks, out / "kd")
    data = student_spec.to_dict()
    data["distill"] = {"teachers": [str(d) for d in dirs], "alpha": 0.5, "temperature": 1.0}
    student_spec = spec_from_dict(data, source="study_kd_smart (student)")
    # ---- SMART on the single-task runs
    smart_spec = sq.study_spec(args.glue_dir, lr["single"], all_tasks, out / "smart")
    data = smart_spec.to_dict()
    for t in sq.TARGETS:
        data["tasks"][t]["adv_weight"] = 1.0
    smart_spec = spec_from_dict(data, source="study_kd_smart (smart)")
    if not args.report:
        compare(student_spec, sq.TARGETS, helpers=sq.HELPERS, seeds=SEEDS, routes=["multi"],
                output_dir=out / "kd", resamples=1000)
        compare(smart_spec, sq.TARGETS, helpers=sq.HELPERS, seeds=SEEDS, routes=["single"],
                output_dir=out / "smart", resamples=1000)
    ens = ensemble(args.glue_dir, dirs, lr["multi"])
    multi = records(sq.lr_dir(study, lr["multi"]), "multi")
    student = records(out / "kd", "multi")
    m, s = per_seed_main(multi), per_seed_main(student)
    seeds = sorted(set(m) & set(s))
    e = main_metric_mean(ens)
    gap = [e - m[k] for k in seeds]
    closed = [(s[k] - m[k]) / (e - m[k]) if e != m[k] else math.nan for k in seeds]
    gain = [100 * v for v in t_interval([s[k] - m[k] for k in seeds])]
    lines = ["# Distillation and SMART", "",
             "## Distillation: one student from the ensemble of three multi-task models", "",
             "| model | mean of the targets' main dev metric (x100) |", "|---|---:|",
             f"| one multi-task model (mean over seeds) | {100 * np.mean(list(m.values())):.1f} |",
             f"| the ensemble of the three | {100 * e:.1f} |",
             f"| the distilled student (mean over seeds) | {100 * np.mean(list(s.values())):.1f} |",
             "", f"Per seed, student - its multi-task counterpart: "
             f"{', '.join(f'{100 * (s[k] - m[k]):+.1f}' for k in seeds)}; gap closed "
             f"(student - multi) / (ensemble - multi): "
             f"{', '.join(f'{100 * c:.0f}%' for c in closed)} "
             f"(mean {100 * np.nanmean(closed):.0f}%; goal: >= 50%); the student's gain, mean "
             f"and 95% t-interval over seeds: {gain[0]:+.1f} [{gain[1]:+.1f}, {gain[2]:+.1f}]",
             "", "Ensemble per target: " + ", ".join(f"{t} {100 * v[next(iter(v))]:.1f}"
                                                      for t, v in ens.items()), ""]
    # SMART: paired with the study's single runs, through compare's report
    single = records(sq.lr_dir(study, lr["single"]), "single")
    smart = [dict(r, route="single+smart") for r in records(out / "smart", "single")]
    settings = {"targets": sq.TARGETS, "helpers": [], "seeds": SEEDS,
                "routes": ["single", "single+smart"], "ft_epochs": 1.0,
                "ft_learning_rate": lr["single"] / 2, "spec": "scripts/study_kd_smart.py",
                "epochs": sq.EPOCHS, "max_steps": None, "learning_rate": lr["single"],
                "sampler": "proportional",
                "caveat": "What this cannot show: every run is scored on its final model; the "
                          "learning rate was picked on the same dev sets by the quality study; "
                          "three seeds bound the spread only roughly; SMART's settings (weight 1, "
                          "one step) were not tuned.",
                "route_text": {
                    "single": "each target alone (the quality study's runs)",
                    "single+smart": "the same with SMART (adv_weight 1, one adversarial step)"}}
    spec = sq.study_spec(args.glue_dir, lr["single"], sq.TARGETS, out / "unused")
    report = build_report(spec, settings, [*single, *smart], resamples=1000)
    report["distillation"] = {"ensemble": ens, "multi": m, "student": s, "gap_closed": closed,
                              "gap": gap}
    text = write_report(out / "final", report)
    (out / "final" / "distillation.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(text)


if __name__ == "__main__":
    main()
