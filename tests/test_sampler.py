"""Tests of the multi-task batch sampler (fast: no model, no data)."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import numpy as np
import pytest
import torch

from mtdnn.sampler import STRATEGIES, MultiTaskBatchSampler, TaskBatch

SIZES = {"a": 103, "b": 40, "c": 7}


def by_task(batches: list[TaskBatch]) -> dict[str, list[list[int]]]:
    out: dict[str, list[list[int]]] = {}
    for b in batches:
        out.setdefault(b.task, []).append(b.indices)
    return out


def padding(batches: list[TaskBatch], lengths: dict[str, np.ndarray]) -> int:
    total = 0
    for b in batches:
        lens = lengths[b.task][b.indices]
        total += int(lens.max()) * len(lens) - int(lens.sum())
    return total


# --- proportional ------------------------------------------------------------------------------


def test_proportional_covers_every_example_once():
    s = MultiTaskBatchSampler(SIZES, batch_size=8, seed=3)
    batches = list(s)
    assert len(batches) == len(s) == sum(math.ceil(n / 8) for n in SIZES.values())
    groups = by_task(batches)
    for name, n in SIZES.items():
        assert len(groups[name]) == math.ceil(n / 8)
        flat = [i for idx in groups[name] for i in idx]
        assert sorted(flat) == list(range(n))
        assert Counter(len(idx) for idx in groups[name])[8] >= len(groups[name]) - 1
        assert len(groups[name]) / len(batches) == s.task_probabilities()[name]
    # The tasks are interleaved, not run one after another.
    assert [b.task for b in batches] != sorted(b.task for b in batches)


def test_drop_last_and_no_shuffle():
    s = MultiTaskBatchSampler(SIZES, batch_size=8, drop_last=True)
    groups = by_task(list(s))
    for name, n in SIZES.items():
        assert len(groups.get(name, [])) == n // 8
        assert all(len(idx) == 8 for idx in groups.get(name, []))
    assert "c" not in groups and s.task_probabilities()["c"] == 0.0
    groups = by_task(list(MultiTaskBatchSampler(SIZES, batch_size=8, shuffle=False)))
    for name, n in SIZES.items():
        assert [i for idx in groups[name] for i in idx] == list(range(n))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="'bogus'.*proportional, uniform, temperature"):
        MultiTaskBatchSampler(SIZES, 8, strategy="bogus")
    with pytest.raises(ValueError, match="rank"):
        MultiTaskBatchSampler(SIZES, 8, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="batch_size"):
        MultiTaskBatchSampler(SIZES, 0)
    with pytest.raises(ValueError, match="examples_cap"):
        MultiTaskBatchSampler(SIZES, 8, examples_cap=0)
    with pytest.raises(ValueError, match="each once"):
        MultiTaskBatchSampler([("a", 3), ("a", 4)], 8)
    with pytest.raises(ValueError, match="needs `lengths`"):
        MultiTaskBatchSampler(SIZES, 8, group_by_length=True)
    with pytest.raises(ValueError, match="lengths\\['a'\\]"):
        MultiTaskBatchSampler(SIZES, 8, group_by_length=True, lengths={"a": [1, 2]})


# --- uniform and temperature -------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [{"a": 200, "b": 30, "c": 5}, {"a": 97, "b": 13, "c": 4, "d": 1}])
def test_uniform_equal_shares_and_repeats_small_tasks(sizes):
    s = MultiTaskBatchSampler(sizes, batch_size=4, strategy="uniform", seed=1)
    batches = list(s)
    assert len(batches) == sum(math.ceil(n / 4) for n in sizes.values())
    counts = Counter(b.task for b in batches)
    for name in sizes:
        assert abs(counts[name] - len(batches) / len(sizes)) <= 1
    # Each pass of a repeated task is a full shuffled pass over its examples.
    small = min(sizes, key=sizes.get)
    groups = by_task(batches)[small]
    per_pass = math.ceil(sizes[small] / 4)
    for p in range(len(groups) // per_pass):
        flat = [i for idx in groups[p * per_pass:(p + 1) * per_pass] for i in idx]
        assert sorted(flat) == list(range(sizes[small]))


@pytest.mark.parametrize("temperature,cap", [(1.0, None), (2.0, None), (1e6, None), (1.0, 100)])
def test_temperature_shares_match_formula(temperature, cap):
    sizes = {"a": 1000, "b": 100, "c": 10}
    s = MultiTaskBatchSampler(sizes, batch_size=1, strategy="temperature",
                              temperature=temperature, examples_cap=cap, seed=5)
    w = {k: min(n, cap or n) ** (1 / temperature) for k, n in sizes.items()}
    expected = {k: v / sum(w.values()) for k, v in w.items()}
    assert s.task_probabilities() == pytest.approx(expected, abs=1e-12)
    counts: Counter[str] = Counter()
    for _ in range(20):  # 20 epochs x 1110 steps
        counts.update(b.task for b in s)
    steps = sum(counts.values())
    assert steps == 20 * len(s)
    for name in sizes:
        assert abs(counts[name] / steps - expected[name]) < 0.02
    if cap is not None:  # the cap makes "a" and "b" equally likely
        assert abs(counts["a"] - counts["b"]) / steps < 0.03


def test_temperature_small_temperature_does_not_overflow():
    s = MultiTaskBatchSampler({"a": 10**6, "b": 10}, 4, strategy="temperature", temperature=0.01)
    assert s.task_probabilities() == pytest.approx({"a": 1.0, "b": 0.0})


# --- determinism and resuming ------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_determinism_and_no_global_rng(strategy):
    def run(global_seed: int, **kw) -> list[TaskBatch]:
        torch.manual_seed(global_seed)
        random.seed(global_seed)
        np.random.seed(global_seed)
        s = MultiTaskBatchSampler(SIZES, 8, strategy=strategy, **kw)
        return list(s)

    base = run(0, seed=7)
    assert run(123, seed=7) == base
    assert run(0, seed=8) != base
    s = MultiTaskBatchSampler(SIZES, 8, strategy=strategy, seed=7)
    s.set_epoch(1)
    epoch1 = list(s)
    assert epoch1 != base and [b.task for b in epoch1] != [b.task for b in base]
    # Iterating leaves the global generators alone.
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state()
    list(MultiTaskBatchSampler(SIZES, 8, strategy=strategy))
    assert (np.random.get_state()[1] == np_state).all()
    assert torch.equal(torch.get_rng_state(), torch_state)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_epochs_advance_automatically(strategy):
    s = MultiTaskBatchSampler(SIZES, 8, strategy=strategy, seed=2)
    first, second = list(s), list(s)
    assert s.state_dict()["epoch"] == 2 and s.state_dict()["position"] == 0
    ref = MultiTaskBatchSampler(SIZES, 8, strategy=strategy, seed=2)
    ref.set_epoch(1)
    assert second == list(ref) and first != second


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("k", [0, 5, 18, 19, 22])  # 19 = len: exactly at the epoch boundary
def test_resume_matches_uninterrupted_run(strategy, k):
    def make() -> MultiTaskBatchSampler:
        return MultiTaskBatchSampler(SIZES, 8, strategy=strategy, seed=11)

    uninterrupted = make()
    full = list(uninterrupted) + list(uninterrupted)  # epochs 0 and 1
    assert len(uninterrupted) == 19
    s = make()
    it = iter(s)
    head = []
    for _ in range(k):
        try:
            head.append(next(it))
        except StopIteration:  # the first epoch is done: move on to the second
            it = iter(s)
            head.append(next(it))
    state = json.loads(json.dumps(s.state_dict()))  # survives a JSON round trip
    assert (state["epoch"], state["position"]) == divmod(k, 19)
    fresh = make()
    fresh.load_state_dict(state)
    rest = list(fresh)
    if state["epoch"] == 0:
        rest += list(fresh)
    assert head + rest == full


@pytest.mark.parametrize("change", [
    {"seed": 1}, {"strategy": "uniform"}, {"batch_size": 4}, {"num_replicas": 2},
    {"task_sizes": {"a": 103, "b": 41, "c": 7}}, {"task_sizes": {"b": 40, "a": 103, "c": 7}},
])
def test_load_state_dict_rejects_other_config(change):
    kw = {"task_sizes": SIZES, "batch_size": 8, "seed": 0, "strategy": "proportional"}
    state = MultiTaskBatchSampler(**kw).state_dict()
    other = MultiTaskBatchSampler(**{**kw, **change})
    key = next(iter(change))
    with pytest.raises(ValueError, match=f"cannot resume.*{key}="):
        other.load_state_dict(state)


def test_load_state_dict_rejects_bad_state():
    s = MultiTaskBatchSampler(SIZES, 8)
    with pytest.raises(ValueError, match="missing keys"):
        s.load_state_dict({"epoch": 0, "position": 0})
    with pytest.raises(ValueError, match="position=99"):
        s.load_state_dict({**s.state_dict(), "position": 99})


# --- distributed -------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("replicas", [2, 3])
def test_distributed_ranks_share_tasks_and_split_chunks(strategy, replicas):
    sizes, bs = {"a": 50, "b": 13, "c": 2}, 4
    glob = list(MultiTaskBatchSampler(sizes, bs * replicas, strategy=strategy, seed=4))
    ranks = [list(MultiTaskBatchSampler(sizes, bs, strategy=strategy, seed=4,
                                        num_replicas=replicas, rank=r)) for r in range(replicas)]
    assert all(len(r) == len(glob) for r in ranks)
    seen = {name: Counter() for name in sizes}
    pads = dict.fromkeys(sizes, 0)
    for step, chunk in enumerate(glob):
        parts = [r[step] for r in ranks]
        assert all(p.task == chunk.task for p in parts)
        assert all(1 <= len(p.indices) <= bs for p in parts)
        assert max(len(p.indices) for p in parts) - min(len(p.indices) for p in parts) <= 1
        union = [i for p in parts for i in p.indices]
        if len(chunk.indices) >= replicas:
            assert sorted(union) == sorted(chunk.indices)  # exactly once
        else:  # documented padding: repeats from the start of the chunk
            assert set(union) == set(chunk.indices) and len(union) == replicas
            pads[chunk.task] += replicas - len(chunk.indices)
        seen[chunk.task].update(union)
    if strategy == "proportional":  # one pass per task: each example once, plus padding
        for name, n in sizes.items():
            assert set(seen[name]) == set(range(n))
            assert sum(seen[name].values()) == n + pads[name]
        assert pads["c"] == replicas - 2


def test_global_indices_address_a_concatenation():
    s = MultiTaskBatchSampler(SIZES, 8)
    offsets = {"a": 0, "b": 103, "c": 143}
    for b in s:
        assert s.global_indices(b) == [offsets[b.task] + i for i in b.indices]


# --- length grouping ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("replicas", [1, 2])
def test_group_by_length_keeps_schedule_and_reduces_padding(strategy, replicas):
    sizes = {"a": 2000, "b": 500, "c": 30}
    rng = np.random.default_rng(0)
    lengths = {k: rng.integers(5, 200, size=n) for k, n in sizes.items()}
    kw = {"strategy": strategy, "seed": 9, "num_replicas": replicas}
    plain = [list(MultiTaskBatchSampler(sizes, 8, rank=r, **kw)) for r in range(replicas)]
    grouped = [list(MultiTaskBatchSampler(sizes, 8, rank=r, lengths=lengths, group_by_length=True,
                                          **kw)) for r in range(replicas)]
    for p, g in zip(plain, grouped, strict=True):
        assert [b.task for b in p] == [b.task for b in g]
    if strategy == "proportional":  # still one pass over every task, split across the ranks
        for name, n in sizes.items():
            flat = [i for r in grouped for idx in by_task(r)[name] for i in idx]
            assert sorted(flat) == list(range(n))
    before = sum(padding(p, lengths) for p in plain)
    after = sum(padding(g, lengths) for g in grouped)
    assert after < 0.5 * before


def test_per_task_batch_sizes():
    s = MultiTaskBatchSampler({"pairs": 50, "groups": 10}, {"pairs": 8, "groups": 3}, seed=3)
    batches = list(s)
    sizes = {"pairs": [], "groups": []}
    for b in batches:
        sizes[b.task].append(len(b.indices))
    assert sorted(sizes["pairs"]) == [2] + [8] * 6  # ceil(50 / 8) = 7 batches
    assert sorted(sizes["groups"]) == [1] + [3] * 3  # ceil(10 / 3) = 4 batches
    assert len(s) == 11
    with pytest.raises(ValueError, match="batch_size must name every task once"):
        MultiTaskBatchSampler({"a": 5, "b": 5}, {"a": 2})
    resumed = MultiTaskBatchSampler({"pairs": 50, "groups": 10}, {"pairs": 8, "groups": 3}, seed=3)
    resumed.load_state_dict({**s.state_dict(), "epoch": 0, "position": 5})
    assert list(resumed) == batches[5:]
