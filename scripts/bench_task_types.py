"""The four new task types measured: mtdnn against the HF Trainer, CoNLL's hierarchical heads,
and training throughput per real token.

    MTDNN_MORE_DIR=../shared/data/more python scripts/bench_task_types.py --quick
    MTDNN_MORE_DIR=../shared/data/more python scripts/bench_task_types.py --only ner,speed --dry-run

Three parts, each made of units (`--only` picks units, or a part by name):

  quality  ner, pos, squad, csqa, goemotions: mtdnn single-task training against
           transformers.Trainer with the type's own AutoModelFor* class (run_ner / run_qa /
           run_swag / run_classification's setup), per seed. Both arms train on the SAME
           tokenized features (the task type's `features(...)` of mtdnn's readers; the HF arm
           gets those rows, their columns renamed to what the HF model and collator expect),
           with the same optimizer, schedule, batch and step count, and both are scored by the
           SAME code: mtdnn.evaluation.outputs_of runs each final model over the same dev
           features (the HF model behind the type's `exported_logits`, the bridge from the
           plain transformers class to the type's logits), then `kind.predictions` and
           `kind.score`. No checkpoint is selected in either arm: the final model is scored.
  conll    chunk alone, and the three CoNLL-2003 tasks trained together with hierarchical heads
           (task_specs/conll2003.yaml: POS on layer 2, chunks on 4, NER on the last), mtdnn only;
           NER and POS alone are the quality part's mtdnn runs. Proportional sampler: each task's
           sentences once per epoch, the same budget per task as alone. `conll-flat` (opt-in):
           the three together, every head on the last layer (multi-task without the hierarchy).
  speed    tput-ner, tput-squad: training throughput, one epoch over a subset, mtdnn against the
           Trainer with dynamic padding and group_by_length, same features and batch size,
           timed from the end of the first optimizer step to the end of the last (bench_meter's
           Meter: a torch.optim post-step hook for both, real tokens from the attention masks
           of the batches: mtdnn's through its Instrument hook, the Trainer's through its
           collator). Only meaningful on an otherwise idle machine.

Each (unit, arm, seed) runs in its own child process and its result is stored as JSON under
--out; a rerun skips what is stored (an interrupted benchmark goes on where it stopped). The
report (Markdown, printed, and --markdown FILE) gives per unit each arm's mean ± std over seeds,
the paired per-seed difference mtdnn − HF with its 95% t-interval (mtdnn.stats.t_interval, two
seeds or more), the task type's trivial baseline, training time and real tokens/s per arm.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_results as br  # noqa: E402
from task_types_plan import estimate_run, plan, plan_sizes  # noqa: E402
from task_types_report import report, summary_line  # noqa: E402
from task_types_run import child  # noqa: E402
from task_types_units import (  # noqa: E402
    ARMS,
    DATA,
    DEFAULT_UNITS,
    OPT_IN,
    PARTS,
    UNITS,
    grouped_tasks,
    unit_config,
    unit_key,
)

# Train rows per data set (0: every row) of each preset; --quick fits ~35 minutes on the 2-core
# development machine, the full preset is the BENCHMARKS.md figures (see the printed estimate).
PRESETS: dict[str, dict[str, Any]] = {
    "full": {"seeds": [1, 2, 3], "epochs": 2.0, "repeats": 3,
             "train_rows": {"conll": 0, "squad": 4000, "csqa": 6000, "goemotions": 15000},
             "dev_rows": {"conll": 0, "squad": 2000, "csqa": 0, "goemotions": 0},
             "speed_rows": {"conll": 3200, "squad": 960}},
    "quick": {"seeds": [1], "epochs": 1.0, "repeats": 1,
              "train_rows": {"conll": 2000, "squad": 1000, "csqa": 1500, "goemotions": 4000},
              "dev_rows": {"conll": 1000, "squad": 500, "csqa": 0, "goemotions": 2000},
              "speed_rows": {"conll": 1280, "squad": 384}},
}


def default_more_dir() -> str:
    return os.environ.get("MTDNN_MORE_DIR") or str(bc.REPO.parent / "shared" / "data" / "more")


# ---------------------------------------------------------------------------------------------
# Command line


def rows_option(text: str) -> tuple[str, int]:
    name, _, count = text.partition("=")
    if name not in DATA or not count.isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r}: give DATA=N with DATA one of {', '.join(DATA)} and N >= 0 (0: every row)")
    return name, int(count)


def expand_units(text: str) -> tuple[list[str], list[str]]:
    """'ner,speed' -> (units in run order, unknown names with a suggestion)."""
    wanted, unknown = set(), []
    for name in filter(None, (n.strip() for n in text.split(","))):
        if name in PARTS:
            wanted.update(n for n in PARTS[name] if n not in OPT_IN)
        elif name in UNITS:
            wanted.add(name)
        else:
            close = difflib.get_close_matches(name, [*UNITS, *PARTS], n=1)
            unknown.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return [n for n in UNITS if n in wanted], unknown


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bc.common_parser(__doc__.split("\n\n")[0], lr=1e-4, out="runs/bench_task_types",
                         out_help="results (one JSON per unit, arm and seed), logs, run "
                                  "directories, the tokenization cache",
                         lr_help="a small encoder takes a larger step than BERT-base")
    for action in p._actions:
        if action.dest == "glue_dir":  # the common option is for the GLUE scripts
            action.help = argparse.SUPPRESS
        if action.dest == "max_seq_length":
            action.default = None
            action.help = ("both arms, every task; None: per data set (" + ", ".join(
                f"{k} {d.max_seq_length}" for k, d in DATA.items()) + ")")
    full, quick = PRESETS["full"], PRESETS["quick"]
    p.add_argument("--more-dir", default=default_more_dir(),
                   help="../shared/data/more's layout ($MTDNN_MORE_DIR if set)")
    p.add_argument("--quick", action="store_true",
                   help=f"the reduced preset (~35 min on 2 cores): {quick}; explicit options win")
    p.add_argument("--only", default=",".join(DEFAULT_UNITS),
                   help=f"units, comma-separated: {', '.join(UNITS)}, or a part: "
                        f"{', '.join(PARTS)} ({', '.join(OPT_IN)} only when named)")
    p.add_argument("--seeds", nargs="+", type=int, help=f"default {full['seeds']}")
    p.add_argument("--epochs", type=float, help=f"default {full['epochs']}")
    for key, what in (("train", "training rows"), ("dev", "dev rows"),
                      ("speed", "training rows of the speed units")):
        p.add_argument(f"--{key}-rows", nargs="+", type=rows_option, metavar="DATA=N",
                       help=f"first N {what} per data set, 0: all (default "
                            f"{full[f'{key}_rows']})")
    p.add_argument("--repeats", type=int, help=f"speed units' repeats (default {full['repeats']})")
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--doc-stride", type=int, default=128, help="SQuAD windows' overlap")
    p.add_argument("--hf-group-by-length", action="store_true",
                   help="quality units: the HF Trainer groups batches by length (run_ner, run_qa "
                        "and run_swag do not by default)")
    p.add_argument("--mtdnn-random-batches", action="store_true",
                   help="quality and conll units: mtdnn without length-grouped batches "
                        "(train.group_by_length=false), as the HF arm's random batches")
    p.add_argument("--arms", default=",".join(ARMS),
                   help="the arms to train now, comma-separated (the others' stored results "
                        "still enter the report): e.g. mtdnn's seeds first, the Trainer's later")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep each mtdnn run's final model (by default deleted once scored)")
    p.add_argument("--markdown", help="write the report here (it is printed in any case)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    args = p.parse_args(argv)
    preset = PRESETS["quick" if args.quick else "full"]
    for key in ("seeds", "epochs", "repeats"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    for key in ("train_rows", "dev_rows", "speed_rows"):
        setattr(args, key, {**preset[key], **dict(getattr(args, key) or [])})
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds repeats a seed: {args.seeds}")
    if args.repeats < 1 or args.epochs <= 0:
        p.error("--repeats must be >= 1 and --epochs > 0")
    units, unknown = expand_units(args.only)
    if unknown or not units:
        p.error(f"--only: unknown unit(s) {', '.join(unknown)}; choose from {', '.join(UNITS)} "
                f"or {', '.join(PARTS)}" if unknown else "--only names no unit")
    args.units = units
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not args.arms or set(args.arms) - set(ARMS):
        p.error(f"--arms: {','.join(args.arms) or 'none given'}; choose from {', '.join(ARMS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        return child(*args.child)
    if not (Path(args.more_dir) / "conll2003" / "train.txt").is_file():
        sys.exit(f"no data in {args.more_dir} (give --more-dir or set MTDNN_MORE_DIR)")
    bc.child_env()
    out = Path(args.out).absolute()
    os.environ.setdefault("MTDNN_CACHE", str(out / "cache"))
    store, logs = br.ResultStore(out / "results"), out / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    runs = plan(args)
    configs = {r: unit_config(args, *r, out) for r in runs}
    stale = [unit_key(*r) for r in runs if (s := store.get(unit_key(*r))) is not None
             and (s.get("settings") != configs[r]["settings"]
                  # results stored before 2026-12-02 evening do not record it
                  or "grouped" in s and s["grouped"] != grouped_tasks(configs[r]))]
    if stale:
        sys.exit(f"{out} holds results made with other settings or another length grouping "
                 f"({', '.join(stale)}): give another --out, or delete them to run them again")
    print(f"machine: {bc.machine_line(bc.machine_info())}\nout: {out}\nreading and tokenizing "
          "the splits ...", flush=True)
    sizes = {u: plan_sizes(next(c for r, c in configs.items() if r[0] == u))
             for u in args.units}
    missing = [r for r in runs if store.get(unit_key(*r)) is None]
    todo = [r for r in missing if r[1] in args.arms]
    estimate = {r: estimate_run(configs[r], sizes[r[0]], args.epochs) for r in runs}
    print(f"settings: {'quick' if args.quick else 'full'} preset with the options given; seeds "
          f"{args.seeds}, {args.epochs:g} epoch(s), speed repeats {args.repeats}; first rows "
          f"(0: all): train {args.train_rows}, dev {args.dev_rows}, speed {args.speed_rows}")
    print(f"plan: {len(runs)} runs, {len(runs) - len(missing)} already stored"
          + (f", {len(missing) - len(todo)} left to another --arms" if missing != todo else "")
          + ":")
    for r in runs:
        unit_sizes = sizes[r[0]]
        trained = ", ".join(f"{t} {s['train_features']:,} features/{s['train_tokens']:,} tokens"
                            for t, s in unit_sizes.items())
        state = ("stored" if r not in missing else f"~{estimate[r] / 60:.1f} min" if r in todo
                 else "not now")
        print(f"  {unit_key(*r):<28} {state:>10}   {trained}")
    print(f"estimated duration: {bc.fmt_duration(sum(estimate[r] for r in todo))} (rates of the "
          "2-core development machine; tokens computed, pads included)", flush=True)
    if args.dry_run:
        return

    failed = []
    for r in todo:
        key, tag = unit_key(*r), unit_key(*r).replace("/", "-")
        print(f"{key}: running (log: {logs / tag}.log)", flush=True)
        try:
            result = bc.run_child(Path(__file__), configs[r], logs, tag)
        except RuntimeError as e:
            print(f"{key}: FAILED\n{e}", flush=True)
            failed.append(key)
            continue
        store.put(key, result)
        print(f"{key}: {summary_line(result)}; wall {result['child_wall_s']:.0f} s", flush=True)

    results = {r: s for r in runs if (s := store.get(unit_key(*r))) is not None}
    summary_path = out / "summary.json"
    info = {"args": vars(args), "machine": bc.machine_info(), "command": bc.command_line(),
            "units": args.units, "sizes": sizes, "summary": summary_path}
    text = report(results, info)
    summary_path.write_text(json.dumps(
        {"machine": info["machine"], "command": info["command"], "args": vars(args),
         "sizes": sizes, "results": {unit_key(*r): v for r, v in results.items()}},
        indent=1, default=str), encoding="utf-8")
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    print(f"wrote {summary_path}" + (f", {args.markdown}" if args.markdown else ""))
    if failed:
        sys.exit(f"failed runs (see {logs}): {', '.join(failed)}; rerun the same command to "
                 "retry them")


if __name__ == "__main__":
    main()
