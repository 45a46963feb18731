"""Reciprocal Rank Fusion (Cormack, Clarke and Büttcher, SIGIR 2009)."""

from __future__ import annotations

from collections.abc import Sequence

Run = dict[str, dict[str, float]]
"""A ranking per query: ``{query_id: {doc_id: score}}`` (higher is better), pytrec_eval's format."""


def ranked(scores: dict[str, float]) -> list[str]:
    """Document ids by descending score; ties broken by id so every ranking is deterministic."""
    return sorted(scores, key=lambda doc_id: (-scores[doc_id], doc_id))


def top_k(run: Run, k: int) -> Run:
    """Keep each query's ``k`` best documents."""
    return {qid: {d: scores[d] for d in ranked(scores)[:k]} for qid, scores in run.items()}


def reciprocal_rank_fusion(
    runs: Sequence[Run],
    k: float = 60.0,
    depth: int | None = 100,
    top_k: int | None = None,
    weights: Sequence[float] | None = None,
) -> Run:
    """Fuse runs with RRF: ``score(d) = sum_r w_r / (k + rank_r(d))`` over each run's top ``depth`` documents.

    Args:
        runs: the runs to fuse; a query missing from a run simply gets nothing from it.
        k: the RRF constant (60 in the original paper).
        depth: how many of each run's top documents take part (``None``: all of them).
        top_k: how many fused documents to keep per query (``None``: all).
        weights: one weight per run (default 1 each).

    Returns:
        The fused run, each query's documents ordered by descending RRF score (ties by doc id).

    Raises:
        ValueError: no runs, a weight count that differs from the run count, or ``k < 0``.

    Example:
        >>> bm25 = {"q": {"a": 9.0, "b": 7.0}}
        >>> dense = {"q": {"b": 0.9, "c": 0.8}}
        >>> fused = reciprocal_rank_fusion([bm25, dense], k=60)
        >>> list(fused["q"])
        ['b', 'a', 'c']
    """
    if not runs:
        raise ValueError("reciprocal_rank_fusion needs at least one run")
    if weights is None:
        weights = [1.0] * len(runs)
    if len(weights) != len(runs):
        raise ValueError(f"got {len(weights)} weights for {len(runs)} runs")
    if k < 0:
        raise ValueError(f"the RRF constant k must be >= 0, got {k}")
    fused: dict[str, dict[str, float]] = {}
    for run, weight in zip(runs, weights, strict=True):
        for qid, scores in run.items():
            acc = fused.setdefault(qid, {})
            for rank, doc_id in enumerate(ranked(scores)[:depth], start=1):
                acc[doc_id] = acc.get(doc_id, 0.0) + weight / (k + rank)
    out: Run = {}
    for qid, scores in fused.items():
        order = ranked(scores)[:top_k]
        out[qid] = {d: scores[d] for d in order}
    return out
