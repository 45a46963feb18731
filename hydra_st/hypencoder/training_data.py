"""Training data of the Hypencoder: teacher candidates per query, cached query token states, batches.

The foundation's teachers (BM25 and the dense base model, fused with RRF) label each training query's candidates;
:func:`build_teacher_examples` caches the fused run. With a frozen document route, document vectors come from the
DenseTeacher's embedding cache (:func:`hydra_st.hypencoder.encoding.document_vectors`), so no corpus is re-encoded
per run or per epoch.
"""

from __future__ import annotations

import functools
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hydra_st.hypencoder.encoding import route_modules
from hydra_st.hypencoder.model import Hypencoder

logger = logging.getLogger(__name__)

TEACHER_RUN_VERSION = "2"
"""Part of the teacher-run cache key; bump it when the cached content changes meaning."""


@dataclass
class TeacherExamples:
    """Teacher candidates of one dataset's training queries (indices into ``doc_ids``).

    Example:
        >>> ex = TeacherExamples("toy", ["d0", "d1", "d2"], ["a", "b", "c"], ["q0"], ["a query"],
        ...                      candidates=[np.array([2, 0, 1])], teacher_scores=[np.array([3.0, 2.0, 1.0])],
        ...                      positives=[np.array([0])])  # positives: positions in candidates
        >>> batch = sample_batch([(0, 0)], [ex], batch_size=1, num_neg=2, rng=random.Random(0))
        >>> dataset, query, docs, scores = batch[0]
        >>> dataset, query, docs[0].item(), sorted(docs[1:].tolist())  # the positive's doc row first, then negatives
        (0, 0, 2, [0, 1])
    """

    name: str
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    candidates: list[np.ndarray]
    teacher_scores: list[np.ndarray]
    positives: list[np.ndarray]


@functools.lru_cache(maxsize=2)
def _dense_teacher_by_id(model_id: str, cache_dir: str | None, show_progress_bar: bool) -> Any:
    """The dense teacher of a model id, loaded once: every dataset's teacher-run cache key needs its fingerprint,
    and a cache hit needs nothing else from it."""
    from hydra_st.teachers import DenseTeacher

    return DenseTeacher(model_id, cache_dir=cache_dir, show_progress_bar=show_progress_bar)


def build_teacher_examples(
    name: str,
    split: str = "train",
    depth: int = 100,
    rrf_k: float = 60.0,
    label_scale: float = 20.0,
    base_model: Any = None,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    max_queries: int | None = None,
    show_progress_bar: bool = True,
    use_qrels: bool = True,
    num_pseudo_queries: int = 400,
    pseudo_seed: int = 0,
) -> TeacherExamples:
    """RRF(BM25, dense) candidates and teacher scores for the ``split`` queries of dataset ``name``.

    ``split="pseudo"`` makes ``num_pseudo_queries`` pseudo-queries from the corpus instead (titles or first
    sentences, see :mod:`hydra_st.data.pseudo_queries`; their source document is their relevant document), for
    collections without training queries; it reads no queries file and no qrels. The fused run is cached as JSON
    under ``<cache dir>/hypencoder/teacher_runs/`` (atomic write). Its key covers everything the run depends on:
    the corpus (ids and texts, in order), the query ids and texts, the dense teacher's model fingerprint (its
    weights, not its name), the BM25 settings, ``depth`` and ``rrf_k``; a damaged cache file is logged as a warning
    and rebuilt.
    """
    from hydra_st.data import load_dataset, load_dataset_corpus
    from hydra_st.data.decontamination import drop_held_out_repeats, held_out_query_texts
    from hydra_st.data.pseudo_queries import pseudo_queries
    from hydra_st.settings import DEFAULT_BASE_MODEL, resolve_cache_dir
    from hydra_st.teachers import BM25Teacher, DenseTeacher, reciprocal_rank_fusion
    from hydra_st.utils.hashing import fingerprint_texts
    from hydra_st.utils.io import atomic_write_json

    if split == "test":
        raise ValueError("training never reads the test split; use split='train' (or 'dev' where it exists)")
    if split == "pseudo":
        corpus = load_dataset_corpus(name, data_dir)
        n = num_pseudo_queries if max_queries is None else min(num_pseudo_queries, max_queries)
        query_texts, source = pseudo_queries(corpus, n, seed=pseudo_seed)
        relevant = {q: {d} for q, d in source.items()}
        doc_ids, doc_texts = list(corpus), [doc.full_text for doc in corpus.values()]
    else:
        ds = load_dataset(name, split=split, data_dir=data_dir)
        query_texts = {q: query.text for q, query in ds.judged_queries.items()}
        relevant = {q: ds.relevant(q) for q in query_texts}
        doc_ids, doc_texts = ds.doc_ids, ds.doc_texts
    # a training query that repeats the text of a query outside this split (the same test query under another id,
    # or a pseudo-query equal to one) is left out: ids alone do not keep test queries out of training
    query_texts, dropped = drop_held_out_repeats(query_texts, held_out_query_texts(name, query_texts, data_dir))
    if dropped:
        logger.info("%s/%s: left out %d queries that repeat a held-out query: %s", name, split, len(dropped), dropped)
    qids = sorted(query_texts)
    if max_queries is not None:
        qids = qids[:max_queries]
    texts = {q: query_texts[q] for q in qids}
    bm25_teacher = BM25Teacher()
    if base_model is None or isinstance(base_model, str):  # one load (and weight hash) per model id and process
        dense_teacher = _dense_teacher_by_id(base_model or DEFAULT_BASE_MODEL, cache_dir, show_progress_bar)
    else:
        dense_teacher = DenseTeacher(base_model, cache_dir=cache_dir, show_progress_bar=show_progress_bar)
    parts = [
        TEACHER_RUN_VERSION,
        name,
        split,
        repr(depth),
        repr(float(rrf_k)),
        repr(bm25_teacher),  # the BM25 settings (k1, b, method, stemmer, stop words)
        fingerprint_texts(doc_ids, doc_texts),  # the corpus: ids, texts and order
        fingerprint_texts(qids, [texts[q] for q in qids]),  # the queries
        dense_teacher.model_fingerprint,  # the dense teacher's weights and encode settings, not its name
    ]
    key = fingerprint_texts(parts, parts)
    path = resolve_cache_dir(cache_dir) / "hypencoder" / "teacher_runs" / f"{name}-{split}-{key}.json"
    fused = _load_teacher_run(path) if path.is_file() else None
    if fused is None:
        bm25 = bm25_teacher.index(doc_ids, doc_texts).search(texts, top_k=depth)
        dense = dense_teacher.index(doc_ids, doc_texts).search(texts, top_k=depth)
        fused = reciprocal_rank_fusion([bm25, dense], k=rrf_k, depth=depth, top_k=depth)
        atomic_write_json(path, fused, indent=None)
    position = {d: i for i, d in enumerate(doc_ids)}
    bonus = label_scale / (rrf_k + 1.0)
    ex = TeacherExamples(name, doc_ids, doc_texts, [], [], [], [], [])
    for qid in qids:
        run = fused.get(qid, {})
        rel = relevant[qid] if use_qrels else set()
        cand = [d for d in run]
        # sorted: a set's order changes with the process's hash seed, and with it the sampled positives
        extra = sorted(d for d in rel if d not in run and d in position)
        ids = cand + extra
        if len(ids) < 2:
            continue
        scores = np.array([label_scale * run.get(d, 0.0) + (bonus if d in rel else 0.0) for d in ids], np.float32)
        pos = np.array([i for i, d in enumerate(ids) if d in rel] or [0], dtype=np.int64)
        ex.query_ids.append(qid)
        ex.query_texts.append(query_texts[qid])
        ex.candidates.append(np.array([position[d] for d in ids], dtype=np.int64))
        ex.teacher_scores.append(scores)
        ex.positives.append(pos)
    return ex


def _load_teacher_run(path: Path) -> dict[str, dict[str, float]] | None:
    """The cached fused run at ``path``, or ``None`` (with a warning naming the file) when it is damaged."""
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("%s: unreadable cached teacher run (%s); rebuilding it", path, exc)
        return None
    if not (isinstance(run, dict) and all(isinstance(docs, dict) and _scores_ok(docs) for docs in run.values())):
        logger.warning("%s: a cached teacher run must map query ids to {doc id: score}; rebuilding it", path)
        return None
    return run


def _scores_ok(docs: dict[Any, Any]) -> bool:
    return all(isinstance(d, str) and isinstance(s, (int, float)) and not isinstance(s, bool) for d, s in docs.items())


@torch.no_grad()
def query_token_states(model: Hypencoder, texts: list[str], batch_size: int = 128) -> tuple[Tensor, Tensor]:
    """Token states ``[n, T, h]`` and masks ``[n, T]`` of the query route's transformer (padded to one ``T``)."""
    transformer = query_transformer(model)
    states, masks = [], []
    for start in range(0, len(texts), batch_size):
        feats = transformer.preprocess(texts[start : start + batch_size])
        feats = {k: v.to(model.device) if isinstance(v, Tensor) else v for k, v in feats.items()}
        out = transformer(feats)
        states.append(out["token_embeddings"].float().cpu())
        masks.append(out["attention_mask"].cpu())
    t_max = max(s.shape[1] for s in states)
    states = [torch.nn.functional.pad(s, (0, 0, 0, t_max - s.shape[1])) for s in states]
    masks = [torch.nn.functional.pad(m, (0, t_max - m.shape[1])) for m in masks]
    return torch.cat(states), torch.cat(masks)


def query_transformer(model: Hypencoder) -> Any:
    """The transformer of the query route (the shared one, or the query route's own)."""
    return route_modules(model, "query")[0]


def sample_batch(
    examples: list[tuple[int, int]],
    data: list[TeacherExamples],
    batch_size: int,
    num_neg: int,
    rng: random.Random,
    balance: bool = False,
) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(dataset, query, doc indices [1+n], teacher scores [1+n])`` for a random batch of queries.

    With ``balance`` every query picks its dataset uniformly first, so a large dataset does not drown a small one.
    """
    batch = []
    if balance:
        picked: set[tuple[int, int]] = set()
        usable = [d for d, ex in enumerate(data) if ex.query_ids]
        while len(picked) < min(batch_size, len(examples)):
            d = rng.choice(usable)
            picked.add((d, rng.randrange(len(data[d].query_ids))))
        chosen = sorted(picked)
        rng.shuffle(chosen)
    else:
        chosen = rng.sample(examples, min(batch_size, len(examples)))
    for ds_i, q_i in chosen:
        ex = data[ds_i]
        cand, scores, pos = ex.candidates[q_i], ex.teacher_scores[q_i], ex.positives[q_i]
        p = int(rng.choice(list(pos)))
        pos_set = set(pos.tolist())
        neg_pool = [i for i in range(len(cand)) if i not in pos_set]
        if not neg_pool:
            continue
        negs = rng.sample(neg_pool, num_neg) if len(neg_pool) >= num_neg else rng.choices(neg_pool, k=num_neg)
        order = np.array([p, *negs])
        batch.append((ds_i, q_i, cand[order], scores[order]))
    return batch
