"""The speed levers mtdnn does not pull on CPU, measured (BENCHMARKS.md "Levers"): SDPA against
transformers' eager attention, `torch.compile`, and `pad_to_multiple_of=8`.

    MTDNN_GLUE_DIR=../shared/data/glue python scripts/probe_levers.py        # ~10 min, 2 cores
    python scripts/probe_levers.py --steps 4 --rounds 1 --encoder TINY_DIR   # smoke run

Each variant trains the same encoder (the bundled all-MiniLM-L6-v2) with a linear head on the
first token, fused AdamW, on the same batches: MNLI training pairs, 32 a batch, in a fixed random
order with no length grouping (so about half the computed tokens are pads), each batch padded to
its longest row. The variants run one after another in every round, in a rotated order, each from
the same initial weights; a round times `--warmup` steps (compilation included) and then `--steps`
steady steps. Reported per variant: the median over rounds of real (non-pad) tokens per second in
the steady steps, and the warm-up seconds beyond the SDPA variant's (what compilation costs before
the first steps).
This measures the encoder's step alone, not mtdnn's loop; it is the question the levers ask.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

VARIANTS = {
    "sdpa": "SDPA attention (transformers' default), eager PyTorch",
    "eager-attention": "transformers' eager attention implementation",
    "compile": "SDPA, `torch.compile(model, dynamic=True)` (inductor)",
    "pad8": "SDPA, batches padded to a multiple of 8",
}


def batches(glue_dir: str, encoder: str, count: int, batch_size: int, max_len: int
            ) -> list[list[list[int]]]:
    """`count` batches of token ids (unpadded rows) of MNLI training pairs, a fixed order."""
    import random

    from transformers import AutoTokenizer

    from mtdnn.data import read_split
    from mtdnn.model import resolve_encoder

    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(encoder))
    spec = bc.glue_spec(["mnli"], [f"data_dir={glue_dir}", f"encoder={encoder}"])
    split = read_split(spec, spec.task("mnli"), "train")
    rows = list(zip(split.text_a, split.text_b, strict=True))
    random.Random(0).shuffle(rows)
    rows = rows[:count * batch_size]
    ids = tokenizer([r[0] for r in rows], [r[1] for r in rows], truncation=True,
                    max_length=max_len)["input_ids"]
    return [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)]


def pad(batch: list[list[int]], multiple: int) -> tuple[Any, Any]:
    import torch

    length = max(len(r) for r in batch)
    length = -(-length // multiple) * multiple
    ids = torch.zeros(len(batch), length, dtype=torch.long)
    mask = torch.zeros(len(batch), length, dtype=torch.long)
    for i, row in enumerate(batch):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return ids, mask


def run_variant(variant: str, encoder: str, data: list[list[list[int]]], warmup: int,
                seed: int) -> dict[str, float]:
    import torch
    from transformers import AutoModel

    from mtdnn.model import resolve_encoder

    torch.manual_seed(seed)
    attention = "eager" if variant == "eager-attention" else "sdpa"
    model = AutoModel.from_pretrained(resolve_encoder(encoder), attn_implementation=attention)
    head = torch.nn.Linear(model.config.hidden_size, 3)
    params = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-5, fused=True)
    forward = torch.compile(model, dynamic=True) if variant == "compile" else model
    multiple = 8 if variant == "pad8" else 1
    model.train()
    labels = torch.zeros(len(data[0]), dtype=torch.long)

    def step(batch: list[list[int]]) -> None:
        ids, mask = pad(batch, multiple)
        hidden = forward(input_ids=ids, attention_mask=mask).last_hidden_state
        loss = torch.nn.functional.cross_entropy(head(hidden[:, 0]), labels[:len(batch)])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    started = time.perf_counter()
    for batch in data[:warmup]:
        step(batch)
    warm = time.perf_counter() - started
    started = time.perf_counter()
    for batch in data[warmup:]:
        step(batch)
    steady = time.perf_counter() - started
    tokens = sum(len(r) for batch in data[warmup:] for r in batch)
    return {"warmup_s": warm, "steady_s": steady, "real_tokens": tokens,
            "tokens_per_s": tokens / steady}


def report(results: dict[str, list[dict[str, float]]], machine: dict[str, Any],
           args: argparse.Namespace) -> str:
    base = statistics.median(r["tokens_per_s"] for r in results["sdpa"])
    base_warm = statistics.median(r["warmup_s"] for r in results["sdpa"])
    rows = []
    for variant, runs in results.items():
        rate = statistics.median(r["tokens_per_s"] for r in runs)
        warm = statistics.median(r["warmup_s"] for r in runs)
        rows.append([f"`{variant}`", VARIANTS[variant], f"{rate:,.0f}",
                     " / ".join(f"{r['tokens_per_s']:,.0f}" for r in runs),
                     f"{rate / base:.2f}x", f"{warm - base_warm:+.1f}"])
    table = bc.markdown_table(["variant", "what", "real tok/s (median)", "per round",
                               "vs sdpa", "warm-up s vs sdpa"], rows)
    return (f"# Speed levers on this machine\n\n{bc.machine_line(machine)}\n\n"
            f"`{bc.command_line()}`: {args.rounds} rounds, {args.warmup} warm-up + {args.steps} "
            f"steady steps a variant and round, batch {args.batch_size}, MNLI pairs up to "
            f"{args.max_len} tokens in a random order, each batch padded to its longest row.\n\n"
            f"{table}\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--glue-dir", default=os.environ.get("MTDNN_GLUE_DIR") or bc.default_glue_dir())
    p.add_argument("--encoder", default=bc.MINILM)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"from {', '.join(VARIANTS)}")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=8, help="steps before the timed ones")
    p.add_argument("--steps", type=int, default=24, help="timed steps per variant and round")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--out", default="runs/probe_levers")
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or "sdpa" not in variants:
        sys.exit(f"--variants: {unknown or 'sdpa missing'}; choose from {list(VARIANTS)} "
                 "(sdpa, the reference, included)")
    bc.child_env()
    bc.check_glue_dir(args.glue_dir)
    data = batches(args.glue_dir, args.encoder, args.warmup + args.steps, args.batch_size,
                   args.max_len)
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for variant in order:
            results[variant].append(run_variant(variant, args.encoder, data, args.warmup, 1))
            print(f"round {r + 1} {variant}: {results[variant][-1]['tokens_per_s']:,.0f} tok/s",
                  flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = bc.machine_info()
    (out / "levers.json").write_text(json.dumps({"machine": machine, "args": vars(args),
                                                 "results": results}, indent=2))
    text = report(results, machine, args)
    (out / "levers.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
