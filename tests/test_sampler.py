"""Tests of the multi-task batch sampler (fast: no model, no data)."""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from itertools import islice

import numpy as np
import pytest
import torch

from mtdnn import methods
from mtdnn.sampler import STRATEGIES, MultiTaskBatchSampler, TaskBatch
from mtdnn.schedules import Annealed, MainRatio, Proportional, Schedule, Temperature, Uniform

SIZES = {"a": 103, "b": 40, "c": 7}
# What the strategies that need more than a name get in the tests run for every strategy. With
# SIZES and batch size 8, main_ratio's epoch is 13 + round(0.46 * 13) = 19 steps, as the others'.
EXTRA = {"main_ratio": {"main_task": "a", "main_ratio": 0.46}, "annealed": {"anneal_steps": 50}}


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
    # Every strategy's settings are checked whatever the strategy: the state records them all.
    for kw, got in (({"temperature": 0}, "0, 0"), ({"temperature": 2, "seed": -1}, "2, -1")):
        with pytest.raises(ValueError, match=re.escape(
                f"need temperature > 0 and seed >= 0, got {got}")):
            MultiTaskBatchSampler(SIZES, 8, **kw)


def test_strategies_are_the_registered_schedule_classes():
    assert STRATEGIES == methods.names("sampler")
    classes = {"proportional": Proportional, "uniform": Uniform, "temperature": Temperature,
               "main_ratio": MainRatio, "annealed": Annealed}
    assert methods.registry("sampler") == classes
    assert all(issubclass(cls, Schedule) for cls in classes.values())


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
        s = MultiTaskBatchSampler(SIZES, 8, strategy=strategy, **EXTRA.get(strategy, {}), **kw)
        return list(s)

    base = run(0, seed=7)
    assert run(123, seed=7) == base
    assert run(0, seed=8) != base
    s = MultiTaskBatchSampler(SIZES, 8, strategy=strategy, seed=7, **EXTRA.get(strategy, {}))
    s.set_epoch(1)
    epoch1 = list(s)
    assert epoch1 != base and [b.task for b in epoch1] != [b.task for b in base]
    # Iterating leaves the global generators alone.
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state()
    list(MultiTaskBatchSampler(SIZES, 8, strategy=strategy, **EXTRA.get(strategy, {})))
    assert (np.random.get_state()[1] == np_state).all()
    assert torch.equal(torch.get_rng_state(), torch_state)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_epochs_advance_automatically(strategy):
    s = MultiTaskBatchSampler(SIZES, 8, strategy=strategy, seed=2, **EXTRA.get(strategy, {}))
    first, second = list(s), list(s)
    assert s.state_dict()["epoch"] == 2 and s.state_dict()["position"] == 0
    ref = MultiTaskBatchSampler(SIZES, 8, strategy=strategy, seed=2, **EXTRA.get(strategy, {}))
    ref.set_epoch(1)
    assert second == list(ref) and first != second


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("k", [0, 5, 18, 19, 22])  # 19 = len: exactly at the epoch boundary
def test_resume_matches_uninterrupted_run(strategy, k):
    def make() -> MultiTaskBatchSampler:
        return MultiTaskBatchSampler(SIZES, 8, strategy=strategy, seed=11,
                                     **EXTRA.get(strategy, {}))

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
    extra = EXTRA.get(strategy, {})
    glob = list(MultiTaskBatchSampler(sizes, bs * replicas, strategy=strategy, seed=4, **extra))
    ranks = [list(MultiTaskBatchSampler(sizes, bs, strategy=strategy, seed=4, **extra,
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
    kw = {"strategy": strategy, "seed": 9, "num_replicas": replicas, **EXTRA.get(strategy, {})}
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


def test_grouping_some_tasks_only_is_part_of_the_resumable_plan():
    """Tasks left out of `lengths` keep random batches; which tasks are grouped is part of the
    plan a saved state must match, and a state saved before per-task grouping (no
    `grouped_tasks` key) meant every task or none."""
    sizes = {"a": 400, "b": 400}
    rng = np.random.default_rng(1)
    lengths = {k: rng.integers(5, 200, size=n) for k, n in sizes.items()}
    plain = by_task(list(MultiTaskBatchSampler(sizes, 8, seed=2)))
    only_a = MultiTaskBatchSampler(sizes, 8, seed=2, lengths={"a": lengths["a"]},
                                   group_by_length=True)
    mixed = by_task(list(only_a))
    assert mixed["b"] == plain["b"]  # b: exactly the ungrouped batches
    assert mixed["a"] != plain["a"]
    spread = {k: np.mean([np.ptp(lengths["a"][idx]) for idx in v["a"]])
              for k, v in (("plain", plain), ("mixed", mixed))}
    assert spread["mixed"] < 0.5 * spread["plain"]
    state = json.loads(json.dumps(only_a.state_dict()))
    assert state["grouped_tasks"] == ["a"]
    both = MultiTaskBatchSampler(sizes, 8, seed=2, lengths=lengths, group_by_length=True)
    with pytest.raises(ValueError, match=r"cannot resume.*grouped_tasks=\['a'\] but this "
                                         r"sampler has grouped_tasks=\['a', 'b'\]"):
        both.load_state_dict(state)
    old = {k: v for k, v in both.state_dict().items() if k != "grouped_tasks"}
    both.load_state_dict(old)  # grouped every task: matches
    with pytest.raises(ValueError, match="grouped_tasks"):
        only_a.load_state_dict(old)
    old_plain = {k: v for k, v in MultiTaskBatchSampler(sizes, 8, seed=2).state_dict().items()
                 if k != "grouped_tasks"}
    MultiTaskBatchSampler(sizes, 8, seed=2).load_state_dict(old_plain)


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


# --- main_ratio --------------------------------------------------------------------------------

# Batch size 8: "main" has 10 batches, the auxiliary tasks 15 and 5 (20 in all).
MAIN = {"x": 120, "main": 80, "y": 40}


def main_ratio(ratio: float, **kw) -> MultiTaskBatchSampler:
    return MultiTaskBatchSampler(MAIN, 8, strategy="main_ratio", main_task="main",
                                 main_ratio=ratio, **kw)


@pytest.mark.parametrize("ratio,aux", [(0.5, 5), (1.37, 14), (2.0, 20), (3.5, 35)])
def test_main_ratio_runs_every_main_batch_once_plus_round_ratio_aux_batches(ratio, aux):
    s = main_ratio(ratio, seed=3)
    assert aux == round(ratio * 10)
    assert len(s) == 10 + aux
    for epoch in range(3):
        batches = list(s)
        assert len(batches) == len(s)
        groups = by_task(batches)
        assert sorted(i for idx in groups["main"] for i in idx) == list(range(80))
        assert len(groups.get("x", [])) + len(groups.get("y", [])) == aux
        for name, n, nb in (("x", 120, 15), ("y", 40, 5)):
            # Beyond its batches a task starts a new pass: each pass covers its examples once.
            got = groups.get(name, [])
            full, rest = divmod(len(got), nb)
            for p in range(full):
                flat = [i for idx in got[p * nb:(p + 1) * nb] for i in idx]
                assert sorted(flat) == list(range(n)), (epoch, name, p)
            flat = [i for idx in got[full * nb:] for i in idx]
            assert len(set(flat)) == len(flat) == min(8 * rest, n)
        if aux >= 20:  # every auxiliary batch once (twice is the most when aux < 40)
            assert len(groups["x"]) >= 15 and len(groups["y"]) >= 5
    # The main batches are spread over the epoch, not run as a block.
    tasks = [b.task for b in batches]
    assert tasks != sorted(tasks, key=lambda t: t != "main")
    probs = s.task_probabilities()
    assert probs == pytest.approx({"main": 10 / (10 + aux), "x": aux * 15 / 20 / (10 + aux),
                                   "y": aux * 5 / 20 / (10 + aux)}, abs=1e-12)
    assert sum(probs.values()) == pytest.approx(1.0)


def test_main_ratio_with_every_aux_batch_is_exactly_proportional():
    # A = 20 = all the auxiliary batches: each auxiliary batch once, as under proportional.
    s = main_ratio(2.0, seed=5)
    groups = by_task(list(s))
    assert {k: len(v) for k, v in groups.items()} == {"main": 10, "x": 15, "y": 5}
    for name, n in MAIN.items():
        assert sorted(i for idx in groups[name] for i in idx) == list(range(n))
    proportional = MultiTaskBatchSampler(MAIN, 8).task_probabilities()
    assert s.task_probabilities() == pytest.approx(proportional, abs=1e-12)


def test_main_ratio_aux_shares_follow_batch_counts_over_epochs():
    s = main_ratio(0.5, seed=1)  # 5 auxiliary batches an epoch out of 20: x expects 3.75
    counts: Counter[str] = Counter()
    for _ in range(300):
        counts.update(b.task for b in s)
    assert counts["main"] == 300 * 10
    assert counts["x"] + counts["y"] == 300 * 5
    assert counts["x"] / (300 * 5) == pytest.approx(15 / 20, abs=0.03)
    steps = sum(counts.values())
    for name, p in s.task_probabilities().items():
        assert counts[name] / steps == pytest.approx(p, abs=0.02)


def test_main_ratio_zero_or_no_aux_task_is_the_main_task_only():
    s = main_ratio(0.0, seed=2)
    assert len(s) == 10
    assert {b.task for b in s} == {"main"}
    assert s.task_probabilities() == {"x": 0.0, "main": 1.0, "y": 0.0}
    # No auxiliary batch to draw (drop_last leaves "y", 4 examples, none): main batches only.
    alone = MultiTaskBatchSampler({"main": 16, "y": 4}, 8, strategy="main_ratio",
                                  main_task="main", main_ratio=3.0, drop_last=True)
    assert len(alone) == 2 and [b.task for b in alone] == ["main", "main"]


def test_main_ratio_errors():
    with pytest.raises(ValueError, match=re.escape(
            "strategy 'main_ratio' needs main_task, one of ['x', 'main', 'y']")):
        MultiTaskBatchSampler(MAIN, 8, strategy="main_ratio")
    with pytest.raises(ValueError, match=re.escape(
            "unknown main task 'mian'; did you mean 'main'? (known: main, x, y)")):
        MultiTaskBatchSampler(MAIN, 8, strategy="main_ratio", main_task="mian")
    with pytest.raises(ValueError, match=re.escape(
            "main_ratio must be >= 0 (auxiliary batches per main-task batch), got -0.5")):
        main_ratio(-0.5)
    with pytest.raises(ValueError, match=re.escape(
            "main task 'main' has no batch: 4 examples, drop_last with a global batch of 8")):
        MultiTaskBatchSampler({"main": 4, "x": 40}, 8, strategy="main_ratio", main_task="main",
                              drop_last=True)


# --- annealed ----------------------------------------------------------------------------------


def annealed(sizes, steps: int, end: float, **kw) -> MultiTaskBatchSampler:
    return MultiTaskBatchSampler(sizes, kw.pop("batch_size", 1), strategy="annealed",
                                 anneal_end=end, anneal_steps=steps, **kw)


def test_annealed_exponent_goes_from_one_to_anneal_end():
    s = annealed({"a": 10, "b": 20}, steps=101, end=0.2)
    assert s.anneal_exponent(0) == 1.0
    assert s.anneal_exponent(50) == pytest.approx(0.6)
    assert s.anneal_exponent(100) == pytest.approx(0.2)
    assert s.anneal_exponent(10_000) == pytest.approx(0.2)  # held after the last step
    assert annealed({"a": 1}, steps=1, end=0.0).anneal_exponent(0) == 1.0
    with pytest.raises(ValueError, match="needs anneal_steps"):
        MultiTaskBatchSampler({"a": 1}, 1).anneal_exponent(0)


def test_annealed_probabilities_match_hand_computed_values():
    s = annealed({"small": 100, "big": 900}, steps=11, end=0.0)
    assert s.annealed_probabilities(0) == pytest.approx({"small": 0.1, "big": 0.9})
    # Half way a = 0.5: sqrt(100) = 10 against sqrt(900) = 30.
    assert s.annealed_probabilities(5) == pytest.approx({"small": 0.25, "big": 0.75})
    assert s.annealed_probabilities(10) == pytest.approx({"small": 0.5, "big": 0.5})
    assert s.task_probabilities() == s.annealed_probabilities(0)  # documented: the first step
    sizes = {"a": 1000, "b": 50, "c": 3}
    s = annealed(sizes, steps=5, end=0.2)
    a = 1 - 0.8 * 3 / 4
    w = {k: n ** a for k, n in sizes.items()}
    assert s.annealed_probabilities(3) == pytest.approx({k: v / sum(w.values())
                                                         for k, v in w.items()}, abs=1e-12)
    # Large tasks and a small exponent stay finite (log space).
    huge = annealed({"a": 10**300, "b": 1}, steps=2, end=1.0)
    assert huge.annealed_probabilities(1) == pytest.approx({"a": 1.0, "b": 0.0})


def test_annealed_small_task_share_rises_from_first_to_last_epoch():
    sizes = {"small": 100, "big": 900}
    s = annealed(sizes, steps=5 * 1000, end=0.0, seed=4)  # five epochs of 1000 steps
    assert len(s) == 1000
    shares = []
    for epoch in range(5):
        tasks = [b.task for b in s]
        share = tasks.count("small") / len(tasks)
        expected = np.mean([s.annealed_probabilities(epoch * 1000 + p)["small"]
                            for p in range(0, 1000, 10)])
        assert share == pytest.approx(expected, abs=0.04), epoch
        shares.append(share)
    assert shares[0] < 0.2 and shares[-1] > 0.4
    assert shares[-1] > shares[0] + 0.25


def test_annealed_exhausted_tasks_start_a_new_pass():
    # From step 1 on the exponent is 0 (uniform): "a", 5 batches, is run about 250 times.
    s = annealed({"a": 10, "b": 1000}, steps=1, end=0.0, batch_size=2, seed=0)
    got = by_task(list(s))["a"]
    assert len(got) > 200
    for p in range(len(got) // 5):
        assert sorted(i for idx in got[p * 5:(p + 1) * 5] for i in idx) == list(range(10))


def test_annealed_errors():
    unset = MultiTaskBatchSampler(SIZES, 8, strategy="annealed")  # the run length comes later
    with pytest.raises(ValueError, match=re.escape(
            "strategy 'annealed' needs anneal_steps, the number of sampler steps (micro-batches) "
            "the training takes")):
        list(unset)
    with pytest.raises(ValueError, match=re.escape("anneal_steps must be >= 1, got 0")):
        unset.set_run_length(0)
    with pytest.raises(ValueError, match=re.escape("anneal_end must be in [0, 1], got 1.5")):
        annealed(SIZES, steps=10, end=1.5)
    with pytest.raises(ValueError, match=re.escape("anneal_steps must be >= 1, got 0")):
        annealed(SIZES, steps=0, end=0.5)


# --- both: resuming, ranks, state --------------------------------------------------------------

NEW = {
    # A = 35 > 20 auxiliary batches: the auxiliary tasks start second passes.
    "main_ratio": {"task_sizes": MAIN, "strategy": "main_ratio", "main_task": "main",
                   "main_ratio": 3.5},
    # Annealing over two and a half epochs of 19 steps: the exponent changes across epochs.
    "annealed": {"task_sizes": SIZES, "strategy": "annealed", "anneal_end": 0.0,
                 "anneal_steps": 47},
}


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("k", [3, 27, 44, 50])  # epochs of 45 and 19 steps
def test_new_strategies_resume_mid_epoch_with_the_identical_rest(name, k):
    def make() -> MultiTaskBatchSampler:
        return MultiTaskBatchSampler(batch_size=8, seed=13, **NEW[name])

    ref = make()
    full = list(ref) + list(ref) + list(ref)  # epochs 0-2
    s = make()
    head: list[TaskBatch] = []
    while len(head) < k:
        head.extend(islice(iter(s), k - len(head)))  # a new iterator moves to the next epoch
    state = json.loads(json.dumps(s.state_dict()))
    assert (state["epoch"], state["position"]) == divmod(k, len(s))
    fresh = make()
    fresh.load_state_dict(state)
    rest = []
    while len(head) + len(rest) < len(full):
        rest.extend(fresh)
    assert head + rest == full


@pytest.mark.parametrize("name", NEW)
def test_new_strategies_give_every_rank_the_same_tasks(name):
    kw = NEW[name]
    glob = MultiTaskBatchSampler(batch_size=8, seed=6, **kw)
    ranks = [MultiTaskBatchSampler(batch_size=4, seed=6, num_replicas=2, rank=r, **kw)
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(glob)
    for _ in range(2):  # two epochs
        g, r0, r1 = list(glob), list(ranks[0]), list(ranks[1])
        assert [b.task for b in r0] == [b.task for b in r1] == [b.task for b in g]
        for chunk, a, b in zip(g, r0, r1, strict=True):
            assert sorted(a.indices + b.indices) == sorted(chunk.indices)


@pytest.mark.parametrize("name", NEW)
def test_new_strategies_state_round_trip_and_config_checks(name):
    kw = NEW[name]
    s = MultiTaskBatchSampler(batch_size=8, seed=0, **kw)
    list(islice(iter(s), 5))
    state = s.state_dict()
    assert {"main_task", "main_ratio", "anneal_end", "anneal_steps"} <= set(state)
    assert json.loads(json.dumps(state)) == state
    other = MultiTaskBatchSampler(batch_size=8, seed=0, **kw)
    other.load_state_dict(state)
    assert other.state_dict() == state and list(other) == list(s)
    changes = {"main_ratio": {"main_ratio": 2.0}, "annealed": {"anneal_steps": 48}}[name]
    key = next(iter(changes))
    with pytest.raises(ValueError, match=f"cannot resume.*{key}="):
        MultiTaskBatchSampler(batch_size=8, seed=0, **{**kw, **changes}).load_state_dict(state)
    # A state saved before these keys existed had their defaults: it resumes a sampler of an
    # older strategy, and is refused by one that uses them.
    old = {k: v for k, v in state.items()
           if k not in ("main_task", "main_ratio", "anneal_end", "anneal_steps")}
    with pytest.raises(ValueError, match="cannot resume: the saved sampler state has "):
        other.load_state_dict(old)
    plain = MultiTaskBatchSampler({"a": 30, "b": 50}, batch_size=8, seed=0)
    plain_state = plain.state_dict()
    for key in ("main_task", "main_ratio", "anneal_end", "anneal_steps"):
        del plain_state[key]
    MultiTaskBatchSampler({"a": 30, "b": 50}, batch_size=8, seed=0).load_state_dict(plain_state)


# --- the run length, given after the epoch length ---------------------------------------------


@pytest.mark.parametrize("steps", [1, 47, 500])
def test_annealed_takes_the_run_length_after_its_epoch_length(steps):
    kw = {"task_sizes": SIZES, "batch_size": 8, "seed": 3, "anneal_end": 0.0}
    s = MultiTaskBatchSampler(strategy="annealed", **kw)
    ref = MultiTaskBatchSampler(strategy="annealed", anneal_steps=steps, **kw)
    assert len(s) == len(MultiTaskBatchSampler(**kw)) == 19  # proportional's, known already
    assert s.task_probabilities() == ref.task_probabilities()  # the first step's, n_i / sum n
    with pytest.raises(ValueError, match="strategy 'annealed' needs anneal_steps"):
        next(iter(s))
    with pytest.raises(ValueError, match="annealed_probabilities needs anneal_steps"):
        s.annealed_probabilities(0)
    assert s.state_dict()["anneal_steps"] is None
    assert (s.epoch, s.position) == (0, 0)  # the failed iteration handed nothing out
    s.set_run_length(steps)
    assert s.state_dict() == ref.state_dict() and s.state_dict()["anneal_steps"] == steps
    assert s.annealed_probabilities(10) == ref.annealed_probabilities(10)
    assert [list(s) for _ in range(3)] == [list(ref) for _ in range(3)]


def test_run_length_is_recorded_and_checked_on_resume():
    def make(steps: int | None) -> MultiTaskBatchSampler:
        s = MultiTaskBatchSampler(SIZES, 8, strategy="annealed", seed=1)
        if steps is not None:
            s.set_run_length(steps)
        return s

    s = make(47)
    list(islice(iter(s), 5))
    state = json.loads(json.dumps(s.state_dict()))
    assert state["anneal_steps"] == 47
    resumed = make(47)
    resumed.load_state_dict(state)
    assert list(resumed) == list(s)
    for steps in (48, None):  # another run length, or none given
        with pytest.raises(ValueError, match=re.escape(
                "cannot resume: the saved sampler state has anneal_steps=47 but this sampler has "
                f"anneal_steps={steps}")):
            make(steps).load_state_dict(state)


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "annealed"])
def test_other_strategies_ignore_the_run_length(strategy):
    def make() -> MultiTaskBatchSampler:
        return MultiTaskBatchSampler(SIZES, 8, strategy=strategy, seed=2,
                                     **EXTRA.get(strategy, {}))

    s, ref = make(), make()
    s.set_run_length(1000)
    assert s.state_dict() == ref.state_dict()  # anneal_steps is not recorded: it is not used
    assert [list(s) for _ in range(2)] == [list(ref) for _ in range(2)]


def test_describe_gives_the_shares_of_uneven_strategies_only():
    assert MultiTaskBatchSampler(SIZES, 10).describe() is None
    main = MultiTaskBatchSampler(SIZES, 10, strategy="main_ratio", main_task="b", main_ratio=1)
    assert main.describe().startswith("main_ratio sampling, shares of steps: a ")
    annealed = MultiTaskBatchSampler({"a": 100, "b": 900}, 10, strategy="annealed",
                                     anneal_end=0.0, anneal_steps=11)
    assert annealed.describe() == ("annealed sampling, shares of steps: a 10.0%, b 90.0% at the "
                                   "first step; a 50.0%, b 50.0% at the last")
