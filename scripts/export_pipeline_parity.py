"""Checks an exported task against the checkpoint it came from, through the transformers pipeline.

Exports one task of an mtdnn checkpoint (`mtdnn export`), runs the first N rows of the task's dev
split through `MultiTaskModel.predict` and through `pipeline("text-classification")` on the
export, and prints how many labels agree and the largest score difference, with and without
`truncation=True` (mtdnn truncates to the run's max_seq_length; the pipeline does not by default).
The README's figure for the tour checkpoint (task_specs/tour.yaml) comes from:

    MTDNN_GLUE_DIR=../shared/data/glue python scripts/export_pipeline_parity.py runs/tour/best \
        --task rte --rows 50
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def parity(checkpoint: str, task: str, rows: int, data_dir: str | None) -> dict[str, dict]:
    from transformers import pipeline

    from mtdnn.checkpoint import load_model, read_spec
    from mtdnn.data import read_split
    from mtdnn.export import export

    model = load_model(checkpoint)
    spec = read_spec(checkpoint, [f"tasks.{task}.max_eval_examples={rows}"], data_dir=data_dir)
    dev = read_split(spec, spec.task(task), "dev")
    pairs = list(zip(dev.text_a, dev.text_b or [None] * len(dev)))
    ours = model.predict(task, [(a, b) if b is not None else a for a, b in pairs])
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        exported = export(checkpoint, task, Path(tmp) / task)
        classifier = pipeline("text-classification", model=exported)
        inputs = [{"text": a, "text_pair": b} if b is not None else a for a, b in pairs]
        for name, kwargs in (("truncation=True", {"truncation": True}), ("no truncation", {})):
            try:
                theirs = [classifier(x, **kwargs) for x in inputs]
            except Exception as e:  # longer than the position table: the model cannot run it
                out[name] = {"error": f"{type(e).__name__}: {str(e)[:120]}"}
                continue
            theirs = [t[0] if isinstance(t, list) else t for t in theirs]
            out[name] = {
                "rows": len(pairs),
                "same_label": sum(o["label"] == t["label"] for o, t in zip(ours, theirs)),
                "max_score_diff": max(abs(o["score"] - t["score"]) for o, t in zip(ours, theirs)),
            }
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="an mtdnn checkpoint, e.g. runs/tour/best")
    p.add_argument("--task", default="rte", help="a classification task of the checkpoint")
    p.add_argument("--rows", type=int, default=50, help="the first N dev rows")
    p.add_argument("--data-dir", default=os.environ.get("MTDNN_GLUE_DIR"),
                   help="where the task files are (default: $MTDNN_GLUE_DIR, else the spec's)")
    args = p.parse_args(argv)
    for name, result in parity(args.checkpoint, args.task, args.rows, args.data_dir).items():
        if "error" in result:
            print(f"{name}: {result['error']}")
        else:
            print(f"{name}: {result['same_label']}/{result['rows']} same labels, max score "
                  f"difference {result['max_score_diff']:.2g}")


if __name__ == "__main__":
    main()
