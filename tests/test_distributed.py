"""Training and evaluation under 2 processes (CPU, gloo) match one process with the same global
batch: mtdnn/trainer.py, mtdnn/sampler.py and mtdnn/evaluation.py on their distributed path.

Ranks are started with `accelerate.debug_launcher`: it forks the pytest process into 2 ranks with
Accelerate's CPU settings and a file rendezvous (no TCP port to collide with other jobs). Not
`accelerate launch --cpu --num_processes 2`, which silently starts ONE process; every test here
checks that 2 distinct processes really ran, in a process group of size 2.
"""

from __future__ import annotations

import faulthandler
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import build_tiny_bert
from safetensors.torch import load_file

from mtdnn.collate import Collator
from mtdnn.evaluation import evaluate_task, logits_of, predictions
from mtdnn.model import MultiTaskModel, load_encoder
from mtdnn.prepare import prepare_tasks, task_info
from mtdnn.spec import Spec, load_spec
from mtdnn.trainer import train

WORLD = 2
B = 4  # examples (or ranking groups) per rank per step; the global batch is 2B = 8
STEPS = 10  # one epoch: rte 32/8 + stsb 32/8 + wikiqa 16 groups/8 = 4 + 4 + 2 global batches
# Every task's training size is a multiple of the global batch, so every batch splits evenly:
# each rank's loss is the mean over B examples, and DDP's average of the two rank means is then
# exactly the mean over the 2B examples that the single process takes. (With an uneven split the
# average of means weighs the smaller share's examples more: not the same gradient.)
# Dev sets are odd-sized (23, 23 and 39 rows) so one rank scores one row more than the other.
SETTINGS = [
    f"train.max_steps={STEPS}", f"train.eval_every={STEPS}", "train.log_every=1",
    "train.learning_rate=1e-3", "train.eval_batch_size=4",
    "tasks.rte.max_train_examples=32", "tasks.stsb.max_train_examples=32",
    "tasks.wikiqa.max_train_examples=8",  # the first 8 questions: 16 listwise groups
    "tasks.rte.max_eval_examples=23", "tasks.stsb.max_eval_examples=23",
    "tasks.wikiqa.max_eval_examples=4",  # 4 questions: 39 candidate rows
    # No dropout anywhere (heads here, encoder in the fixture): both ranks seed the same RNG, so
    # their masks would differ from the single process's mask over the whole batch.
    "tasks.rte.dropout=0", "tasks.stsb.dropout=0", "tasks.wikiqa.dropout=0",
]
# Not bitwise: DDP all-reduces gradient buckets (a sum in another order than one backward pass
# over 2B rows), and each rank pads its own half to its own longest row (other matmul shapes).
# Both are float32 rounding (measured after 10 steps: 6e-7 in the encoder, 1e-8 in the rte and stsb
# heads), far below WEIGHT_ATOL, while training moves the weights by over 100x that (checked).
WEIGHT_ATOL = 1e-5
# The ranking head is looser: its listwise softmax loss is unchanged when all scores of a query
# shift together, so its gradients nearly cancel within each query and what is left is largely
# rounding, which Adam divides by its own size into steps of up to lr (measured: 6e-6).
RANKING_HEAD_ATOL = 1e-4
# The ranking head's last bias only shifts every score: its gradient is 0 up to rounding, which
# Adam still turns into steps of ~lr in a direction set by rounding (1.7e-3 apart here). No
# ranking depends on it, so it is left out; the wikiqa metrics are compared instead.
SHIFT_ONLY = {"heads.wikiqa.out_proj.bias"}
HANG_S = 240  # a rank still running after this long is stuck


@pytest.fixture(scope="module")
def tiny_bert_no_dropout(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: str) -> str:
    """The conftest's tiny random BERT, without dropout (see SETTINGS)."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert-no-dropout"), tiny_tokenizer,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


# --- what runs in each forked rank ---------------------------------------------------------------


def _start_rank() -> None:
    from accelerate.state import AcceleratorState, GradientState

    # A forked child of a process that already ran torch ops on several OpenMP threads hangs in its
    # first parallel op (libgomp is not fork-safe). One thread per rank runs every op inline; the
    # env var keeps Accelerate from raising it back to the core count when it sets up the rank.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    # A hang would otherwise block pytest forever: dump the rank's stack and exit (fails the test).
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    # The pytest process may already hold a single-process Accelerate state (the reference run,
    # or other test files); a forked rank inherits it and would silently run alone.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _record_rank(out: Path, **extra: Any) -> None:
    import torch.distributed as dist
    from accelerate import PartialState

    state = PartialState()
    record = {"pid": os.getpid(), "rank": state.process_index, "world": state.num_processes,
              "dist_world": dist.get_world_size() if dist.is_initialized() else 0,
              "backend": dist.get_backend() if dist.is_initialized() else None, **extra}
    (out / f"rank-{state.process_index}.json").write_text(json.dumps(record), encoding="utf-8")
    faulthandler.cancel_dump_traceback_later()


def _train_rank(spec: Spec, out: Path) -> None:
    _start_rank()
    train(spec, progress=False)
    _record_rank(out)


def _score_rank(checkpoint: Path, spec: Spec, out: Path) -> None:
    import accelerate.utils
    from accelerate import Accelerator

    _start_rank()
    accelerator = Accelerator()
    # Record what each rank scores and what the gather returns (logits_of imports it at call).
    gathered: list[list[int]] = []
    original = accelerate.utils.gather_object

    def recording(obj):
        result = original(obj)
        gathered.append([[i for i, _ in obj], [i for i, _ in result]])
        return result

    accelerate.utils.gather_object = recording
    try:
        results = _score(checkpoint, spec, accelerator)
    finally:
        accelerate.utils.gather_object = original
    _record_rank(out, results=results, gathered=gathered)


def _score(checkpoint: Path, spec: Spec, accelerator: Any = None) -> dict[str, Any]:
    """Every dev task's scores (row order) and metrics; 2 processes when an accelerator is given."""
    model = MultiTaskModel.from_pretrained(checkpoint)
    data = prepare_tasks(spec, model.tokenizer, model.encoder.config, ("dev",))
    collator = Collator(model.tokenizer.pad_token_id)
    return {name: {"scores": predictions(d.info.type, logits_of(
                       model, name, d.dev, 4, accelerator, collator)).tolist(),
                   "metrics": evaluate_task(model, d.info, d.dev, d.dev_rows, accelerator, 4,
                                            collator)}
            for name, d in data.items()}


def _launch(fn, *args: Any, out: Path) -> list[dict[str, Any]]:
    """Runs fn(*args, out) in 2 forked ranks; returns their records, checked to be 2 processes."""
    from accelerate import debug_launcher

    out.mkdir(parents=True, exist_ok=True)
    debug_launcher(fn, args=(*args, out), num_processes=WORLD)  # a rank's exception fails here
    records = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(WORLD)]
    assert [(r["rank"], r["world"], r["dist_world"], r["backend"]) for r in records] == \
        [(0, 2, 2, "gloo"), (1, 2, 2, "gloo")]
    assert len({r["pid"] for r in records} | {os.getpid()}) == WORLD + 1
    return records


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    return {**load_file(str(directory / "model.safetensors")),
            **load_file(str(directory / "heads.safetensors"))}


def _log(out: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"}
            for line in (out / "train_log.jsonl").read_text().splitlines()]


# --- tests ---------------------------------------------------------------------------------------


def test_two_processes_train_the_weights_of_one_with_the_same_global_batch(
        tiny_glue_spec, tiny_bert_no_dropout: str, tmp_path: Path):
    spec_path = tiny_glue_spec(tasks="[rte, stsb, wikiqa]", steps=STEPS)
    common = [*SETTINGS, f"encoder={tiny_bert_no_dropout}"]
    one = tmp_path / "one"
    # wikiqa: B listwise groups per process too (its default would be batch_size // 8 groups)
    train(load_spec(spec_path, [*common, f"output_dir={one}", f"train.batch_size={WORLD * B}",
                                f"tasks.wikiqa.batch_size={WORLD * B}"]),
          progress=False)
    two = tmp_path / "two"
    _launch(_train_rank, load_spec(spec_path, [*common, f"output_dir={two}",
                                               f"train.batch_size={B}",
                                               f"tasks.wikiqa.batch_size={B}"]),
            out=tmp_path / "ranks")

    ta, tb = _tensors(one / "best"), _tensors(two / "best")
    assert ta.keys() == tb.keys()
    diff = {k: (ta[k] - tb[k]).abs().max().item() for k in ta if k not in SHIFT_ONLY}
    ranking = max(v for k, v in diff.items() if k.startswith("heads.wikiqa."))
    rest = max(v for k, v in diff.items() if not k.startswith("heads.wikiqa."))
    init = load_file(str(Path(tiny_bert_no_dropout) / "model.safetensors"))
    moved = max((ta[k] - init[k]).abs().max().item() for k in init if k in ta)
    print(f"max abs weight difference, 1 vs 2 processes: {rest:.3g} (ranking head {ranking:.3g}); "
          f"moved by training: {moved:.3g}")
    assert rest < WEIGHT_ATOL and ranking < RANKING_HEAD_ATOL
    assert moved > 100 * WEIGHT_ATOL

    # The same dev results: classification and ranking metrics exactly. Pearson over the tiny
    # model's barely spread stsb scores magnifies their ~1e-7 differences (1e-5 here).
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert ma["best_step"] == mb["best_step"] == STEPS
    assert ma["tasks"].keys() == mb["tasks"].keys() == {"rte", "stsb", "wikiqa"}
    assert mb["tasks"]["rte"] == ma["tasks"]["rte"]
    assert mb["tasks"]["wikiqa"] == ma["tasks"]["wikiqa"]
    assert mb["tasks"]["stsb"]["dev"] == pytest.approx(ma["tasks"]["stsb"]["dev"], abs=1e-4)
    # The same task at every step, the same learning rate, and the same loss (the mean over the
    # global batch, so averaged over ranks).
    la, lb = ([r for r in _log(d) if "score" not in r] for d in (one, two))
    assert [sorted(r) for r in la] == [sorted(r) for r in lb] and len(la) == STEPS
    for ra, rb in zip(la, lb, strict=True):
        assert rb == pytest.approx(ra, rel=1e-5), ra["step"]


def test_evaluation_under_two_processes_scores_every_row_exactly_once(
        tiny_glue_spec, tiny_bert: str, tmp_path: Path):
    from transformers import AutoTokenizer

    spec = load_spec(tiny_glue_spec(tasks="[rte, stsb, wikiqa]"), SETTINGS)
    # The tiny BERT with random heads, as a checkpoint. Heads drawn with std 1 (not the usual
    # 0.02) make the scores of different rows differ far beyond rounding.
    torch.manual_seed(1)
    model = MultiTaskModel(load_encoder(tiny_bert), [task_info(t) for t in spec.tasks])
    for p in model.heads.parameters():
        torch.nn.init.normal_(p)
    model.save_pretrained(tmp_path / "ckpt", tokenizer=AutoTokenizer.from_pretrained(tiny_bert),
                          extra={"max_seq_length": spec.max_seq_length})

    reference = _score(tmp_path / "ckpt", spec)
    records = _launch(_score_rank, tmp_path / "ckpt", spec, out=tmp_path / "ranks")
    sizes = {"rte": 23, "stsb": 23, "wikiqa": 39}
    assert {t: len(r["scores"]) for t, r in reference.items()} == sizes
    # Row by row: class ids exactly; scores to float32 rounding, as each rank batches other rows
    # together, with other padding, on one thread (measured: 1.5e-7 relative). The random encoder's
    # scores differ little between rows (0.2% of their size), which magnifies that rounding in
    # the correlation metrics (measured: 2e-6). Still, a row lost, doubled or misplaced would
    # typically move a score by ~1e-3 relative and a metric of 23-39 rows by ~1e-2; the gathered
    # indices are checked exactly below.
    worst = 0.0
    for record in records:  # every rank holds the whole gathered result
        assert record["results"].keys() == sizes.keys()
        assert record["results"]["rte"] == reference["rte"]
        for task in ("stsb", "wikiqa"):
            got, ref = record["results"][task], reference[task]
            assert got["scores"] == pytest.approx(ref["scores"], rel=1e-5), task
            assert got["metrics"] == pytest.approx(ref["metrics"], abs=1e-4), task
            worst = max(worst, *(abs(a - b) / abs(b) for a, b in zip(got["scores"], ref["scores"],
                                                                     strict=True)))
    print(f"max relative score difference, 1 vs 2 processes: {worst:.3g}")
    # What each rank scored and what the gathers returned: 6 calls per rank (score_rows, then
    # evaluate_task, for 3 tasks), each with disjoint halves of the rows (the odd one out on rank
    # 0), together every row exactly once.
    calls = [record["gathered"] for record in records]
    assert len(calls[0]) == len(calls[1]) == 2 * len(sizes)
    ns = [n for n in sizes.values() for _ in range(2)]
    for (mine, everyone), (theirs, everyone_too), n in zip(*calls, ns, strict=True):
        assert (len(mine), len(theirs)) == ((n + 1) // 2, n // 2)
        assert sorted(mine + theirs) == sorted(everyone) == sorted(everyone_too) == list(range(n))


def test_processes_that_do_not_form_a_group_are_refused(tiny_glue_spec, tmp_path: Path):
    """torchrun on a CPU-only machine without ACCELERATE_USE_CPU=1: two processes that Accelerate
    does not join into a group would train side by side into one output_dir."""
    import subprocess
    import sys

    spec = tiny_glue_spec(tasks="[rte]", steps=2)
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "-m", "mtdnn.cli", "train", str(spec), "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode != 0
    message = ("error: accelerate launch: 1 problem(s):\n  - 2 processes were launched but "
               "Accelerate sees 1: on a CPU-only machine set ACCELERATE_USE_CPU=1 (see the "
               "README, multi-process training)")
    assert proc.stderr.count(message) == 2  # each process says so, and none trains
    # torchrun prints a traceback of its own for failed children; none comes from mtdnn.
    assert "mtdnn/trainer.py" not in proc.stderr and "ChildFailedError" in proc.stderr
    assert not (tmp_path / "run").exists()
