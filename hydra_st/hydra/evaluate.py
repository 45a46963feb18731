"""Per-task evaluation of Hydra against its teachers and controls.

Systems per task: BM25, the base model, the RRF(BM25, base) teacher, Hydra with the task's card, Hydra with
another task's card (the control that shows the card matters), and Hydra leave-one-task-out (a hypernet trained
without the task, given only its card). Metrics: nDCG@10, MRR@10, Recall@100 (pytrec_eval through the
foundation's :func:`~hydra_st.evaluation.evaluate_run`). Hydra is scored on the base model's cached corpus
embeddings with the generated head applied, which equals ``model.encode_document(..., task_card=card)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from hydra_st.evaluation import TRAIN_OVERLAP_POOLS, evaluate_run, paired_comparison, split_by_train_overlap
from hydra_st.retrieval import dense_run
from hydra_st.teachers import BM25Teacher, reciprocal_rank_fusion

from .generator import apply_head

METRICS = ("ndcg@10", "mrr@10", "recall@100")
SYSTEMS = ("bm25", "base", "rrf_teacher", "hydra", "hydra_wrong_card", "hydra_loto")


@torch.no_grad()
def hydra_run(
    model: Any,
    card: Any,
    query_ids: list[str],
    query_emb: np.ndarray,
    doc_ids: list[str],
    doc_emb: np.ndarray,
    top_k: int = 100,
) -> dict[str, dict[str, float]]:
    """Rank documents for queries with the head generated from ``card`` (on cached base embeddings)."""
    head = model.head
    head.eval()
    params = {k: v.float().cpu() for k, v in head.compile_card(card).items()}
    queries = torch.from_numpy(np.asarray(query_emb, dtype=np.float32))
    q = apply_head(params, queries, layer_norm=head.layer_norm, is_query=True)
    d = apply_head(params, torch.from_numpy(np.asarray(doc_emb, dtype=np.float32)), layer_norm=head.layer_norm)
    return dense_run(q.numpy(), query_ids, d.numpy(), doc_ids, top_k=top_k)


def wrong_card_for(name: str, names: Sequence[str]) -> str:
    """The control card for task ``name``: the next task's card in sorted order (deterministic)."""
    order = sorted(names)
    if len(order) < 2:
        raise ValueError("the wrong-card control needs at least two tasks")
    return order[(order.index(name) + 1) % len(order)]


def train_pools(task: Any) -> tuple[set[str], set[str]] | None:
    """``task``'s test queries split by whether a relevant document is also relevant to one of its training-side
    queries (train and dev, see :func:`~hydra_st.evaluation.split_by_train_overlap`); None for tasks trained on
    pseudo-queries, whose judged training-side queries do not exist."""
    if getattr(task, "train_source", None) != "train split":
        return None
    return split_by_train_overlap(task.test.qrels, {**task.train.qrels, **task.dev.qrels})


def _scores(
    qrels: dict[str, dict[str, int]],
    run: dict[str, dict[str, float]],
    pools: tuple[set[str], set[str]] | None = None,
    per_query: dict[str, float] | None = None,
) -> dict[str, float]:
    """Aggregate metrics, plus nDCG@10 and query counts per train pool (``ndcg@10/train_pool`` ...) when given.

    ``per_query``, when given, receives each query's nDCG@10 (for paired comparisons)."""
    result = evaluate_run(qrels, run, metrics=METRICS)
    if per_query is not None:
        per_query.update(result.by_query("ndcg@10"))
    scores = dict(result.aggregate)
    for label, group in zip(TRAIN_OVERLAP_POOLS, pools, strict=True) if pools is not None else ():
        judged = [q for q in group if q in result.per_query]
        if judged:
            scores[f"ndcg@10/{label}"] = result.mean_over(judged, "ndcg@10")
            scores[f"queries/{label}"] = len(judged)
    return scores


def evaluate_task(
    task: Any,
    model: Any,
    cards: dict[str, Any],
    loto_model: Any | None = None,
    bm25_factory: Callable[[], Any] = BM25Teacher,
    systems: Sequence[str] = SYSTEMS,
    per_query: dict[str, dict[str, float]] | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of every system on ``task``'s test queries: ``{system: {metric: value}}``.

    Tasks with a train split also get nDCG@10 on the test queries in and out of the train pool
    (:func:`train_pools`): a gain only in the pool is a document prior, not a better query-document match.

    Args:
        task: :class:`~hydra_st.hydra.tasks.TaskData` with its ``test`` split loaded.
        model: The trained Hydra model.
        cards: Card per task name (for the wrong-card control).
        loto_model: A Hydra trained without this task (None: the LOTO row is skipped).
        bm25_factory: Builds the BM25 teacher.
        systems: Which systems to score.
        per_query: When given, filled with ``{system: {query_id: nDCG@10}}`` (see :func:`paired_against_base`).
    """
    test = task.test
    if not len(test):
        raise ValueError(f"{task.name}: no test queries loaded (build the task with with_test=True)")
    out: dict[str, dict[str, float]] = {}
    pools = train_pools(task)

    def scores(run: dict[str, dict[str, float]], system: str) -> dict[str, float]:
        return _scores(test.qrels, run, pools, None if per_query is None else per_query.setdefault(system, {}))

    base = dense_run(test.embeddings, test.ids, task.doc_embeddings, task.doc_ids, top_k=100)
    if "bm25" in systems or "rrf_teacher" in systems:
        bm25 = bm25_factory().index(task.doc_ids, task.doc_texts).search(test.as_dict(), top_k=100)
        if "bm25" in systems:
            out["bm25"] = scores(bm25, "bm25")
        if "rrf_teacher" in systems:
            out["rrf_teacher"] = scores(
                reciprocal_rank_fusion([bm25, base], k=60, depth=100, top_k=100), "rrf_teacher"
            )
    if "base" in systems:
        out["base"] = scores(base, "base")
    args = (test.ids, test.embeddings, task.doc_ids, task.doc_embeddings)
    if "hydra" in systems:
        out["hydra"] = scores(hydra_run(model, task.card, *args), "hydra")
    if "hydra_wrong_card" in systems and len(cards) > 1:
        wrong = wrong_card_for(task.name, list(cards))
        out["hydra_wrong_card"] = scores(hydra_run(model, cards[wrong], *args), "hydra_wrong_card")
    if "hydra_loto" in systems and loto_model is not None:
        out["hydra_loto"] = scores(hydra_run(loto_model, task.card, *args), "hydra_loto")
    return out


def paired_against_base(
    per_query: dict[str, dict[str, float]], systems: Sequence[str] = ("hydra", "hydra_loto")
) -> dict[str, dict[str, float]]:
    """Each of ``systems`` against the base model on one task's test queries (``per_query`` as
    :func:`evaluate_task` fills it): mean nDCG@10 difference, paired bootstrap CI and randomization p-value."""
    if "base" not in per_query:
        raise ValueError("paired_against_base needs the base model's per-query scores (evaluate it too)")
    return {s: paired_comparison(per_query[s], per_query["base"]).to_json() for s in systems if s in per_query}


def dev_scores(model: Any, tasks: Sequence[Any]) -> dict[str, float]:
    """Dev nDCG@10 of Hydra with each task's own card, per task that has dev queries (never test)."""
    scores = {}
    for task in tasks:
        if not len(task.dev):
            continue
        run = hydra_run(model, task.card, task.dev.ids, task.dev.embeddings, task.doc_ids, task.doc_embeddings)
        scores[task.name] = evaluate_run(task.dev.qrels, run, metrics=("ndcg@10",)).aggregate["ndcg@10"]
    return scores


def dev_score(model: Any, tasks: Sequence[Any]) -> float:
    """Mean of :func:`dev_scores` over the tasks (dev queries only: never test)."""
    values = list(dev_scores(model, tasks).values())
    if not values:
        raise ValueError("no task has dev queries")
    return float(np.mean(values))


DEV_AGGREGATES = ("mean", "min", "penalized")


def dev_gains(model: Any, tasks: Sequence[Any], base_dev: dict[str, float]) -> dict[str, float]:
    """Dev nDCG@10 gain over the base model, per task (dev queries only: never test)."""
    gains = {}
    for task in tasks:
        if task.name not in base_dev:
            continue
        run = hydra_run(model, task.card, task.dev.ids, task.dev.embeddings, task.doc_ids, task.doc_embeddings)
        score = evaluate_run(task.dev.qrels, run, metrics=("ndcg@10",)).aggregate["ndcg@10"]
        gains[task.name] = score - base_dev[task.name]
    return gains


def aggregate_gains(gains: dict[str, float], aggregate: str = "penalized") -> float:
    """One model-selection score from per-task dev gains.

    ``"mean"``: mean gain; ``"min"``: the worst task's gain; ``"penalized"``: mean gain plus the mean of the
    losses (negative gains count twice), which prefers states that help on average without hurting any task much.
    """
    if aggregate not in DEV_AGGREGATES:
        raise ValueError(f"aggregate must be one of {DEV_AGGREGATES}, got {aggregate!r}")
    if not gains:
        raise ValueError("no task has dev queries")
    values = np.array(list(gains.values()))
    if aggregate == "mean":
        return float(values.mean())
    if aggregate == "min":
        return float(values.min())
    return float(values.mean() + np.minimum(values, 0).mean())


GATE_RULES = ("confident", "positive")
"""How :func:`~hydra_st.hydra.pipeline.train_model` opens a task's gate from its dev queries: ``"confident"``
(the default) when the one-sided 95% lower bound of the mean per-query dev gain is above 0 (see
:func:`gain_lower_bound`); ``"positive"`` when the mean dev gain is above 0. Chosen on held-out dev halves, never
test: ``evaluation/hydra_gate_rule.py``."""

GATE_CONFIDENCE_Z = 1.645
"""z of the one-sided 95% lower bound that the ``"confident"`` gate rule compares with 0."""


def gain_lower_bound(gains: np.ndarray, z: float = GATE_CONFIDENCE_Z) -> float:
    """One-sided lower confidence bound of a mean per-query gain: ``mean − z · sd / √n``.

    ``-inf`` for fewer than two queries (no spread to judge the mean by), so a gate never opens on one query.

    Example:
        >>> round(gain_lower_bound(np.array([0.02, 0.03, 0.01, 0.02])), 4)  # a steady gain
        0.0133
        >>> gain_lower_bound(np.array([0.3, -0.2, 0.0, -0.04])) < 0  # mean +0.015, but it is noise
        True
    """
    gains = np.asarray(gains, dtype=np.float64)
    if len(gains) < 2:
        return -math.inf
    return float(gains.mean() - z * gains.std(ddof=1) / math.sqrt(len(gains)))


def per_query_dev_gains(model: Any, task: Any, queries: Any = None) -> np.ndarray:
    """Per-query nDCG@10 of Hydra with the task's card minus the base model's, in query order.

    ``queries`` is a :class:`~hydra_st.hydra.tasks.QuerySet` with qrels (default: the task's dev queries).
    """
    queries = task.dev if queries is None else queries
    if not len(queries):
        return np.zeros(0)
    base_run = dense_run(queries.embeddings, queries.ids, task.doc_embeddings, task.doc_ids, top_k=100)
    head_run = hydra_run(model, task.card, queries.ids, queries.embeddings, task.doc_ids, task.doc_embeddings)
    base = evaluate_run(queries.qrels, base_run, metrics=("ndcg@10",)).by_query("ndcg@10")
    head = evaluate_run(queries.qrels, head_run, metrics=("ndcg@10",)).by_query("ndcg@10")
    return np.array([head[q] - base[q] for q in queries.ids if q in base])


def dev_gain_lower_bounds(model: Any, tasks: Sequence[Any], z: float = GATE_CONFIDENCE_Z) -> dict[str, float]:
    """:func:`gain_lower_bound` of each task's per-query dev gains (tasks with two or more dev queries; never test).

    A task left out has no bound to open its gate with, so it stays closed (and every value is finite, for JSON).
    """
    return {t.name: gain_lower_bound(per_query_dev_gains(model, t), z) for t in tasks if len(t.dev) >= 2}


def base_dev_scores(tasks: Sequence[Any]) -> dict[str, float]:
    """Dev nDCG@10 of the base model per task."""
    out = {}
    for task in tasks:
        if len(task.dev):
            run = dense_run(task.dev.embeddings, task.dev.ids, task.doc_embeddings, task.doc_ids, top_k=100)
            out[task.name] = evaluate_run(task.dev.qrels, run, metrics=("ndcg@10",)).aggregate["ndcg@10"]
    return out


def results_table(results: dict[str, dict[str, dict[str, float]]], metric: str = "ndcg@10") -> str:
    """Markdown table: one row per task, one column per system, plus the mean row."""
    systems = [s for s in SYSTEMS if any(s in r for r in results.values())]
    lines = [f"| task ({metric}) | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]
    for name, res in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{res[s][metric]:.4f}" if s in res else "–" for s in systems) + " |")
    means = []
    for s in systems:
        vals = [r[s][metric] for r in results.values() if s in r]
        means.append(f"{np.mean(vals):.4f}" if len(vals) == len(results) else "–")
    lines.append("| **mean** | " + " | ".join(means) + " |")
    return "\n".join(lines)
