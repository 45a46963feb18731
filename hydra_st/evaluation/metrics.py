"""IR metrics computed by ir_measures on top of pytrec_eval (trec_eval's own code); no metric math here.

Metric names are case-insensitive: ``ndcg@10``, ``mrr@10`` (reciprocal rank within the top 10), ``recall@100``,
``map`` (mean average precision over the whole run), ``map@100``, ``precision@10``, or any ir_measures
name such as ``nDCG@10``, ``RR@10``, ``R@100``, ``AP``, ``P@10``.

Aggregates are means over **every judged query of the split**: a judged query missing from the run (for
example a BM25 query that shares no term with the corpus) counts as 0, as ``trec_eval -c`` does, instead
of silently shrinking the denominator.

Tied scores are ordered as trec_eval orders them (doc id descending) for **every** metric: ir_measures computes
``RR@10`` with its msmarco provider, which breaks ties the other way, so the run is re-scored by its trec_eval rank
before any provider sees it (``mrr@10`` then agrees with ``precision@1`` and with trec_eval's ``recip_rank``).

Example:
    >>> qrels = {"q1": {"d1": 1, "d3": 0}, "q2": {"d2": 1}}
    >>> run = {"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d1": 3.0, "d2": 1.0}}
    >>> result = evaluate_run(qrels, run, metrics=["mrr@10", "recall@1"])
    >>> result.aggregate
    {'mrr@10': 0.75, 'recall@1': 0.5}
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra_st.evaluation.runs import trec_eval_order
from hydra_st.utils.io import atomic_write_json

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100", "map")

_ALIASES = {
    "ndcg": "nDCG",
    "mrr": "RR",
    "rr": "RR",
    "recall": "R",
    "r": "R",
    "map": "AP",
    "ap": "AP",
    "precision": "P",
    "p": "P",
}


def parse_metric(name: str) -> Any:
    """Turn a metric name into an ir_measures measure (``"ndcg@10"`` → ``nDCG@10``).

    Args:
        name: a metric name, case-insensitive (see the module docstring), e.g. ``"mrr@10"`` or ``"RR@10"``.

    Returns:
        The ir_measures measure object; two aliases of one metric give equal measures.

    Raises:
        ValueError: the name does not parse, or names no ir_measures measure.

    Example:
        >>> str(parse_metric("mrr@10")), str(parse_metric("recall@100")), str(parse_metric("map"))
        ('RR@10', 'R@100', 'AP')
    """
    import ir_measures

    match = re.fullmatch(r"\s*([A-Za-z_]+)\s*(?:@\s*(\d+))?\s*", name)
    if match is None:
        raise ValueError(f"cannot parse metric {name!r}; use names like 'ndcg@10', 'mrr@10', 'recall@100', 'map'")
    base, cutoff = match.group(1), match.group(2)
    canonical = _ALIASES.get(base.lower(), base)
    try:
        return ir_measures.parse_measure(f"{canonical}@{cutoff}" if cutoff else canonical)
    except (NameError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown metric {name!r}: {exc}") from exc


@dataclass
class EvaluationResult:
    """Per-query and aggregate metric values of one run.

    Attributes:
        aggregate: metric name → mean over the judged queries.
        per_query: query id → metric name → value.
        num_queries: how many judged queries the means are over.

    Example:
        >>> qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
        >>> result = evaluate_run(qrels, {"q1": {"d1": 1.0}, "q2": {"d1": 1.0}}, metrics=["recall@1"])
        >>> result.num_queries, result.aggregate, result.by_query("recall@1")
        (2, {'recall@1': 0.5}, {'q1': 1.0, 'q2': 0.0})
    """

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    num_queries: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (aggregate, per-query values, metadata)."""
        return {
            "aggregate": self.aggregate,
            "num_queries": self.num_queries,
            "metadata": self.metadata,
            "per_query": self.per_query,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_json` to ``path`` atomically."""
        atomic_write_json(path, self.to_json())

    def by_query(self, metric: str) -> dict[str, float]:
        """One metric's value per query, ``{query_id: value}`` (the input of a paired comparison)."""
        return {qid: values[metric] for qid, values in self.per_query.items()}

    def mean_over(self, query_ids: Iterable[str], metric: str) -> float:
        """Mean of ``metric`` over the judged queries among ``query_ids`` (summed in id order, so the result's last
        bits do not depend on the order of a set); raises ValueError when none of them is judged.

        Example:
            >>> result = EvaluationResult({"ndcg@10": 0.5}, {"a": {"ndcg@10": 1.0}, "b": {"ndcg@10": 0.0}})
            >>> result.mean_over({"a", "z"}, "ndcg@10")
            1.0
        """
        given = list(query_ids)
        judged = sorted(q for q in given if q in self.per_query)
        if not judged:
            raise ValueError(
                f"none of the {len(given)} given query ids (e.g. {sorted(given)[:3]}) is among the "
                f"{len(self.per_query)} judged queries of this result (e.g. {sorted(self.per_query)[:3]}): pass ids "
                "of the qrels split the run was evaluated on"
            )
        return sum(self.per_query[q][metric] for q in judged) / len(judged)


def evaluate_run(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    metadata: dict[str, Any] | None = None,
) -> EvaluationResult:
    """Score ``run`` against ``qrels``.

    Args:
        qrels: ``{query_id: {doc_id: grade}}``; only these queries are evaluated.
        run: ``{query_id: {doc_id: score}}``; queries without judgments are ignored.
        metrics: metric names (see the module docstring). Aliases of one measure (``"mrr@10"`` and ``"RR@10"``)
            may both be given: each name gets the value.
        metadata: stored with the result (dataset, retriever, settings...).

    Returns:
        An :class:`EvaluationResult` keyed by the names as given, averaged over every judged query.

    Raises:
        ValueError: ``qrels`` is empty, a metric name is unknown, or a score is NaN (it has no rank).

    Example:
        >>> qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
        >>> evaluate_run(qrels, {"q1": {"d1": 2.0}, "q2": {"d2": 1.0}}, metrics=["mrr@10", "RR@10"]).aggregate
        {'mrr@10': 1.0, 'RR@10': 1.0}
    """
    import ir_measures

    if not qrels:
        raise ValueError("qrels are empty: nothing to evaluate against")
    names = list(metrics)
    # Several names may spell one measure ("mrr@10", "RR@10"): ir_measures reports each measure once, under its
    # canonical name, so every requested name of that measure must be filled from that one value.
    names_of: dict[str, list[str]] = {}
    unique_measures = []
    for name in names:
        measure = parse_metric(name)
        if str(measure) not in names_of:
            names_of[str(measure)] = []
            unique_measures.append(measure)
        if name not in names_of[str(measure)]:
            names_of[str(measure)].append(name)
    judged = {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    # ids are compared as strings on both sides: a run keyed by int ids must match qrels read from a file
    scored = {
        str(q): _trec_eval_ranks(str(q), {str(d): float(s) for d, s in docs.items()})
        for q, docs in run.items()
        if str(q) in judged and docs
    }
    per_query: dict[str, dict[str, float]] = {qid: dict.fromkeys(names, 0.0) for qid in judged}
    if scored:
        for metric in ir_measures.iter_calc(unique_measures, judged, scored):
            for name in names_of[str(metric.measure)]:
                per_query[metric.query_id][name] = float(metric.value)
    n = len(per_query)
    aggregate = {name: sum(values[name] for values in per_query.values()) / n for name in names}
    return EvaluationResult(aggregate=aggregate, per_query=per_query, num_queries=n, metadata=dict(metadata or {}))


def _trec_eval_ranks(query_id: str, scores: dict[str, float]) -> dict[str, float]:
    """Each score replaced by a strictly decreasing value in trec_eval's order (:func:`trec_eval_order`).

    ir_measures sends some measures (``RR@k``) to other providers than trec_eval, which break ties by doc id
    ascending; with distinct values every provider sees trec_eval's ranking. No trec_eval measure reads the score
    values themselves, so the pytrec_eval metrics do not change (the new values are exact in float32 up to 2**24
    documents per query).

    Example:
        >>> _trec_eval_ranks("q", {"a": 1.0, "z": 1.0, "m": 3.0, "b": 1.0 + 1e-12})
        {'m': 4.0, 'z': 3.0, 'b': 2.0, 'a': 1.0}
    """
    for doc_id, score in scores.items():
        if math.isnan(score):  # NaN compares false with everything: its rank would depend on the provider's sort
            raise ValueError(f"score of document {doc_id!r} for query {query_id!r} is NaN: a run needs real scores")
    order = trec_eval_order(scores)
    return {doc_id: float(len(order) - rank) for rank, doc_id in enumerate(order)}


TRAIN_OVERLAP_POOLS = ("train_pool", "new_pool")
"""Labels of the two groups :func:`split_by_train_overlap` returns, in its order."""


def split_by_train_overlap(
    test_qrels: Mapping[str, Mapping[str, int]], train_qrels: Mapping[str, Mapping[str, int]]
) -> tuple[set[str], set[str]]:
    """Test queries with a relevant document that is also relevant to some training query, and the others.

    A model trained on the train split can score well on the first group by learning *which documents* tend to be
    relevant (a document prior) rather than what makes a document relevant to a query; reporting both groups shows
    which of the two a gain comes from. On scifact, 196 of the 300 test queries are in the first group.

    Args:
        test_qrels: the test split's judgments, ``{query_id: {doc_id: grade}}``.
        train_qrels: the train split's judgments; a grade > 0 marks a document relevant to training.

    Returns:
        ``(overlapping, new)``: the test query ids with a train-relevant relevant document, and the rest (in the
        order of :data:`TRAIN_OVERLAP_POOLS`).

    Example:
        >>> split_by_train_overlap({"t1": {"a": 1}, "t2": {"b": 1, "c": 0}}, {"x": {"a": 2, "c": 1}})
        ({'t1'}, {'t2'})
    """
    train_relevant = {d for docs in train_qrels.values() for d, g in docs.items() if g > 0}
    overlapping = {q for q, docs in test_qrels.items() if any(g > 0 and d in train_relevant for d, g in docs.items())}
    return overlapping, set(test_qrels) - overlapping
