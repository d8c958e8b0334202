"""Ranking: (query, candidate) pairs with 0/1 relevance; a query's candidates are scored together
with a listwise softmax cross-entropy (MT-DNN's ranking criterion). Training rows become listwise
groups (one relevant candidate and up to `max_candidates - 1` irrelevant ones,
`mtdnn.features.ranking_groups`); a batch holds `train.batch_size // max_candidates` groups.
Metrics: MAP, MRR, P@1 (queries without a relevant candidate are left out); baseline: a random
order (mean of 20 seeded shuffles); export: a 1-logit cross-encoder scorer
(`AutoModelForSequenceClassification`, higher is more relevant)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mtdnn.tasks.sequence import SequenceTask

if TYPE_CHECKING:
    from mtdnn.data import Rows
    from mtdnn.spec import TaskSpec


def group_scores(scores: Any, group_sizes: Any) -> Any:
    """Flat candidate scores (N,) of consecutive groups -> (B, max group size), padded with -inf."""
    import torch

    sizes = group_sizes.tolist()
    padded = scores.new_full((len(sizes), max(sizes)), float("-inf"))
    mask = torch.arange(max(sizes), device=scores.device)[None, :] < group_sizes[:, None]
    padded[mask] = scores
    return padded


class Ranking(SequenceTask):
    name = "ranking"
    default_metrics = ("map", "mrr", "p@1")
    settings = ("positive_label", "max_candidates")
    pipeline_tag, pipeline_name = "text-ranking", "Text Ranking"
    def check(self, task: TaskSpec, report: Any) -> None:
        super().check(task, report)
        if len(task.text) != 2:
            report.fail(f"tasks.{task.name}.text", "a ranking task needs two columns: [query, "
                                                    "candidate]")
        if task.max_candidates < 2:
            report.fail(f"tasks.{task.name}.max_candidates",
                        f"must be >= 2, got {task.max_candidates}")

    def batch_size(self, task: TaskSpec, train_batch_size: int) -> int:
        # groups of max_candidates sequences: about as many sequences as other tasks' batches
        return max(1, train_batch_size // task.max_candidates)

    def convert_label(self, task: TaskSpec, value: Any, index: dict[str, int]
                      ) -> tuple[Any, str | None]:
        from mtdnn.records import show, typed

        text, positive = str(value), task.positive_label
        # A JSON true or 1.0 never equals positive_label "1": every row would silently be
        # irrelevant.
        if text != positive and (
                (isinstance(value, bool) and positive not in ("True", "False")) or
                (isinstance(value, float) and "." not in positive)):
            return None, (f"label {typed(value)} reads as {show(text)}, which can never equal "
                          f"tasks.{task.name}.positive_label {positive!r} (write relevance as "
                          f'1/0 or "1"/"0", or set positive_label)')
        return int(text == positive), None

    def finish_rows(self, task: TaskSpec, split: str, cols: list[list[str]],
                    labels: list[Any] | None, ids: list[str], limit: int | None
                    ) -> tuple[list[list[str]], list[Any] | None, list[str], list[int] | None]:
        # Rows of one query are consecutive or not; the query text identifies the group.
        seen: dict[str, int] = {}
        query_ids = [seen.setdefault(q, len(seen)) for q in cols[0]]
        if limit is not None:  # a limit counts queries, so no query is cut in half
            keep = [i for i, q in enumerate(query_ids) if q < limit]
            cols = [[c[i] for i in keep] for c in cols]
            labels = [labels[i] for i in keep] if labels is not None else None
            ids = [ids[i] for i in keep]
            query_ids = [query_ids[i] for i in keep]
        return cols, labels, ids, query_ids

    def training_problem(self, task: TaskSpec, rows: Rows, raw: list[Any]) -> str | None:
        """Why listwise training would learn nothing from a train split; None if it learns."""
        if rows.split != "train" or rows.labels is None:
            return None
        assert rows.query_ids is not None
        per_query: dict[int, set[int]] = {}
        for q, relevant in zip(rows.query_ids, rows.labels):
            per_query.setdefault(q, set()).add(relevant)
        if any(len(values) == 2 for values in per_query.values()):
            return None
        seen = dict(Counter(str(v) for v in raw).most_common(10))
        positive = task.positive_label
        if 1 not in rows.labels:
            return (f"tasks.{task.name}.positive_label is {positive!r}, but no training label "
                    f"equals it (labels seen, with row counts: {seen}), so the task would train "
                    "nothing (set positive_label to the label of a relevant candidate, or fix "
                    "the rows)")
        return (f"no query has both a relevant and an irrelevant candidate (positive_label is "
                f"{positive!r}; labels seen, with row counts: {seen}), so the task would train "
                f"nothing (each query needs a candidate labelled {positive!r} and one labelled "
                "otherwise)")

    def features(self, examples: Rows, tokenizer: Any, max_len: int, *, for_training: bool,
                 task: TaskSpec | None = None, use_cache: bool = True) -> Any:
        from mtdnn.features import tokenize

        return tokenize(examples, tokenizer, max_len, for_training=for_training,
                        max_candidates=task.max_candidates if task is not None else 8,
                        use_cache=use_cache)

    def loss(self, logits: Any, labels: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        group_sizes = batch.get("group_sizes")
        if group_sizes is None:
            raise ValueError("ranking loss needs group_sizes (candidates per query)")
        # Listwise: softmax over each query's candidates, the relevant one is the target.
        return F.cross_entropy(group_scores(logits.float().squeeze(-1), group_sizes), labels)

    def card_outputs(self, info: Any) -> str:
        return "a score (higher = more relevant)"

    def card_usage(self, info: Any, repo_id: str) -> tuple[list[str], str]:
        return (["import torch",
                 "from transformers import AutoModelForSequenceClassification, AutoTokenizer", "",
                 f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
                 f'model = AutoModelForSequenceClassification.from_pretrained("{repo_id}").eval()',
                 'query = "how are glacier caves formed?"',
                 'candidates = ["A glacier cave is a cave formed within the ice of a glacier.",',
                 '              "Glaciers cover about 10 percent of the land."]',
                 "batch = tokenizer([query] * len(candidates), candidates, truncation=True,",
                 '                  padding=True, return_tensors="pt")',
                 "with torch.no_grad():",
                 "    scores = model(**batch).logits[:, 0]  # higher = more relevant"],
                "Plain transformers: mtdnn is not needed.")

    distillable = True

    def teacher_targets(self, outputs: list[Any], dataset: Any, temperature: float) -> list[Any]:
        """Per listwise group: the mean over teachers of the softmax of their candidate scores
        at temperature T (a group's candidates: the training feature's `members`)."""
        targets = []
        for members in dataset["members"]:
            probs = []
            for o in outputs:
                z = np.asarray(o)[members, 0] / temperature
                e = np.exp(z - z.max())
                probs.append(e / e.sum())
            targets.append(np.mean(probs, axis=0).tolist())
        return targets

    def distill_loss(self, logits: Any, labels: Any, batch: dict[str, Any], alpha: float,
                     temperature: float) -> Any:
        import torch

        sizes = batch["group_sizes"]
        scores = group_scores(logits.float().squeeze(-1), sizes)  # (B, max group), -inf padded
        soft = batch["soft_labels"].float()  # (B, max group), 0 padded
        log_q = torch.log_softmax(scores / temperature, -1)
        kl = torch.where(soft > 0, soft * (soft.clamp_min(1e-30).log() - log_q), 0.0)
        hard = self.loss(logits, labels, batch)
        return alpha * hard + (1 - alpha) * temperature ** 2 * kl.sum(-1).mean()

    def divergence(self, a: Any, b: Any, batch: dict[str, Any]) -> Any:
        from mtdnn.smart import at_least_fp32, sym_kl

        a, b = at_least_fp32(a), at_least_fp32(b)
        sizes = batch.get("group_sizes")
        if sizes is None:  # rows scored alone (no listwise groups)
            return (a - b).pow(2).mean()
        return sym_kl(group_scores(a.squeeze(-1), sizes), group_scores(b.squeeze(-1), sizes))

    def baseline(self, metrics: Sequence[str], train: Rows, dev: Rows) -> dict[str, float]:
        from mtdnn.metrics import compute_metrics

        rng = np.random.default_rng(0)
        runs = [compute_metrics(metrics, rng.random(len(dev)), dev.labels, dev.query_ids)
                for _ in range(20)]
        return {m: float(np.mean([r[m] for r in runs])) for m in metrics}
