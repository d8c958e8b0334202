"""Inference and evaluation speed: rows batched by length vs in input order, with the pipeline.

    MTDNN_GLUE_DIR=../shared/data/glue HF_HUB_OFFLINE=1 python scripts/bench_inference.py

The model: MiniLM with an MNLI head, trained for a few steps by mtdnn (kept under --out/model, so
reruns reuse it) and exported with `mtdnn export`; the rows: the first --rows MNLI dev pairs.
Arms, on the same rows and weights, batch 64, alternating over --repeats rounds (medians):

  pipeline            transformers `pipeline("text-classification", batch_size=64)` on the
                      exported model, input order
  mtdnn-input-order   the checkpoint through mtdnn's batch path (its features, collator, model),
                      batches in input order: what `predict` and evaluation did before sorting
  mtdnn-predict       `MultiTaskModel.predict` (batches sorted by length, results in input order)
  mtdnn predict (CLI) the command end to end, process start and model load included (one run)

and dev evaluation (`mtdnn.evaluation.outputs_of`, the function training evaluates with, batch
128) on the full MNLI dev set against the same loop in input order. Rows/s, real tokens/s,
padded tokens (what the batches computed) and the padding share come from the same token counts
for every arm.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

TASK = "mnli"
ARMS = ["pipeline", "mtdnn-input-order", "mtdnn-predict"]


def make_model(glue_dir: str, out: Path, encoder: str) -> tuple[Path, Path]:
    """A small mtdnn MNLI checkpoint and its export (reused when present)."""
    from mtdnn.export import export
    from mtdnn.trainer import train

    checkpoint, exported = out / "model" / "best", out / "exported"
    if not (checkpoint / "mtdnn.json").is_file():
        spec = bc.glue_spec([TASK], [
            f"data_dir={glue_dir}", f"encoder={encoder}", f"output_dir={out / 'model'}",
            "train.max_steps=16", "train.batch_size=32", "train.report_to=[none]",
            f"tasks.{TASK}.max_train_examples=512", f"tasks.{TASK}.max_eval_examples=64"])
        train(spec, progress=False)
    if not (exported / "config.json").is_file():
        export(checkpoint, TASK, exported)
    return checkpoint, exported


def padded_tokens(lengths: list[int], batch_size: int, order: list[int]) -> int:
    """Tokens a run computes when it pads each batch (of `order`) to its longest row."""
    total = 0
    for start in range(0, len(order), batch_size):
        chunk = [lengths[i] for i in order[start:start + batch_size]]
        total += max(chunk) * len(chunk)
    return total


def input_order_outputs(model: Any, dataset: Any, batch_size: int) -> list[Any]:
    """mtdnn's batch path in input order (no sorting): the pre-sorting predict/evaluation."""
    import torch

    from mtdnn.collate import fetch_batch

    kind = model.task_types[TASK]
    collator, columns = kind.collator(model.tokenizer), kind.columns(training=False)
    out: list[Any] = []
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            idx = list(range(start, min(start + batch_size, len(dataset))))
            batch = fetch_batch(dataset, idx, collator, "cpu", columns)
            out += kind.outputs(model(TASK, **batch)["logits"], batch)
    return out


def run_arm(arm: str, model: Any, classifier: Any, pairs: list[tuple[str, str]]
            ) -> tuple[float, list[str]]:
    """Seconds for every row (tokenization included), and the predicted labels."""
    started = time.perf_counter()
    if arm == "pipeline":
        results = classifier([{"text": a, "text_pair": b} for a, b in pairs], batch_size=64,
                             truncation=True)
        labels = [r["label"] for r in results]
    elif arm == "mtdnn-predict":
        labels = [r["label"] for r in model.predict(TASK, pairs, batch_size=64)]
    else:
        kind, info = model.task_types[TASK], model.tasks[TASK]
        examples = kind.examples_from_inputs(info, pairs)
        dataset = kind.features(examples, model.tokenizer, model.max_seq_length,
                                for_training=False, use_cache=False)
        outputs = input_order_outputs(model, dataset, 64)
        preds = kind.predictions(outputs, dataset, examples)
        labels = [r["label"] for r in kind.decode(info, preds, outputs, dataset, examples)]
    return time.perf_counter() - started, labels


def cli_seconds(checkpoint: Path, pairs: list[tuple[str, str]], work: Path) -> float:
    import csv

    rows = work / "rows.tsv"
    with rows.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["sentence1", "sentence2"])
        writer.writerows(pairs)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mtdnn.cli", "predict", str(checkpoint), "--task", TASK,
                    "--input", str(rows), "--output", str(work / "out.jsonl"),
                    "--text-columns", "sentence1,sentence2", "--batch-size", "64"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--glue-dir", default=os.environ.get("MTDNN_GLUE_DIR") or bc.default_glue_dir())
    p.add_argument("--out", default="runs/bench_inference")
    p.add_argument("--rows", type=int, default=2000, help="the first N MNLI dev rows")
    p.add_argument("--eval-rows", type=int, default=0, help="dev rows evaluated (0: all)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--markdown", help="write the report here (it is printed in any case)")
    p.add_argument("--encoder", default=bc.MINILM, help=argparse.SUPPRESS)  # smoke tests
    args = p.parse_args(argv)
    bc.child_env()
    bc.check_glue_dir(args.glue_dir)
    import torch
    from transformers import pipeline

    from mtdnn.checkpoint import read_spec
    from mtdnn.data import read_split
    from mtdnn.evaluation import outputs_of
    from mtdnn.model import MultiTaskModel

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint, exported = make_model(args.glue_dir, out, args.encoder)
    model = MultiTaskModel.from_pretrained(checkpoint)
    classifier = pipeline("text-classification", model=str(exported), device="cpu")
    # the checkpoint's spec limits dev to what its short training evaluated: lift that
    rows_over = [f"tasks.{TASK}.max_eval_examples={args.eval_rows or 'null'}"]
    spec = read_spec(checkpoint, rows_over, data_dir=args.glue_dir)
    dev = read_split(spec, spec.task(TASK), "dev")
    pairs = list(zip(dev.text_a, dev.text_b))[:args.rows]
    kind, info = model.task_types[TASK], model.tasks[TASK]
    features = kind.features(kind.examples_from_inputs(info, pairs), model.tokenizer,
                             model.max_seq_length, for_training=False, use_cache=False)
    lengths = list(features["length"])
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    computed = {"pipeline": padded_tokens(lengths, 64, list(range(len(lengths)))),
                "mtdnn-input-order": padded_tokens(lengths, 64, list(range(len(lengths)))),
                "mtdnn-predict": padded_tokens(lengths, 64, order)}
    seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    labels: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for arm in ARMS:
            s, labels[arm] = run_arm(arm, model, classifier, pairs)
            seconds[arm].append(s)
    cli_s = cli_seconds(checkpoint, pairs, out)

    # dev evaluation: the training loop's function against the same loop in input order
    eval_dev = read_split(spec, spec.task(TASK), "dev")
    eval_pairs = list(zip(eval_dev.text_a, eval_dev.text_b))
    eval_set = kind.features(kind.examples_from_inputs(info, eval_pairs), model.tokenizer,
                             model.max_seq_length, for_training=False, use_cache=False)
    eval_s: dict[str, list[float]] = {"sorted (outputs_of)": [], "input order": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        with torch.inference_mode():
            sorted_out = outputs_of(model, TASK, eval_set, 128)
        eval_s["sorted (outputs_of)"].append(time.perf_counter() - started)
        started = time.perf_counter()
        plain_out = input_order_outputs(model, eval_set, 128)
        eval_s["input order"].append(time.perf_counter() - started)
    eval_diff = max(float(abs(a - b).max()) for a, b in zip(sorted_out, plain_out))
    eval_lengths = list(eval_set["length"])
    eval_order = sorted(range(len(eval_lengths)), key=lambda i: -eval_lengths[i])
    eval_computed = {"sorted (outputs_of)": padded_tokens(eval_lengths, 128, eval_order),
                     "input order": padded_tokens(eval_lengths, 128,
                                                  list(range(len(eval_lengths))))}

    real = sum(lengths)
    rows_table = []
    for arm in ARMS:
        s = bc.median(seconds[arm])
        rows_table.append([arm, len(pairs), s, len(pairs) / s, real / s, computed[arm],
                           100 * (1 - real / computed[arm])])
    rows_table.append(["mtdnn predict (CLI, start-up included, 1 run)", len(pairs), cli_s,
                       len(pairs) / cli_s, real / cli_s, computed["mtdnn-predict"],
                       100 * (1 - real / computed["mtdnn-predict"])])
    base = bc.median(seconds["pipeline"])
    agree = sum(a == b for a, b in zip(labels["pipeline"], labels["mtdnn-predict"]))
    eval_real = sum(eval_lengths)
    eval_table = [[name, len(eval_set), bc.median(v), 1000 * bc.median(v) / len(eval_set),
                   eval_real / bc.median(v), eval_computed[name],
                   100 * (1 - eval_real / eval_computed[name])] for name, v in eval_s.items()]
    m = bc.machine_info()
    text = "\n".join([
        f"Machine: {bc.machine_line(m)}.",
        f"Model: {args.encoder} with an MNLI head (mtdnn checkpoint {checkpoint}, exported to "
        f"{exported}); rows: the first {len(pairs)} MNLI dev (matched) pairs; batch 64; "
        f"medians of {args.repeats} rounds.", "",
        bc.markdown_table(["arm", "rows", "s", "rows/s", "real tok/s", "computed tokens",
                           "pad %"], rows_table), "",
        f"mtdnn-predict / pipeline: {base / bc.median(seconds['mtdnn-predict']):.2f}x rows/s; "
        f"mtdnn-predict / mtdnn-input-order: "
        f"{bc.median(seconds['mtdnn-input-order']) / bc.median(seconds['mtdnn-predict']):.2f}x; "
        f"same labels as the pipeline: {agree}/{len(pairs)}.", "",
        f"Dev evaluation, all {len(eval_set)} MNLI dev (matched) rows, batch 128:", "",
        bc.markdown_table(["order", "rows", "s", "ms/row", "real tok/s", "computed tokens",
                           "pad %"], eval_table), "",
        f"Time per row, input order / sorted: "
        f"{bc.median(eval_s['input order']) / bc.median(eval_s['sorted (outputs_of)']):.2f}x; "
        f"largest output difference between the orders: {eval_diff:.2g}.", ""])
    (out / "report.json").write_text(json.dumps({
        "machine": m, "rows": len(pairs), "seconds": seconds, "cli_s": cli_s,
        "computed": computed, "real_tokens": real, "same_labels": agree, "eval_s": eval_s,
        "eval_rows": len(eval_set), "eval_computed": eval_computed, "eval_real": eval_real,
        "eval_max_diff": eval_diff}, indent=1), encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
