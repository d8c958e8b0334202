"""The report of bench_task_types.py: the stored results grouped by unit, arm and seed, the
tables of each part (quality, CoNLL, throughput) and the Markdown text around them, and the
one-line progress summary of a run. Pure: tests/test_bench_task_types.py checks them on crafted
numbers.

Not a module of the package: imported by the scripts beside it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_results as br  # noqa: E402
from task_types_units import (  # noqa: E402
    ARM_TITLES,
    ARMS,
    CSQA_CHOICES,
    DATA,
    HF_ARMS,
    REPORTED,
    SHORT,
    UNITS,
)


def collect(results: dict[tuple[str, str, int], dict[str, Any]]
            ) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """{unit: {arm: {seed: result}}} of the stored results."""
    out: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    for (unit, arm, n), r in sorted(results.items()):
        out.setdefault(unit, {}).setdefault(arm, {})[n] = r
    return out


def metric_values(runs: dict[int, dict[str, Any]], task: str, metric: str) -> dict[int, float]:
    """{seed: value} of one task's metric over the runs that have it."""
    return {n: r["metrics"][task][metric] for n, r in runs.items()
            if metric in r.get("metrics", {}).get(task, {})}


def paired(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """a − b per seed, over the seeds both have, in seed order."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def fmt_interval(diffs: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """'[-0.4, +2.2]': the 95% t-interval of the mean paired difference (x scale); '-' with fewer
    than two seeds."""
    from mtdnn.stats import t_interval

    if len(diffs) < 2:
        return "-"
    _, low, high = t_interval([scale * d for d in diffs])
    return f"[{round(low, digits) + 0.0:+.{digits}f}, {round(high, digits) + 0.0:+.{digits}f}]"


def fmt_baseline(value: float | None) -> str:
    return "-" if value is None else f"{round(100 * value, 1) + 0.0:.1f}"


def first_baseline(runs: dict[str, dict[int, dict[str, Any]]], task: str, metric: str
                   ) -> float | None:
    for per_seed in runs.values():
        for r in per_seed.values():
            value = r.get("baselines", {}).get(task, {}).get(metric)
            if value is not None:
                return value
    return None


def quality_table(by_unit: dict[str, dict[str, dict[int, dict[str, Any]]]],
                  units: list[str]) -> str:
    """One row per (unit, reported metric): each arm's mean ± std over seeds (x100), the paired
    difference mtdnn − HF per seed (mean ± std) and its 95% t-interval, the trivial baseline."""
    header = ["unit", "metric", "seeds", "mtdnn", "HF Trainer", "Δ mtdnn − HF", "95% CI of Δ",
              "baseline"]
    rows = []
    for unit in units:
        runs = by_unit.get(unit, {})
        for task in UNITS[unit].tasks:
            for metric in REPORTED[task]:
                a = metric_values(runs.get("mtdnn", {}), task, metric)
                b = metric_values(runs.get("hf", {}), task, metric)
                diff = paired(a, b)
                rows.append([unit, SHORT.get(metric, metric), len(diff) or max(len(a), len(b)),
                             br.fmt_mean_std(list(a.values())), br.fmt_mean_std(list(b.values())),
                             br.fmt_mean_std(diff, signed=True), fmt_interval(diff),
                             fmt_baseline(first_baseline(runs, task, metric))])
    return bc.markdown_table(header, rows)


def cost_table(by_unit: dict[str, dict[str, dict[int, dict[str, Any]]]], units: list[str]) -> str:
    """Per unit and arm: optimizer steps, features and real tokens trained, training seconds and
    real tokens/s (mean ± std over seeds), evaluation and child wall seconds."""
    header = ["unit", "arm", "steps", "features", "real tokens", "train s", "real tok/s",
              "eval s", "wall s"]
    rows = []
    for unit in units:
        for arm in UNITS[unit].arms:
            runs = list(by_unit.get(unit, {}).get(arm, {}).values())
            if not runs:
                continue
            train = [r["train"] for r in runs]
            rate = [t["train_tokens"] / t["train_s"] for t in train if t["train_s"]]
            rows.append([unit, ARM_TITLES[arm], f"{train[0]['steps']:,}",
                         f"{train[0]['train_rows']:,}", f"{train[0]['train_tokens']:,}",
                         br.fmt_mean_std([t["train_s"] for t in train], 1.0, 0),
                         br.fmt_mean_std(rate, 1.0, 0),
                         br.fmt_mean_std([r["eval_s"] for r in runs], 1.0, 0),
                         br.fmt_mean_std([r.get("child_wall_s", 0.0) for r in runs], 1.0, 0)])
    return bc.markdown_table(header, rows)


def conll_table(by_unit: dict[str, dict[str, dict[int, dict[str, Any]]]]) -> str:
    """Each CoNLL task alone (mtdnn single-task, last layer) next to the three together
    (hierarchical heads; with conll-flat, also every head on the last layer): mean ± std over
    seeds, the paired difference together − alone and its t-interval (with both, also
    hierarchical − flat: what the layers alone change); the training time of the three alone
    summed against one run together."""
    alone = {"ner": by_unit.get("ner", {}).get("mtdnn", {}),
             "pos": by_unit.get("pos", {}).get("mtdnn", {}),
             "chunk": by_unit.get("chunk", {}).get("mtdnn", {})}
    together = [(u, by_unit[u]["mtdnn"]) for u in ("conll-hier", "conll-flat")
                if by_unit.get(u, {}).get("mtdnn")]
    both = len(together) == 2  # hierarchy against flat: the same run, only the heads' layers
    header = ["task", "metric", "alone"]
    for unit, _ in together:
        header += [f"{unit}", f"Δ {unit} − alone", "95% CI of Δ"]
    header += ["Δ conll-hier − conll-flat", "95% CI of Δ"] if both else []
    header.append("baseline")
    rows: list[list[Any]] = []
    for task in ("ner", "pos", "chunk"):
        for metric in REPORTED[task]:
            single = metric_values(alone[task], task, metric)
            row = [task, SHORT.get(metric, metric), br.fmt_mean_std(list(single.values()))]
            for _, runs in together:
                multi = metric_values(runs, task, metric)
                diff = paired(multi, single)
                row += [br.fmt_mean_std(list(multi.values())),
                        br.fmt_mean_std(diff, signed=True), fmt_interval(diff)]
            if both:
                diff = paired(*(metric_values(runs, task, metric) for _, runs in together))
                row += [br.fmt_mean_std(diff, signed=True), fmt_interval(diff)]
            sources = {"alone": alone[task], **dict(together)}
            row.append(fmt_baseline(first_baseline(sources, task, metric)))
            rows.append(row)
    seeds = sorted(set.intersection(*(set(r) for r in alone.values()))) if all(
        alone.values()) else []
    time_row: list[Any] = ["(all three)", "train s",
                           br.fmt_mean_std([sum(alone[t][s]["train"]["train_s"] for t in alone)
                                            for s in seeds], 1.0, 0)]
    for _, runs in together:
        time_row += [br.fmt_mean_std([r["train"]["train_s"] for r in runs.values()], 1.0, 0),
                     "", ""]
    rows.append(time_row + ["", ""] * both + [""])
    return bc.markdown_table(header, rows)


def speed_rows(by_unit: dict[str, dict[str, dict[int, dict[str, Any]]]], units: list[str]
               ) -> tuple[str, str]:
    """(per arm: medians over repeats of the steady-window rates; the ratios mtdnn / HF, medians
    of the per-repeat ratios)."""
    header = ["unit", "arm", "repeats", "steps timed", "s/step", "samples/s", "real tok/s",
              "padded tok/s", "pad %"]
    rows, ratios = [], []
    for unit in units:
        arms = by_unit.get(unit, {})
        for arm in UNITS[unit].arms:
            runs = list(arms.get(arm, {}).values())
            if not runs:
                continue
            med = {k: bc.median([r["steady"][k] for r in runs]) for k in runs[0]["steady"]}
            rows.append([unit, ARM_TITLES[arm], len(runs), int(med["steps"]), med["s_per_step"],
                         med["samples_per_s"], med["real_tokens_per_s"],
                         med["padded_tokens_per_s"], 100 * med["pad_fraction"]])
        reps = sorted(set(arms.get("mtdnn", {})) & set(arms.get("hf", {})))
        if reps:
            a, b = arms["mtdnn"], arms["hf"]
            ratios.append([unit, len(reps)] + [
                bc.median([a[n]["steady"][k] / b[n]["steady"][k] for n in reps])
                for k in ("samples_per_s", "real_tokens_per_s")])
    return (bc.markdown_table(header, rows),
            bc.markdown_table(["mtdnn / HF Trainer (median of per-repeat ratios)", "repeats",
                               "samples/s", "real tok/s"], ratios))


def data_lines(info: dict[str, Any]) -> str:
    """The data of each unit that ran: rows (features) trained on and scored, sequence length."""
    a, lines = info["args"], []
    for unit in info["units"]:
        u, sizes = UNITS[unit], info["sizes"].get(unit)
        if not sizes:
            continue
        s, d = next(iter(sizes.values())), DATA[u.data]  # the tasks of a unit share their rows
        parts = [f"train {s['train_rows']:,} of {d.train:,} {d.rows} ({s['train_features']:,} "
                 "features)"]
        if "dev_rows" in s:
            parts.append(f"dev {s['dev_rows']:,} of {d.dev:,} ({s['dev_features']:,})")
        lines.append(f"- `{unit}` ({u.title}): {d.title}, {'; '.join(parts)}; "
                     f"max_seq_length {a['max_seq_length'] or d.max_seq_length}")
    return "\n".join(lines)


def report(results: dict[tuple[str, str, int], dict[str, Any]], info: dict[str, Any]) -> str:
    a = info["args"]
    by_unit = collect(results)
    units = info["units"]
    quality = [u for u in units if UNITS[u].part == "quality"]
    conll = [u for u in units if UNITS[u].part == "conll"]
    speed = [u for u in units if UNITS[u].part == "speed"]
    questions = max(1, a["batch_size"] // CSQA_CHOICES)
    sampling = ("group_by_length (--hf-group-by-length)" if a["hf_group_by_length"] else
                "random batches, run_ner/run_qa/run_swag's default (no group_by_length; mtdnn "
                "groups by length except for token classification, whose default since "
                "2026-12-02 is random batches too, so on the other types the HF arm computes "
                "more padding)")
    if a.get("mtdnn_random_batches"):
        sampling += "; mtdnn with random batches too (--mtdnn-random-batches)"
    arms = "\n".join(f"  - {t}: `{m}` + `{c}` ({s})" for t, (m, c, s) in HF_ARMS.items())
    text = [
        "### The new task types: mtdnn vs the HF Trainer, hierarchical CoNLL heads, throughput\n",
        f"Command: `{info['command']}`\n",
        f"Machine: {bc.machine_line(info['machine'])}.\n",
        f"Encoder {a['encoder']}; both arms: learning rate {a['lr']:g}, batch {a['batch_size']} "
        f"sequences (CommonsenseQA: {questions} questions x {CSQA_CHOICES} choices), "
        f"{a['epochs']:g} epoch(s), linear schedule with warmup ratio {a['warmup_ratio']:g} "
        f"(int(ratio x steps) steps), weight decay {a['weight_decay']:g}, max grad norm 1, fp32 "
        f"AdamW, the same optimizer step count (ceil(epochs x batches per epoch)); SQuAD "
        f"doc_stride {a['doc_stride']}; seeds {', '.join(map(str, a['seeds']))}.\n",
        data_lines(info) + "\n",
    ]
    if quality:
        text += [
            "#### Quality: mtdnn single-task vs the HF Trainer\n",
            "- mtdnn: `mtdnn.trainer.train` on the shipped spec (one task, its head on the last "
            "layer), evaluated once at the end: the final model is scored.",
            "- HF Trainer: `transformers.Trainer`, the type's class and the collator of its "
            f"example script; sampling: {sampling}; no evaluation during training, the final "
            "model is scored. The same tokenized features (mtdnn's `features(...)`), columns "
            "renamed for the HF model:\n" + arms,
            "- Scoring, both arms: `mtdnn.evaluation.outputs_of` over the same dev features (the "
            "HF model through the type's `exported_logits`), then `kind.predictions` and "
            "`kind.score`. mtdnn's own evaluation (`train()` at its last step) takes the same "
            "path; the benchmark calls it on the final checkpoint instead, so that the two "
            "arms share every line of it. The heads are each library's own: for multiple "
            "choice and multi-label mtdnn puts a fresh dense + tanh on the first token where "
            "the HF classes start from MiniLM's pretrained pooler; mtdnn's QA head applies "
            "dropout before its linear layer in training and its loss masks the padding, "
            "BertForQuestionAnswering does neither; the token-classification heads are the "
            "same (dropout, linear).\n",
            quality_table(by_unit, quality) + "\n",
            "Dev metrics x100, mean ± sample std over seeds; Δ: mean ± std of the per-seed "
            "paired differences, with the 95% t-interval of their mean over seeds "
            "(mtdnn.stats.t_interval; '-' with one seed). Baseline: the task type's trivial "
            "baseline (`kind.baseline`: the most frequent training tag, answer position or "
            "label set; the first k context words for SQuAD).\n",
            cost_table(by_unit, quality) + "\n",
            "`features`, `real tokens`: what the run trained over all its epochs (a feature: a "
            "sentence or window of one, a SQuAD window, a CommonsenseQA question of 5 "
            "sequences, a comment); `train s`: from the first training batch to "
            "the last optimizer step (evaluation and setup excluded); `real tok/s`: real "
            "(unpadded) tokens / train s; `eval s`: dev outputs, decoding and scoring; `wall "
            "s`: the whole child (model loads, tokenization cache, evaluation).\n"]
    if conll:
        text += [
            "#### CoNLL-2003: the three tasks together with hierarchical heads vs each alone "
            "(mtdnn)\n",
            "`alone`: single-task runs, head on the last layer (NER, POS: the quality part's "
            "mtdnn runs; chunk: its own). `conll-hier`: one run of the three, "
            "task_specs/conll2003.yaml's layers (POS 2, chunks 4, NER 6 of 6), proportional "
            "sampler: each task's sentences once per epoch, the same budget per task as "
            "alone." + (" `conll-flat`: the same run with every head on the last layer." if
                        "conll-flat" in units else "") + "\n",
            conll_table(by_unit) + "\n"]
    if speed:
        table, ratios = speed_rows(by_unit, speed)
        over = {"tput-ner": f"the first {a['speed_rows']['conll']:,} CoNLL sentences (NER)",
                "tput-squad": f"the first {a['speed_rows']['squad']:,} SQuAD questions"}
        optimizers = "; ".join(
            f"{ARM_TITLES[arm]} {', '.join(sorted(names))}" for arm in ARMS
            if (names := {r.get("optimizer") or "?" for u in speed
                          for r in by_unit.get(u, {}).get(arm, {}).values()}))
        text += [
            "#### Training throughput per real token\n",
            f"One epoch over {' and '.join(over[u] for u in speed)}, batch {a['batch_size']}, "
            "the same features in both arms; the HF Trainer with dynamic padding and "
            "group_by_length (its best case), mtdnn with length-grouped batches (set per task, "
            "whatever the type's default); medians over "
            f"{a['repeats']} repeat(s), alternating the arms. Rates over steps 2..n (from the "
            "end of the first optimizer step to the end of the last), real tokens from the "
            "attention masks of the batches (bench_meter.Meter). Optimizers: "
            f"{optimizers or '-'}. Only meaningful on an otherwise idle machine.\n",
            table + "\n", ratios + "\n"]
    text.append(f"Per-seed values: {info['summary']}.\n")
    return "\n".join(text)


def summary_line(result: dict[str, Any]) -> str:
    """One line of progress: the reported metrics (x100), or the steady rates."""
    if "steady" in result:
        s = result["steady"]
        return f"{s['samples_per_s']:.1f} samples/s, {s['real_tokens_per_s']:,.0f} real tok/s"
    scores = ", ".join(f"{task} {SHORT.get(m, m)} {100 * values[m]:.1f}"
                       for task, values in result["metrics"].items()
                       for m in REPORTED.get(task, ()) if m in values)
    return f"{scores}; train {result['train']['train_s']:.0f} s"
