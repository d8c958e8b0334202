"""The report of `mtdnn compare` (mtdnn/compare.py): from the stored run records to report.json,
report.md and report.png.

Every difference is paired: route minus the baseline route (`settings["baseline"]`, single unless
a caller names another), seed by seed, on the same dev rows. The t-interval
is taken over the seeds' differences (the spread a new seed would bring); the bootstrap resamples
the dev rows (ranking: whole queries) within each seed and averages the seeds' differences (the
noise of a finite dev set). A verdict says "helps" or "hurts" only when both intervals that exist
exclude 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from mtdnn.metrics import main_metric
from mtdnn.spec import Spec
from mtdnn.stats import paired_bootstrap, t_interval, verdict

ROUTE_TEXT = {
    "single": "each target alone",
    "multi": "the targets and the helpers in one run",
    "multi+ft": "multi's best checkpoint, then each target alone for the fine-tuning epochs",
    "single+extra": "single's best checkpoint, then the same fine-tuning epochs (the control)",
}


def _dev(spec: Spec, target: str) -> tuple[Any, Any, list[str]]:
    """A target's dev examples, its type and its metrics."""
    from mtdnn.data import read_split
    from mtdnn.tasks import task_type

    task = spec.task(target)
    kind = task_type(task.type)
    return read_split(spec, task, "dev"), kind, list(task.metrics or kind.default_metrics)


def _scorer(kind: Any, predictions: list[Any], examples: Any, metric: str):
    """rows (a resample of the dev examples), qids (their renumbered query groups or None) ->
    the metric on them, scored by the task's type."""
    def score(rows: np.ndarray, qids: np.ndarray | None) -> float:
        picked = kind.subset(examples, rows.tolist(), None if qids is None else qids.tolist())
        return kind.score([metric], [predictions[i] for i in rows], picked)[metric]
    return score


def build_report(spec: Spec, settings: dict[str, Any], records: list[dict[str, Any]],
                 resamples: int = 1000) -> dict[str, Any]:
    """Aggregates the records: per target, metric and route the values over seeds; per route and
    metric the paired differences to the baseline route with their intervals; cost; verdicts."""
    ok = [r for r in records if r["status"] == "ok"]
    routes, baseline = settings["routes"], baseline_of(settings)
    report: dict[str, Any] = {"settings": settings, "targets": {}, "verdicts": {}, "cost": {},
                              "failed": [{k: r[k] for k in ("route", "target", "seed", "error")}
                                         for r in records if r["status"] != "ok"]}
    for target in settings["targets"]:
        examples, kind, names = _dev(spec, target)
        groups = getattr(examples, "query_ids", None)
        main = main_metric(names)
        by_route = {route: {r["seed"]: r for r in ok if r["route"] == route and
                            r["target"] == target} for route in routes}
        entry: dict[str, Any] = {"main_metric": main, "metrics": names, "routes": {},
                                 "differences": {}}
        for route, runs in by_route.items():
            entry["routes"][route] = {m: {str(s): runs[s]["metrics"][m] for s in sorted(runs)}
                                      for m in names}
        single = by_route.get(baseline, {})
        for route in routes:
            if route == baseline or not single:
                continue
            seeds = sorted(set(single) & set(by_route[route]))
            entry["differences"][route] = {}
            for metric in names:
                diffs = [by_route[route][s]["metrics"][metric] - single[s]["metrics"][metric]
                         for s in seeds]
                mean, lo, hi = t_interval(diffs)
                boot = (math.nan, math.nan)
                if seeds:
                    score = {side: [_scorer(kind, runs[s]["predictions"], examples, metric)
                                    for s in seeds]
                             for side, runs in (("a", by_route[route]), ("b", single))}
                    boot = paired_bootstrap(
                        lambda rows, s, q, fs=score["a"]: fs[s](rows, q),
                        lambda rows, s, q, fs=score["b"]: fs[s](rows, q),
                        len(examples), len(seeds), groups=groups, resamples=resamples)
                entry["differences"][route][metric] = {
                    "seeds": seeds, "per_seed": diffs, "mean": mean, "t_interval": [lo, hi],
                    "bootstrap": list(boot)}
        report["targets"][target] = entry
        report["verdicts"][target] = {
            route: verdict(d[main]["mean"], [tuple(d[main]["t_interval"]),
                                             tuple(d[main]["bootstrap"])])
            for route, d in entry["differences"].items()}
    for route in routes:
        mine = [r for r in ok if r["route"] == route]
        runs = {r["run"]: r for r in mine}  # multi: one run records every target
        if not runs:
            continue
        seeds = {r["seed"] for r in mine}
        report["cost"][route] = {
            "runs": len(runs), "seeds": len(seeds),
            "wall_s_total": float(sum(r["wall_s"] for r in runs.values())),
            "wall_s_per_seed": float(sum(r["wall_s"] for r in runs.values())) / len(seeds),
            "examples_of_target": {t: _mean([r["examples"].get(t) for r in mine
                                             if r["target"] == t])
                                   for t in settings["targets"]},
            "examples_in_all": _mean([sum(r["examples"].values()) for r in runs.values()])}
    return report


def baseline_of(settings: dict[str, Any]) -> str:
    """The route every other route is paired with."""
    return settings.get("baseline", "single")


def _mean(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _pm(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values, ddof=1):.1f}"


def _interval(pair: list[float]) -> str:
    lo, hi = pair
    return "-" if math.isnan(lo) or math.isnan(hi) else f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    routes = s["routes"]
    length = f"{s['max_steps']} steps" if s["max_steps"] else f"{s['epochs']:g} epochs"
    ft = (f"; fine-tuning stage {s['ft_epochs']:g} epochs at {s['ft_learning_rate']:g}"
          if {"multi+ft", "single+extra"} & set(routes) else "")
    lines = [f"# mtdnn compare: {', '.join(s['targets'])}", "",
             f"Targets {', '.join(s['targets'])}; helpers {', '.join(s['helpers']) or 'none'}; "
             f"seeds {', '.join(map(str, s['seeds']))}; {length} at learning rate "
             f"{s['learning_rate']:g}, sampler {s['sampler']}{ft} (spec {s['spec']}).", ""]
    lines += [f"- **{r}**: {s.get('route_text', {}).get(r) or ROUTE_TEXT.get(r, r)}"
              for r in routes]
    lines += ["", "## Dev results (x100, mean ± std over seeds)", "",
              "| target | metric | " + " | ".join(routes) + " |",
              "|---|---|" + "---:|" * len(routes)]
    for target, entry in report["targets"].items():
        for metric in entry["metrics"]:
            cells = [_pm(list(entry["routes"][r][metric].values())) for r in routes]
            lines.append(f"| {target} | {metric} | " + " | ".join(cells) + " |")
    base = baseline_of(s)
    lines += ["", f"## Paired differences to {base} (x100)", "",
              f"Mean over seeds of (route - {base}), seed by seed; 95% t-interval over seeds; 95% "
              "bootstrap over dev examples within each seed.", "",
              "| target | metric | route | seeds | difference | t-interval | bootstrap |",
              "|---|---|---|---:|---:|---|---|"]
    for target, entry in report["targets"].items():
        for route, metrics in entry["differences"].items():
            for metric, d in metrics.items():
                mean = "-" if math.isnan(d["mean"]) else f"{100 * d['mean']:+.1f}"
                lines.append(f"| {target} | {metric} | {route} | {len(d['seeds'])} | {mean} | "
                             f"{_interval(d['t_interval'])} | {_interval(d['bootstrap'])} |")
    lines += ["", "## Verdicts (main metric)", ""]
    for target, by_route in report["verdicts"].items():
        main = report["targets"][target]["main_metric"]
        lines.append(f"- **{target}** ({main}): " + "; ".join(f"{r}: {v}"
                                                               for r, v in by_route.items()))
    lines += ["", "## Budget and cost", "",
              "| route | runs | examples of each target (mean per run) | examples in all (mean "
              "per run) | wall time per seed |", "|---|---:|---|---:|---:|"]
    for route, c in report["cost"].items():
        per_target = ", ".join(f"{t} {v:,.0f}" for t, v in c["examples_of_target"].items()
                               if v is not None)
        wall = c["wall_s_per_seed"]
        wall_text = f"{wall:.0f} s" if wall < 120 else f"{wall / 60:.1f} min"
        lines.append(f"| {route} | {c['runs']} | {per_target} | {c['examples_in_all']:,.0f} | "
                     f"{wall_text} |")
    if report["failed"]:
        lines += ["", "## Failed runs", ""]
        lines += [f"- {f['route']} {f['target']} seed {f['seed']}: {f['error']}"
                  for f in report["failed"]]
    lines += ["", s.get("caveat") or (
        "What this cannot show: a run that evaluates more than once keeps the checkpoint its "
        "dev set scores best, and the same dev set reports it (as GLUE dev results usually "
        "are), so the figures are optimistic, alike for every route; a few seeds bound the "
        "seed-to-seed spread only roughly; the result holds for these tasks, this encoder and "
        "these settings.")]
    return "\n".join(lines) + "\n"


def write_report(root: Path, report: dict[str, Any]) -> str:
    """Writes report.json, report.md and report.png (when matplotlib is installed) under root;
    returns the Markdown."""
    from mtdnn.plots import plot_compare

    root.mkdir(parents=True, exist_ok=True)
    (root / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    text = markdown(report)
    (root / "report.md").write_text(text, encoding="utf-8")
    plot_compare(report, root / "report.png")
    print(text, flush=True)
    return text
