"""The full-budget quality study (BENCHMARKS.md "Quality at full budget"): does multi-task training
beat single-task training on GLUE targets, and by how much? A wrapper around `mtdnn compare`.

    MTDNN_GLUE_DIR=../shared/data/glue python scripts/study_quality.py            # hours, resumable
    MTDNN_GLUE_DIR=../shared/data/glue python scripts/study_quality.py --report   # tables only

Design (every figure of the report comes from the stored runs under --out):
- Encoder: the bundled all-MiniLM-L6-v2. Targets RTE, MRPC, STS-B with their full training sets;
  helper MNLI (the 9,999-row sample: the helper that carries RTE in MT-DNN). Batch 32,
  max_seq_length 128, warmup 10%, 2 epochs, proportional sampler: single and multi train each
  target on the same examples (multi adds MNLI's on top).
- Every run is scored once, on its final model (no checkpoint picked on dev).
- Main comparison, seeds 1-3, every arm at learning rate 1e-4: mtdnn single, mtdnn multi,
  multi+ft (multi's final model, then 1 epoch per target at half the rate), single+extra (the same
  epoch from single's final model: the control for the extra steps), and the HF Trainer single-task
  arm (`AutoModelForSequenceClassification`, dynamic padding, random batches, its pretrained
  pooler: run_glue's defaults), scored in the dev set's order (bench_common.hf_predict_in_order).
- Sensitivity, seed 1: single, multi and the Trainer at 5e-5 and 2e-4 (the rate is not tuned
  per arm on the three seeds; this shows how much a per-arm rate could change).
- Probe, seed 1: multi without MNLI (the three targets together), for what MNLI itself brings.
- CoLA (where MT-DNN reruns lose points), its own comparison, seeds 1-3, every mtdnn route:
  CoLA alone vs CoLA + MNLI (10k) in one run, the same settings (`cola/`, its own report).
- Probe, seeds 1-3: single with `head_init: pooler` (each head's dense layer starts from MiniLM's
  pretrained pooler, as the Trainer's does), against single's random start.
Cost: a multi run is 1,369 steps, the three single runs 746; one seed of the four routes about
2,900 steps. Order: the main comparison seed by seed, then the Trainer arm, then the probe, the
sensitivity runs, CoLA and the pooler probe.

Finished runs are stored (`mtdnn compare` records, and hf/<lr>/<task>/seed-<s>.json); an
interrupted study continues where it stopped.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

from mtdnn.compare import ROUTES  # noqa: E402  (torch-free)

TARGETS = ["rte", "mrpc", "stsb"]
HELPERS = ["mnli"]
COLA = ["cola"]  # the target of the separate CoLA comparison (MNLI its helper)
LR = 1e-4  # every arm's rate on the three seeds
GRID = [5e-5, 2e-4]  # the seed-1 sensitivity rates
SEEDS = [1, 2, 3]
EPOCHS = 2.0


# What a run of the study is (the options only shrink it, for a smoke test of the script).
SETUP = {"encoder": bc.MINILM, "epochs": EPOCHS, "max_train": None}


def study_spec(glue_dir: str, lr: float, tasks: list[str], out: Path,
               extra: tuple[str, ...] = ()) -> Any:
    from mtdnn.spec import load_spec

    limits = [f"tasks.{t}.max_train_examples={SETUP['max_train']}" for t in tasks] \
        if SETUP["max_train"] else []
    return load_spec(Path(bc.REPO) / "task_specs" / "glue.yaml", [
        f"encoder={SETUP['encoder']}", f"data_dir={glue_dir}", f"output_dir={out}",
        f"train.learning_rate={lr}", "train.batch_size=32", f"train.epochs={SETUP['epochs']}",
        "train.warmup_ratio=0.1", "train.report_to=[none]", "train.log_every=20",
        # one evaluation, at the end: the final model is the one reported
        "train.eval_every=1000000", *limits, *extra], tasks=[t for t in tasks if t])


def lr_dir(out: Path, lr: float) -> Path:
    return out / f"lr-{lr:g}"


def run_compare(spec: Any, routes: list[str], seeds: list[int], out: Path, helpers: list[str],
                lr: float, targets: list[str] = TARGETS) -> Any:
    from mtdnn.compare import compare

    return compare(spec, targets, helpers=helpers, seeds=seeds, routes=routes,
                   ft_epochs=1.0, ft_learning_rate=lr / 2, output_dir=out, resamples=1000)


# ---------------------------------------------------------------------------------------------
# The HF Trainer arm: one target at a time, stored like a compare record


def hf_record(spec: Any, task_name: str, seed: int, run_dir: Path) -> dict[str, Any]:
    """One target with the HF Trainer as run_glue runs it by default (random batches, dynamic
    padding, the pretrained pooler), the spec's optimizer and schedule, as a compare record."""
    from bench_quality import hf_train_task

    started = time.perf_counter()
    run = hf_train_task(spec, spec.task(task_name), run_dir, spec.train.epochs, sampling="random")
    gc.collect()
    return {"route": "hf-single", "target": task_name, "seed": seed, "status": "ok",
            "metrics": run["metrics"][task_name], "predictions": run["predictions"],
            "examples": {task_name: run["examples"]},  # every row each epoch
            "wall_s": time.perf_counter() - started, "run": f"hf/{task_name}/seed-{seed}"}


def run_hf(glue_dir: str, lr: float, seeds: list[int], out: Path) -> None:
    for seed in seeds:
        for target in TARGETS:
            path = out / "hf" / f"lr-{lr:g}" / target / f"seed-{seed}.json"
            if path.is_file():
                continue
            print(f"study: hf-single {target} lr {lr:g} seed {seed}", flush=True)
            spec = study_spec(glue_dir, lr, [target], out / "hf-run")
            from mtdnn.spec import spec_from_dict

            data = spec.to_dict()
            data["seed"] = seed
            spec = spec_from_dict(data, source=spec.source)
            record = hf_record(spec, target, seed, out / "hf-run" / target)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Reading what is stored


def records(root: Path, route: str) -> list[dict[str, Any]]:
    base = root / "records" / route.replace("+", "-")
    return [json.loads(p.read_text()) for p in sorted(base.rglob("seed-*.json"))] \
        if base.is_dir() else []


def hf_records(out: Path, lr: float) -> list[dict[str, Any]]:
    base = out / "hf" / f"lr-{lr:g}"
    return [json.loads(p.read_text()) for p in sorted(base.rglob("seed-*.json"))] \
        if base.is_dir() else []


def target_score(rows: list[dict[str, Any]], target: str, seed: int) -> float:
    """The main dev metric of one target's run of one seed (nan when it did not run)."""
    from mtdnn.metrics import main_metric

    match = [r for r in rows if r["target"] == target and r["seed"] == seed and
             r["status"] == "ok"]
    return match[0]["metrics"][main_metric(list(match[0]["metrics"]))] if match else math.nan


def main_score(rows: list[dict[str, Any]], seed: int = 1) -> float:
    """Mean over targets of the main dev metric of one seed's runs (nan when one is missing)."""
    return float(sum(target_score(rows, t, seed) for t in TARGETS) / len(TARGETS))


def grid_scores(out: Path) -> dict[str, dict[str, float]]:
    """Seed 1's mean main dev metric over targets, per arm and learning rate (nan: not run yet)."""
    arms: dict[str, dict[str, float]] = {"single": {}, "multi": {}, "hf-single": {}}
    for lr in sorted({LR, *GRID}):
        arms["single"][f"{lr:g}"] = main_score(records(lr_dir(out, lr), "single"))
        arms["multi"][f"{lr:g}"] = main_score(records(lr_dir(out, lr), "multi"))
        arms["hf-single"][f"{lr:g}"] = main_score(hf_records(out, lr))
    return arms


def grid_markdown(grid: dict[str, dict[str, float]]) -> str:
    rates = list(next(iter(grid.values())))
    lines = ["", "## Learning-rate sensitivity (seed 1)", "",
             "Mean over the targets of the main dev metric x100, seed 1; the comparison above "
             f"runs every arm at {LR:g}. '-': not run.", "",
             "| arm | " + " | ".join(rates) + " |", "|---|" + "---:|" * len(rates)]
    for arm, scores in grid.items():
        cells = ["-" if math.isnan(v) else f"{100 * v:.1f}" for v in scores.values()]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    best = best_rates(grid)
    if best:
        lines += ["", "Each arm at its best rate on seed 1 (tuned on the dev sets it is scored on, "
                  "alike for every arm): " + ", ".join(
                      f"{arm} {rate} ({100 * score:.1f})" for arm, (rate, score) in best.items())
                  + "."]
        if "multi" in best:
            lines.append("multi's best − " + ", ".join(
                f"{arm}'s best: {100 * (best['multi'][1] - best[arm][1]):+.1f}"
                for arm in best if arm != "multi") + " (one seed).")
    return "\n".join(lines) + "\n"


def best_rates(grid: dict[str, dict[str, float]]) -> dict[str, tuple[str, float]]:
    """arm -> (its best rate, score) on seed 1, for the arms whose every rate has run."""
    return {arm: max(scores.items(), key=lambda kv: kv[1]) for arm, scores in grid.items()
            if scores and not any(math.isnan(v) for v in scores.values())}


def paired(rows: list[dict[str, Any]], route: str, baseline: str) -> dict[str, dict[str, Any]]:
    """Per target and for the mean of the targets: route − baseline on the main dev metric, per
    seed (seeds both ran), with the 95% t-interval of the mean over seeds."""
    from mtdnn.stats import t_interval

    of = {name: [r for r in rows if r["route"] == name] for name in (route, baseline)}
    out: dict[str, dict[str, Any]] = {}
    for unit in [*TARGETS, "mean"]:
        per_seed = {}
        for seed in SEEDS:
            a, b = (main_score(of[name], seed) if unit == "mean" else
                    target_score(of[name], unit, seed) for name in (route, baseline))
            if not (math.isnan(a) or math.isnan(b)):
                per_seed[seed] = a - b
        mean, low, high = t_interval(list(per_seed.values()))
        out[unit] = {"per_seed": per_seed, "mean": mean, "t_interval": [low, high]}
    return out


def paired_markdown(table: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The paired table against each baseline (single, and the Trainer: the issue's goal)."""
    def iv(v: list[float]) -> str:
        return "-" if math.isnan(v[0]) else f"[{100 * v[0]:+.1f}, {100 * v[1]:+.1f}]"

    lines = ["", "## Paired against each baseline, main metric (x100)", "",
             "Per seed: route − baseline on the same seed; `mean` is the mean over RTE, MRPC and "
             "STS-B of each seed's main metrics; 95% t-interval over seeds.", "",
             "| route − baseline | target | per seed | mean | t-interval |",
             "|---|---|---|---:|---|"]
    for pair, units in table.items():
        for unit, d in units.items():
            if not d["per_seed"]:
                continue
            seeds = ", ".join(f"{100 * v:+.1f}" for v in d["per_seed"].values())
            lines.append(f"| {pair} | {unit} | {seeds} | {100 * d['mean']:+.1f} | "
                         f"{iv(d['t_interval'])} |")
    return "\n".join(lines) + "\n"


def final_report(glue_dir: str, out: Path) -> str:
    from mtdnn.compare_report import build_report, write_report

    spec = study_spec(glue_dir, LR, [*TARGETS, *HELPERS], out / "unused")
    main = lr_dir(out, LR)
    rows = [*records(main, "single"), *records(main, "single+extra"), *records(main, "multi"),
            *records(main, "multi+ft"), *hf_records(out, LR)]
    no_mnli = [dict(r, route="multi-no-mnli") for r in records(out / "probe-no-mnli", "multi")]
    pooler = [dict(r, route="single-pooler") for r in records(out / "probe-pooler", "single")]
    ran = {r["route"] for r in [*rows, *no_mnli, *pooler]}
    routes = [r for r in ("single", "multi", "multi+ft", "single+extra", "hf-single",
                          "multi-no-mnli", "single-pooler") if r in ran or r == "single"]
    settings = {"targets": TARGETS, "helpers": HELPERS, "seeds": SEEDS, "routes": routes,
                "ft_epochs": 1.0, "ft_learning_rate": LR / 2, "spec":
                "task_specs/glue.yaml (scripts/study_quality.py)", "epochs": SETUP["epochs"],
                "max_steps": None, "learning_rate": LR, "sampler": "proportional",
                "caveat": "What this cannot show: every arm runs at one learning rate (1e-4; "
                          "the seed-1 sensitivity table below shows what another would change); "
                          "three seeds bound the seed-to-seed spread only roughly; the result "
                          "holds for MiniLM-L6, these targets, one helper (MNLI, 10k rows) and "
                          "2 epochs; QNLI and QQP are not in it, CoLA has its own comparison "
                          "below.",
                "route_text": {
                    "single": f"each target alone (mtdnn), learning rate {LR:g}",
                    "multi": f"RTE, MRPC, STS-B + MNLI (10k) in one run, learning rate {LR:g}",
                    "multi+ft": f"multi's final model, then 1 epoch per target at {LR / 2:g}",
                    "single+extra": f"single's final model, then 1 epoch at {LR / 2:g} "
                                    "(the control)",
                    "hf-single": f"HF Trainer, one target at a time, learning rate {LR:g}",
                    "multi-no-mnli": "probe, seed 1: RTE, MRPC, STS-B together, no MNLI",
                    "single-pooler": "probe: single, each head's dense layer started from the "
                                     "pretrained pooler (head_init: pooler)"}}
    report = build_report(spec, settings, [*rows, *no_mnli, *pooler], resamples=1000)
    grid = grid_scores(out)
    report["lr_grid"] = grid
    pairs = {f"{route} − {base}": paired([*rows, *pooler], route, base)
             for base in ("single", "hf-single")
             for route in ("multi", "multi+ft", "single+extra", "single", "single-pooler")
             if route != base}
    report["paired"] = pairs
    extra = paired_markdown(pairs) + grid_markdown(grid) + cola_markdown(glue_dir, out)
    text = write_report(out / "final", report) + extra
    (out / "final" / "report.md").write_text(text, encoding="utf-8")
    print(extra, flush=True)
    return text


def cola_markdown(glue_dir: str, out: Path) -> str:
    """The CoLA comparison's report, rebuilt from its stored records with the study's caveat
    (every run is scored on its final model), one heading level down; cola/report.{md,json,png}
    are rewritten with it."""
    from mtdnn.compare_report import build_report, write_report

    path = out / "cola" / "report.json"
    if not path.is_file():
        return "\n## CoLA with MNLI as the helper\n\nNot run yet.\n"
    settings = dict(json.loads(path.read_text(encoding="utf-8"))["settings"],
                    spec="task_specs/glue.yaml (scripts/study_quality.py)",
                    caveat="What this cannot show: every run is scored on its final model, "
                           "with the main comparison's settings (learning rate 1e-4, 2 epochs), "
                           "not tuned for CoLA; three seeds bound the spread only roughly; one "
                           "helper (MNLI, 10k rows).")
    spec = study_spec(glue_dir, LR, [*COLA, *HELPERS], out / "unused")
    rows = [r for route in settings["routes"] for r in records(out / "cola", route)]
    text = write_report(out / "cola", build_report(spec, settings, rows, resamples=1000))
    return "\n## CoLA with MNLI as the helper (its own comparison, cola/report.md)\n" + \
        text.split("\n", 1)[1].replace("\n## ", "\n### ")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--glue-dir", default=os.environ.get("MTDNN_GLUE_DIR") or bc.default_glue_dir())
    p.add_argument("--out", default="runs/study", help="where the runs and reports are stored")
    p.add_argument("--report", action="store_true", help="write the report from stored runs only")
    p.add_argument("--skip-sensitivity", action="store_true",
                   help="stop after the main comparison and the Trainer arm")
    # for a smoke test of the script on a tiny model; the study is the defaults
    p.add_argument("--encoder", default=bc.MINILM, help=argparse.SUPPRESS)
    p.add_argument("--max-train", type=int, help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=float, default=EPOCHS, help=argparse.SUPPRESS)
    p.add_argument("--grid", type=float, nargs="*", default=GRID, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    SETUP.update(encoder=args.encoder, max_train=args.max_train, epochs=args.epochs)
    GRID[:] = args.grid
    bc.child_env()
    bc.check_glue_dir(args.glue_dir)
    out = Path(args.out)
    if not args.report:
        main_dir = lr_dir(out, LR)  # the main comparison, seed by seed
        spec = study_spec(args.glue_dir, LR, [*TARGETS, *HELPERS], main_dir / "runs")
        run_compare(spec, list(ROUTES), SEEDS, main_dir, HELPERS, LR)
        run_hf(args.glue_dir, LR, SEEDS, out)
        if not args.skip_sensitivity:
            probe = study_spec(args.glue_dir, LR, TARGETS, out / "probe-no-mnli")
            run_compare(probe, ["multi"], [1], out / "probe-no-mnli", [], LR)
            for lr in GRID:
                spec = study_spec(args.glue_dir, lr, [*TARGETS, *HELPERS], lr_dir(out, lr) / "runs")
                run_compare(spec, ["single", "multi"], [1], lr_dir(out, lr), HELPERS, lr)
                run_hf(args.glue_dir, lr, [1], out)
            cola = study_spec(args.glue_dir, LR, [*COLA, *HELPERS], out / "cola" / "runs")
            run_compare(cola, list(ROUTES), SEEDS, out / "cola", HELPERS, LR, targets=COLA)
            pooled = study_spec(args.glue_dir, LR, TARGETS, out / "probe-pooler" / "runs",
                                tuple(f"tasks.{t}.head_init=pooler" for t in TARGETS))
            run_compare(pooled, ["single"], SEEDS, out / "probe-pooler", [], LR)
    final_report(args.glue_dir, out)


if __name__ == "__main__":
    main()
