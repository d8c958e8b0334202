"""MT-DNN's two extras, measured (BENCHMARKS.md "Distillation and SMART"): a distilled student
against one multi-task model and against the ensemble it learns from, and SMART on against off.

    MTDNN_GLUE_DIR=../shared/data/glue python scripts/study_kd_smart.py   # resumable, ~2.5 h
    MTDNN_GLUE_DIR=../shared/data/glue python scripts/study_kd_smart.py --report

Sized to finish in one sitting on 2 CPU cores (the teachers' checkpoints must exist when the
students train): the quality study's targets and settings (scripts/study_quality.py: MiniLM, RTE,
MRPC and STS-B with their full training sets, batch 32, 2 epochs, learning rate 1e-4, every run
scored on its final model), trained together without the MNLI helper (the helper would double
every run's cost).
- Teachers (`teachers/`): that multi-task run, seeds 1-3. The ensemble: the mean of their dev
  outputs (classification: softmax probabilities; regression: scores).
- Students: the same run, seeds 1-3, with `distill:` from the three teachers: `kd/` MT-DNN-KD's
  setting (alpha 0.5, T 1), `kd-soft/` soft targets only at T 2. Each is paired by seed with the
  teacher of its seed (same start, same batches), so the difference is the distillation term
  alone. Goal: close at least half of the gap between one multi-task model and the ensemble.
- SMART (`smart/`): the same run, seeds 1-3, with `adv_weight: 1` (one adversarial step, the
  paper's step size and epsilon) on the two small targets, RTE and MRPC (README: SMART is for a
  small task that over-fits; on STS-B too it would cost about 40% more), paired by seed with the
  teachers.
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


SMART_TARGETS = ["rte", "mrpc"]
# the students: stage -> (alpha, T). MT-DNN-KD's (gold and soft targets weighted equally, no
# temperature), and soft targets only at T 2 (Hinton et al.'s softer targets)
STUDENTS = {"kd": (0.5, 1.0), "kd-soft": (0.0, 2.0)}


def teachers(out: Path) -> list[Path]:
    dirs = [out / "teachers" / "multi" / f"seed-{s}" / "best" for s in SEEDS]
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


def per_seed_main(rows: list[dict[str, Any]]) -> dict[int, float]:
    return {s: sq.main_score(rows, s) for s in SEEDS
            if not math.isnan(sq.main_score(rows, s))}


def main(argv: list[str] | None = None) -> None:
    from mtdnn.compare import compare
    from mtdnn.spec import spec_from_dict

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--glue-dir", default=os.environ.get("MTDNN_GLUE_DIR") or bc.default_glue_dir())
    p.add_argument("--out", default="runs/kd_smart")
    p.add_argument("--report", action="store_true", help="tables from stored runs only")
    # for a smoke test of the script on a tiny model; the study is the defaults
    p.add_argument("--encoder", default=bc.MINILM, help=argparse.SUPPRESS)
    p.add_argument("--max-train", type=int, help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=float, default=sq.EPOCHS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sq.SETUP.update(encoder=args.encoder, max_train=args.max_train, epochs=args.epochs)
    bc.child_env()
    out = Path(args.out)

    def spec_of(stage: str, change: Any = None) -> Any:
        spec = sq.study_spec(args.glue_dir, sq.LR, sq.TARGETS, out / stage)
        if change is None:
            return spec
        data = spec.to_dict()
        change(data)
        return spec_from_dict(data, source=f"study_kd_smart ({stage})")

    def distill(alpha: float, temperature: float) -> Any:
        def change(data: dict[str, Any]) -> None:
            data["distill"] = {"teachers": [str(d) for d in teachers(out)], "alpha": alpha,
                               "temperature": temperature}
        return change

    def smart(data: dict[str, Any]) -> None:
        for t in SMART_TARGETS:
            data["tasks"][t]["adv_weight"] = 1.0

    stages = [("teachers", None), *[(stage, distill(a, t)) for stage, (a, t) in STUDENTS.items()],
              ("smart", smart)]
    if not args.report:
        for stage, change in stages:
            print(f"study_kd_smart: {stage}", flush=True)
            compare(spec_of(stage, change), sq.TARGETS, helpers=[], seeds=SEEDS,
                    routes=["multi"], output_dir=out / stage, resamples=1000)
    report(args.glue_dir, out)


def report(glue_dir: str, out: Path) -> None:
    from mtdnn.compare_report import build_report, write_report
    from mtdnn.stats import t_interval

    ens = ensemble(glue_dir, teachers(out), sq.LR)
    multi = sq.records(out / "teachers", "multi")
    m, e = per_seed_main(multi), main_metric_mean(ens)
    lines = ["# Distillation and SMART", "",
             "## Distillation: one student from the ensemble of three multi-task models", "",
             "| model | mean of the targets' main dev metric (x100) |", "|---|---:|",
             f"| one multi-task model (mean over seeds) | {100 * np.mean(list(m.values())):.1f} |",
             f"| the ensemble of the three | {100 * e:.1f} |"]
    text, students = [], {}
    for stage, (alpha, temperature) in STUDENTS.items():
        s = per_seed_main(sq.records(out / stage, "multi"))
        if not s:
            continue
        seeds = sorted(set(m) & set(s))
        closed = [(s[k] - m[k]) / (e - m[k]) if e != m[k] else math.nan for k in seeds]
        gain = [100 * v for v in t_interval([s[k] - m[k] for k in seeds])]
        name = f"student, alpha {alpha:g}, T {temperature:g}"
        students[stage] = {"alpha": alpha, "temperature": temperature, "student": s,
                           "gap_closed": closed}
        lines.append(f"| {name} (mean over seeds) | {100 * np.mean(list(s.values())):.1f} |")
        text += [f"{name}: per seed, student - the teacher of its seed: "
                 f"{', '.join(f'{100 * (s[k] - m[k]):+.1f}' for k in seeds)}; gap closed "
                 f"(student - multi) / (ensemble - multi): "
                 f"{', '.join(f'{100 * c:.0f}%' for c in closed)} "
                 f"(mean {100 * np.nanmean(closed):.0f}%; goal: >= 50%); the student's gain, "
                 f"mean and 95% t-interval over seeds: {gain[0]:+.1f} [{gain[1]:+.1f}, "
                 f"{gain[2]:+.1f}]", ""]
    lines += ["", *text, "Ensemble per target: " + ", ".join(
        f"{t} {100 * v[next(iter(v))]:.1f}" for t, v in ens.items()), ""]
    # one report: the teachers as the baseline, the students and SMART paired with them by seed
    routes = ["multi", *[f"multi+{stage}" for stage in students], "multi+smart"]
    rows = [*multi, *[dict(r, route=f"multi+{stage}") for stage in students
                      for r in sq.records(out / stage, "multi")],
            *[dict(r, route="multi+smart") for r in sq.records(out / "smart", "multi")]]
    settings = {"targets": sq.TARGETS, "helpers": [], "seeds": SEEDS, "baseline": "multi",
                "routes": routes, "ft_epochs": 0.0,
                "ft_learning_rate": 0.0, "spec": "scripts/study_kd_smart.py",
                "epochs": sq.SETUP["epochs"], "max_steps": None, "learning_rate": sq.LR,
                "sampler": "proportional",
                "caveat": "What this cannot show: every run is scored on its final model; the "
                          "learning rate was picked on the same dev sets by the quality study; "
                          "three seeds bound the spread only roughly; the distillation and "
                          "SMART settings were set before any result and not tuned; "
                          "the teachers are as small as the student, so this is self-"
                          "distillation from an ensemble, not compression of a larger model.",
                "route_text": {
                    "multi": "RTE, MRPC and STS-B in one run (the teachers)",
                    **{f"multi+{stage}": f"the same run distilled from the three teachers' "
                                         f"mean outputs (alpha {a:g}, T {t:g})"
                       for stage, (a, t) in STUDENTS.items()},
                    "multi+smart": "the same run with SMART on RTE and MRPC (adv_weight 1, one "
                                   "adversarial step)"}}
    spec = sq.study_spec(glue_dir, sq.LR, sq.TARGETS, out / "unused")
    result = build_report(spec, settings, rows, resamples=1000)
    result["distillation"] = {"ensemble": ens, "multi": m, "students": students}
    markdown = write_report(out / "final", result)
    (out / "final" / "distillation.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(markdown)


if __name__ == "__main__":
    main()
