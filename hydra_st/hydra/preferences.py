"""Pairwise preferences for Hydra from the RRF(BM25, dense) teacher, with confidences.

For each training query the teacher is RRF over BM25 and the frozen base model's dense ranking. Its top ``K``
fused documents are the candidates. A pair ``(i, j)`` says candidate ``i`` should score above candidate ``j``;
pairs join the fused ranking's confident top (ranks ``< top_n``) with its lower ranks (``>= hard_lo``), because
random pairs inside the top 30 are mostly pairs of non-relevant documents (see the head-design probe). Each pair
gets a confidence in ``[0, 1]``: the share of the teachers that order the two documents the same way as the
fusion, times a rank-gap factor ``min(1, (rank_j - rank_i) / gap_scale)``. Everything is deterministic under
``seed``. Only training queries are used; test judgments are never read here.

With ``judged_positives`` (for tasks with a train split, whose training queries carry *train* qrels), the judged
relevance is one more, certain teacher: a query's judged-relevant documents go to the top of its candidate list (by
grade, then fused rank; also those the fusion missed), a pair is only drawn where the preferred document's grade is
above the other's or neither is judged, and a pair a judgment decides has teacher agreement 1. This applies only to
queries with at most ``top_n`` judged documents, which fit on the preferred side: a query with more (nfcorpus's train
queries have 43 on average, all of grade 1) marks a topic, not a top, and keeps the teachers' pairs.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hydra_st.retrieval import dense_run
from hydra_st.settings import resolve_cache_dir
from hydra_st.teachers import BM25Teacher, reciprocal_rank_fusion
from hydra_st.teachers.fusion import ranked
from hydra_st.utils.hashing import fingerprint_texts
from hydra_st.utils.io import atomic_save_safetensors

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreferenceConfig:
    """How candidates and pairs are drawn.

    Args:
        candidates: Fused top-``K`` documents kept per query.
        pairs_per_query: Pairs drawn per query.
        top_n: Ranks ``< top_n`` are the "preferred" side of a pair.
        hard_lo: Ranks ``>= hard_lo`` are the "other" side (``mode="top_vs_rest"``).
        gap_scale: Rank gap at which the gap factor reaches 1.
        rrf_k: RRF constant.
        depth: Depth of each teacher run that takes part in the fusion.
        mode: ``"top_vs_rest"`` or ``"random"`` (random ordered pairs in the top 30; for ablations).
        seed: Seed of the pair sampling.
        confidence_weighted: Weight each pair by the teachers' agreement times its rank-gap factor; ``False``
            gives every sampled pair weight 1 (for ablations).
        judged_positives: Use the training queries' judgments (train qrels, where the task has them) as a
            certain teacher on top of the fusion (see the module docstring).

    Example:
        >>> config = PreferenceConfig(candidates=20, pairs_per_query=8)
        >>> config.top_n, config.hard_lo, config.mode, config.key() == PreferenceConfig(20, 8).key()
        (3, 10, 'top_vs_rest', True)
        >>> PreferenceConfig(top_n=12)
        Traceback (most recent call last):
        ...
        ValueError: need 0 < top_n (12) < hard_lo (10) < candidates (50)
    """

    candidates: int = 50
    pairs_per_query: int = 16
    top_n: int = 3
    hard_lo: int = 10
    gap_scale: float = 10.0
    rrf_k: float = 60.0
    depth: int = 100
    mode: str = "top_vs_rest"
    seed: int = 0
    confidence_weighted: bool = True
    judged_positives: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("top_vs_rest", "random"):
            raise ValueError(f"PreferenceConfig.mode must be 'top_vs_rest' or 'random', got {self.mode!r}")
        if not 0 < self.top_n < self.hard_lo < self.candidates:
            raise ValueError(
                f"need 0 < top_n ({self.top_n}) < hard_lo ({self.hard_lo}) < candidates ({self.candidates})"
            )
        if self.pairs_per_query < 1:
            raise ValueError(f"pairs_per_query must be >= 1, got {self.pairs_per_query}")

    def key(self) -> str:
        """Cache key of the settings (``confidence_weighted`` counts only when off and ``judged_positives`` only
        when on, so that preference caches written before those options existed stay valid)."""
        fields = asdict(self)
        if fields["confidence_weighted"]:
            del fields["confidence_weighted"]
        if not fields["judged_positives"]:
            del fields["judged_positives"]
        return hashlib.blake2b(repr(sorted(fields.items())).encode(), digest_size=8).hexdigest()


@dataclass
class Preferences:
    """Candidates, teacher scores and weighted pairs for a set of queries (arrays aligned by query row).

    Example:
        >>> bm25 = {"q": {f"d{i}": 20.0 - i for i in range(20)}}
        >>> prefs = build_preferences(["q"], [bm25], [f"d{i}" for i in range(20)],
        ...                           PreferenceConfig(candidates=15, pairs_per_query=4, hard_lo=5))
        >>> prefs.query_ids, prefs.candidates.shape, prefs.pairs.shape, prefs.confidence.shape
        (['q'], (1, 15), (1, 4, 2), (1, 4))
        >>> prefs.candidates[0, :3].tolist(), bool((prefs.pairs[0, :, 0] < 3).all())  # preferred side: the top 3
        ([0, 1, 2], True)
    """

    query_ids: list[str]
    candidates: np.ndarray  # [nq, K] doc row indices, -1 = padding
    teacher_scores: np.ndarray  # [nq, K] RRF scores (0 for padding)
    pairs: np.ndarray  # [nq, P, 2] candidate positions (preferred, other)
    confidence: np.ndarray  # [nq, P] in [0, 1]; 0 for padding pairs

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The four arrays as torch tensors sharing their memory (what the cache file and the trainer hold)."""
        return {
            "candidates": torch.from_numpy(self.candidates),
            "teacher_scores": torch.from_numpy(self.teacher_scores),
            "pairs": torch.from_numpy(self.pairs),
            "confidence": torch.from_numpy(self.confidence),
        }


def _fingerprint_arrays(*arrays: np.ndarray | None, digest_size: int = 12) -> str:
    """Hex digest of float arrays' shapes and float32 values (the embeddings the dense teacher ranks with)."""
    h = hashlib.blake2b(digest_size=digest_size)
    for array in arrays:
        a = np.ascontiguousarray(np.zeros((0,), np.float32) if array is None else array, dtype=np.float32)
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# Attributes that do not change what a lexical teacher returns, left out of its cache key.
_TEACHER_KEY_IGNORED = frozenset({"show_progress_bar", "doc_ids"})


def _teacher_settings(teacher: Any) -> dict[str, Any]:
    """A teacher's class and its public scalar attributes (for ``BM25Teacher``: k1, b, method, stemmer_name,
    stopwords), which is what identifies the ranking it gives."""
    cls = type(teacher)
    scalars = (int, float, str, bool, type(None))
    settings = {
        name: value
        for name, value in getattr(teacher, "__dict__", {}).items()  # vars() fails on a __slots__ class
        if not name.startswith("_") and name not in _TEACHER_KEY_IGNORED and isinstance(value, scalars)
    }
    return {"class": f"{cls.__module__}.{cls.__qualname__}", **settings}


@functools.cache
def _default_bm25_settings() -> dict[str, Any]:
    return _teacher_settings(BM25Teacher())


def teacher_key(teacher: Any) -> str:
    """Cache key of the lexical teacher's settings: empty for a default ``BM25Teacher()`` (the teacher every
    preference cache was built with before the key covered it, so those caches stay valid), else a digest."""
    settings = _teacher_settings(teacher)
    if settings == _default_bm25_settings():
        return ""
    return "-" + hashlib.blake2b(repr(sorted(settings.items())).encode(), digest_size=8).hexdigest()


def _rank_of(run_scores: dict[str, float], depth: int) -> dict[str, int]:
    return {d: r for r, d in enumerate(ranked(run_scores)[:depth])}


def build_preferences(
    query_ids: list[str],
    runs: list[dict[str, dict[str, float]]],
    doc_ids: list[str],
    config: PreferenceConfig = PreferenceConfig(),
    judged: dict[str, dict[str, int]] | None = None,
) -> Preferences:
    """Turn teacher runs (BM25, dense, ...) into candidates and confidence-weighted pairs.

    Args:
        query_ids: The training queries, in the order of the returned arrays' rows.
        runs: One run per teacher, ``{query_id: {doc_id: score}}``; they are fused with RRF.
        doc_ids: The corpus's document ids; candidates are row indices into it.
        config: How candidates and pairs are drawn.
        judged: ``{query_id: {doc_id: grade}}``, training judgments only; used when ``config.judged_positives``
            is on.

    Returns:
        The :class:`Preferences`, one row per query in ``query_ids``.

    Raises:
        ValueError: No runs, or a run names a document that is not in ``doc_ids``.

    Example:
        >>> bm25 = {"q": {f"d{i}": 20.0 - i for i in range(20)}}
        >>> dense = {"q": {f"d{i}": 1.0 - i / 40 for i in range(20)}}
        >>> prefs = build_preferences(["q"], [bm25, dense], [f"d{i}" for i in range(20)],
        ...                           PreferenceConfig(candidates=15, pairs_per_query=4, hard_lo=5))
        >>> prefs.pairs.shape, bool((prefs.confidence > 0).all())
        ((1, 4, 2), True)
    """
    if not runs:
        raise ValueError("build_preferences needs at least one teacher run")
    row_of = {d: i for i, d in enumerate(doc_ids)}
    fused = reciprocal_rank_fusion(runs, k=config.rrf_k, depth=config.depth)
    teacher_ranks = [{q: _rank_of(r.get(q, {}), config.depth) for q in query_ids} for r in runs]
    nq, k, p = len(query_ids), config.candidates, config.pairs_per_query
    cand = np.full((nq, k), -1, dtype=np.int64)
    tscore = np.zeros((nq, k), dtype=np.float32)
    pairs = np.zeros((nq, p, 2), dtype=np.int64)
    conf = np.zeros((nq, p), dtype=np.float32)
    use_judged = config.judged_positives and judged is not None
    for row, qid in enumerate(query_ids):
        order = ranked(fused.get(qid, {}))
        unknown = [d for d in order[:k] if d not in row_of]
        if unknown:
            raise ValueError(f"teacher run for query {qid!r} names documents not in the corpus, e.g. {unknown[0]!r}")
        grade = {d: g for d, g in (judged or {}).get(qid, {}).items() if g > 0 and d in row_of} if use_judged else {}
        if len(grade) > config.top_n:  # more judged documents than preferred slots: a topic, not a top; teachers only
            grade = {}
        if grade:  # judged documents first (by grade, then fused rank, then id for the ones the fusion missed)
            fused_rank = {d: r for r, d in enumerate(order)}
            judged_first = sorted(grade, key=lambda d: (-grade[d], fused_rank.get(d, len(order)), d))
            order = judged_first + [d for d in order if d not in grade]
        order = order[:k]
        n = len(order)
        cand[row, :n] = [row_of[d] for d in order]
        tscore[row, :n] = [fused.get(qid, {}).get(d, 0.0) for d in order]
        if n <= config.hard_lo:
            continue
        if config.mode == "top_vs_rest":
            options = list(itertools.product(range(min(config.top_n, n)), range(config.hard_lo, n)))
        else:
            top = min(30, n)
            options = [(i, j) for i in range(top) for j in range(i + 1, top)]
        if grade:  # a judgment never says "prefer this one" against a document judged at least as relevant
            level = [grade.get(d, 0) for d in order]
            options = [(i, j) for i, j in options if level[i] > level[j] or level[i] == level[j] == 0]
            if not options:
                continue
        seed = int.from_bytes(hashlib.blake2b(f"{config.seed}:{qid}".encode(), digest_size=8).digest(), "little")
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(options), size=min(p, len(options)), replace=False)
        for slot, c in enumerate(chosen):
            i, j = options[int(c)]
            di, dj = order[i], order[j]
            votes = []
            for ranks in teacher_ranks:
                ri = ranks[qid].get(di, config.depth)
                rj = ranks[qid].get(dj, config.depth)
                votes.append(1.0 if ri < rj else 0.5 if ri == rj else 0.0)
            if grade.get(di, 0) > grade.get(dj, 0):  # decided by a judgment: certain
                votes = [1.0]
            gap = min(1.0, (j - i) / config.gap_scale)
            pairs[row, slot] = (i, j)
            conf[row, slot] = float(np.mean(votes)) * gap if config.confidence_weighted else 1.0
    return Preferences(list(query_ids), cand, tscore, pairs, conf)


def task_preferences(
    task: Any,
    bm25_factory: Any,
    config: PreferenceConfig = PreferenceConfig(),
    cache_dir: str | Path | None = None,
    split: str = "train",
) -> Preferences:
    """Preferences for a task's ``train`` (or ``dev``) queries, cached under ``<cache>/hydra/preferences``.

    ``bm25_factory()`` returns an unindexed BM25 teacher (the foundation's ``BM25Teacher``); it is built on every
    call, for its settings, and indexed only on a cache miss. The cache key covers everything the preferences are
    made from: the queries, the corpus, the settings, the BM25 teacher's settings (:func:`teacher_key`), the
    judgments (with ``judged_positives``) and the base model's embeddings of the corpus and of the queries (the
    dense teacher), so preferences made with one base model or one BM25 configuration are never reused for
    another. A cache file that cannot be read is rebuilt, with a warning.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    qs = getattr(task, split)
    corpus_key = fingerprint_texts(task.doc_ids, task.doc_texts)
    key = fingerprint_texts(qs.ids, qs.texts) + corpus_key + config.key()
    key += _fingerprint_arrays(task.doc_embeddings, qs.embeddings)  # the dense teacher: the base model's vectors
    teacher = bm25_factory()  # unindexed, so cheap; its k1, b, method, stemmer and stop words change the BM25 run
    key += teacher_key(teacher)
    judged = qs.qrels if config.judged_positives and qs.qrels else None
    if judged is not None:  # the judgments are part of what the preferences are made from
        key += fingerprint_texts(sorted(judged), [repr(sorted(judged[q].items())) for q in sorted(judged)])
    path = resolve_cache_dir(cache_dir) / "hydra" / "preferences" / f"{task.name}-{split}-{key}.safetensors"
    if path.is_file():
        try:
            t = load_file(str(path))
            prefs = Preferences(
                list(qs.ids),
                t["candidates"].numpy(),
                t["teacher_scores"].numpy(),
                t["pairs"].numpy(),
                t["confidence"].numpy(),
            )
            shapes = [a.shape for a in (prefs.candidates, prefs.teacher_scores, prefs.pairs, prefs.confidence)]
            nq, k, p = len(qs.ids), config.candidates, config.pairs_per_query
            if shapes != [(nq, k), (nq, k), (nq, p, 2), (nq, p)]:
                raise ValueError(f"arrays of shapes {shapes}, expected {[(nq, k), (nq, k), (nq, p, 2), (nq, p)]}")
            return prefs
        except (SafetensorError, KeyError, OSError, ValueError) as exc:  # a damaged cache file is rebuilt
            logger.warning("preference cache %s is unreadable (%s: %s); rebuilding it", path, type(exc).__name__, exc)
            path.unlink(missing_ok=True)
    bm25 = teacher.index(task.doc_ids, task.doc_texts)
    bm25_run = bm25.search(qs.as_dict(), top_k=config.depth)
    dense = dense_run(qs.embeddings, qs.ids, task.doc_embeddings, task.doc_ids, top_k=config.depth)
    prefs = build_preferences(qs.ids, [bm25_run, dense], task.doc_ids, config, judged)
    atomic_save_safetensors(path, prefs.to_tensors(), metadata={"task": task.name, "split": split})
    return prefs
