"""The `mtdnn` command: a thin layer over the Python API, one subcommand per API function.

User mistakes (a bad spec, bad data, an unknown task, a missing file, a directory that is not a
checkpoint: `mtdnn.errors.UserError`) print one message that names the file, key or row and the
fix, and exit with status 2, without a traceback. Anything else is a bug: its traceback is kept,
with a line asking for a report, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from mtdnn.errors import UserError

EXIT_USER_ERROR = 2
EXIT_BUG = 1


def _split_list(text: str | None) -> list[str] | None:
    return [x for x in text.split(",") if x] if text else None


def _cmd_validate(args: argparse.Namespace) -> int:
    from mtdnn.data import check_data
    from mtdnn.spec import load_spec

    spec = load_spec(args.spec, args.overrides, tasks=_split_list(args.tasks))
    print(f"{args.spec}: spec OK ({len(spec.tasks)} tasks, encoder {spec.encoder})")
    if spec.distill is not None:
        from mtdnn.distill import coverage

        for task, teachers in coverage(spec)[0].items():
            print(f"  distill {task:<12} from {', '.join(t.path for t in teachers)}")
    if args.no_data:
        return 0
    counts = check_data(spec)
    for task in spec.tasks:
        source = "files" if spec.uses_files(task) else f"hub {task.hub.path}"
        splits = ", ".join(f"{s} {n}" for s, n in counts[task.name].items())
        print(f"  {task.name:<12} {task.type:<14} {source}: {splits} rows")
    print("all rows read and checked")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from mtdnn.spec import load_spec
    from mtdnn.trainer import train

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    spec = load_spec(args.spec, overrides, tasks=_split_list(args.tasks))
    if spec.stages:
        from mtdnn.continual import train_stages

        if args.resume not in (None, True):
            raise UserError(f"--resume {args.resume}", "a spec with stages resumes each stage "
                                                       "from its own checkpoints: give --resume "
                                                       "without a path")
        train_stages(spec, progress=not args.no_progress, resume=bool(args.resume))
        return 0
    train(spec, progress=not args.no_progress, resume=args.resume or False)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from mtdnn.compare import compare
    from mtdnn.spec import load_spec

    spec = load_spec(args.spec, args.overrides, tasks=_split_list(args.tasks))
    helpers = [x for x in args.helpers.split(",") if x] if args.helpers is not None else None
    result = compare(spec, _split_list(args.targets) or [], helpers=helpers, seeds=args.seeds,
                     routes=_split_list(args.routes), ft_epochs=args.ft_epochs,
                     ft_learning_rate=args.ft_learning_rate, output_dir=args.output_dir,
                     progress=not args.no_progress, keep_checkpoints=args.keep_checkpoints)
    print(f"report: {result.output_dir / 'report.md'} (and report.json, report.png)")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from mtdnn.finetune import finetune_spec
    from mtdnn.trainer import train

    spec = finetune_spec(args.checkpoint, args.task, args.overrides, spec_path=args.spec,
                         fresh_head=args.fresh_head, output_dir=args.output_dir)
    train(spec, progress=not args.no_progress, resume=args.resume or False)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mtdnn.evaluation import evaluate

    results = evaluate(args.checkpoint, tasks=_split_list(args.tasks), split=args.split,
                       data_dir=args.data_dir, batch_size=args.batch_size,
                       trust_remote_code=args.trust_remote_code)
    lines = ["| task | metric | value |", "|---|---|---:|"]
    lines += [f"| {task} | {m} | {100 * v:.2f} |" for task, splits in results.items()
              for m, v in splits[args.split].items()]
    print("\n".join(lines))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from mtdnn.evaluation import predict_file

    single = {"--task": args.task, "--input": args.input, "--output": args.output}
    if args.glue_submission:
        given = [k for k, v in single.items() if v is not None]
        if given:
            raise UserError("--glue-submission", f"predicts every GLUE task of the checkpoint: "
                                                 f"drop {', '.join(given)} (or drop "
                                                 "--glue-submission)")
        return _glue_submission(args)
    missing = [k for k, v in single.items() if v is None]
    if missing:
        raise UserError("predict", f"needs {', '.join(missing)} (one task's predictions), or "
                                   "--glue-submission DIR (the GLUE leaderboard files)")
    if args.data_dir is not None:
        raise UserError("--data-dir", "goes with --glue-submission; --input names the file to "
                                      "predict")
    n = predict_file(args.checkpoint, args.task, args.input, args.output,
                     text_columns=_split_list(args.text_columns), batch_size=args.batch_size,
                     trust_remote_code=args.trust_remote_code)
    print(f"wrote {n} predictions of task {args.task!r} to {args.output}")
    return 0


def _glue_submission(args: argparse.Namespace) -> int:
    from mtdnn.submission import write_glue_submission

    result = write_glue_submission(args.checkpoint, args.glue_submission, data_dir=args.data_dir,
                                   batch_size=args.batch_size,
                                   trust_remote_code=args.trust_remote_code)
    for path in result.files:
        print(f"wrote {path} ({result.rows[path.name]} rows)")
    for task, reason in result.skipped.items():
        print(f"skipped {task}: {reason}")
    if result.missing:
        print(f"not written: {', '.join(result.missing)} (the leaderboard expects every file "
              "in the zip)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from mtdnn.export import export

    out = export(args.checkpoint, args.task, args.output, encoder_only=args.encoder_only,
                 trust_remote_code=args.trust_remote_code)
    what = "the shared encoder" if args.encoder_only else f"task {args.task!r}"
    print(f"exported {what} to {out} (open it with transformers; mtdnn is not needed)")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from mtdnn.hub import push_to_hub

    # No --token option: a token on the command line stays in the shell history; huggingface_hub
    # reads HF_TOKEN or the token saved by `hf auth login`.
    result = push_to_hub(args.checkpoint, args.repo_id, task=args.task, private=args.private,
                         revision=args.revision, dry_run=args.dry_run,
                         staging_dir=args.staging_dir, trust_remote_code=args.trust_remote_code)
    if args.dry_run:
        print(f"staged {result} (dry run: nothing uploaded)")
    else:
        print(f"pushed to {result}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtdnn", description="Multi-task fine-tuning of Transformer encoders (MT-DNN style).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a task spec and read every data row")
    p.add_argument("spec", help="the YAML task spec")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="spec overrides")
    p.add_argument("--tasks", help="comma-separated subset of the spec's tasks")
    p.add_argument("--no-data", action="store_true", help="check the spec only, read no data")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("train", help="train one shared encoder on all tasks of a spec")
    p.add_argument("spec", help="the YAML task spec")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="spec overrides, e.g. train.learning_rate=3e-5 tasks.rte.loss_weight=2")
    p.add_argument("--tasks", help="comma-separated subset of the spec's tasks")
    p.add_argument("--output-dir", help="same as the override output_dir=DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", nargs="?", const=True, metavar="CHECKPOINT",
                   help="continue a stopped run: from its newest checkpoint, or from CHECKPOINT "
                        "(a spec with stages: finished stages are skipped; no CHECKPOINT)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("compare", help="single-task vs multi-task (+ fine-tuning) on target tasks, "
                                        "over seeds, with paired intervals",
                       description="Trains each target alone (single), the targets with the "
                       "helpers (multi), multi's checkpoint fine-tuned per target (multi+ft), and "
                       "single's checkpoint trained for the same extra epochs (single+extra), for "
                       "every seed; then reports paired differences to single with 95%% intervals. "
                       "Finished runs are stored: running it again continues where it stopped.")
    p.add_argument("spec", help="the YAML task spec (its settings apply to every run)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="spec overrides")
    p.add_argument("--targets", required=True, help="comma-separated tasks to compare on")
    p.add_argument("--helpers", help="comma-separated tasks trained in the multi run only "
                                     "(default: every other task of the spec; '' for none)")
    p.add_argument("--tasks", help="comma-separated subset of the spec's tasks")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--routes", default=",".join(("single", "multi", "multi+ft", "single+extra")),
                   help="comma-separated subset of single,multi,multi+ft,single+extra")
    p.add_argument("--ft-epochs", type=float, default=1.0,
                   help="epochs of the fine-tuning stage (and single+extra's extra epochs)")
    p.add_argument("--ft-learning-rate", type=float,
                   help="its learning rate (default: half the spec's)")
    p.add_argument("--output-dir", help="default: <the spec's output_dir>/compare")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep every run's checkpoints (default: only the ones runs start from)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("finetune", help="further fine-tune one task from a multi-task checkpoint")
    p.add_argument("checkpoint", help="a checkpoint directory (e.g. runs/tour/best)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="settings of this run, e.g. train.epochs=3 train.learning_rate=2e-5")
    p.add_argument("--task", required=True, help="the task to fine-tune")
    p.add_argument("--spec", help="a spec defining the task, when the checkpoint lacks it")
    p.add_argument("--fresh-head", action="store_true", help="start the task's head anew")
    p.add_argument("--output-dir", help="default: finetune-TASK beside the checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", nargs="?", const=True, metavar="CHECKPOINT",
                   help="continue a stopped fine-tuning run")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("evaluate", help="score a checkpoint on a labelled split of its tasks")
    p.add_argument("checkpoint", help="a checkpoint directory (e.g. runs/tour/best)")
    p.add_argument("--tasks", help="comma-separated tasks (default: all in the checkpoint)")
    p.add_argument("--split", default="dev", choices=["train", "dev", "test"])
    p.add_argument("--data-dir", help="read local task files from here instead")
    p.add_argument("--batch-size", type=int,
                   help="rows per forward pass (default: the run's train.eval_batch_size)")
    p.add_argument("--output", help="also write the metrics as JSON here")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run code shipped with the checkpoint's encoder (trusted sources only)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="predict with one task's head of a checkpoint")
    p.add_argument("checkpoint", help="a checkpoint directory")
    # --task/--input/--output are required unless --glue-submission is given (checked by
    # _cmd_predict, with a message naming what is missing).
    p.add_argument("--task", help="the task whose head to use")
    p.add_argument("--input", help="TSV/CSV with a header, or JSON lines")
    p.add_argument("--output", help="JSON lines: id, label/score, probabilities")
    p.add_argument("--text-columns", help="comma-separated input columns (default: the task's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--glue-submission", metavar="DIR",
                   help="instead: write the GLUE leaderboard files of every GLUE task here")
    p.add_argument("--data-dir", help="with --glue-submission: read the GLUE files from here")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run code shipped with the checkpoint's encoder (trusted sources only)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="write one task as a plain transformers model")
    p.add_argument("checkpoint", help="a checkpoint directory")
    p.add_argument("--task", help="the task to export (with --encoder-only: fold its task "
                                  "embedding into the encoder)")
    p.add_argument("--output", required=True, help="a new or empty directory")
    p.add_argument("--encoder-only", action="store_true",
                   help="write the shared encoder (AutoModel) and tokenizer, no head")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run code shipped with the checkpoint's encoder (trusted sources only)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("push", help="upload a checkpoint or one exported task to the Hub",
                       description="Uploads a checkpoint (or one task exported for plain "
                       "transformers) with a model card. The token comes from HF_TOKEN or `hf "
                       "auth login`, never from the command line.")
    p.add_argument("checkpoint", help="a checkpoint directory")
    p.add_argument("--repo-id", required=True, help="the model repository, e.g. me/bert-glue")
    p.add_argument("--task", help="push this task exported for plain transformers (default: "
                                  "the whole multi-task checkpoint)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", help="push to this branch (created when missing)")
    p.add_argument("--dry-run", action="store_true", help="stage the folder only, upload nothing")
    p.add_argument("--staging-dir", help="stage here (a new or empty directory) and keep it")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run code shipped with the checkpoint's encoder (with --task; trusted "
                        "sources only)")
    p.set_defaults(func=_cmd_push)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come after options too (`train SPEC --tasks rte lr=1`), which
    # argparse's positional nargs="*" alone does not accept.
    args, extra = parser.parse_known_args(argv)
    stray = [x for x in extra if "=" not in x or x.startswith("-") or
             not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    # Hub libraries print progress and warnings that bury the messages of a run.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import datasets
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()  # "Writing model shards" at each save
        datasets.disable_progress_bars()
        return args.func(args)
    except UserError as e:  # spec, data, checkpoint and command-line mistakes
        print(f"error: {e}", file=sys.stderr)
    except OSError as e:
        if e.filename is None:  # not about a path the user gave: a bug
            return _report_bug()
        # A path the user gave cannot be read or written (permissions, a full disk, a file where
        # a directory was expected).
        print(f"error: {e.filename}: {e.strerror or e} (check the path and its permissions)",
              file=sys.stderr)
    except Exception:
        return _report_bug()
    return EXIT_USER_ERROR


def _report_bug() -> int:
    import traceback

    traceback.print_exc()
    print("\nThis is a bug in mtdnn (not a mistake in your input): please report it to the "
          "mtdnn issue tracker with the traceback above, the command you ran and `pip show "
          "mtdnn torch transformers`.", file=sys.stderr)
    return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
