"""A synthetic Hydra task for unit tests: random unit vectors, each query near its own document."""

from __future__ import annotations

import numpy as np

from hydra_st.hydra import TaskCard
from hydra_st.hydra.preferences import PreferenceConfig, build_preferences
from hydra_st.hydra.tasks import QuerySet, TaskData
from hydra_st.retrieval import dense_run


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_task(name: str, seed: int, n_docs: int = 80, n_q: int = 24) -> tuple[TaskData, object]:
    """A task of ``n_docs`` 32-d documents whose query ``i`` lies near document ``i``, and its preferences.

    The first 16 queries train (no qrels); the rest are judged and serve as both dev and test split. The
    preferences fuse the dense run with an oracle that puts each training query's own document first.
    """
    rng = np.random.default_rng(seed)
    docs = _unit(rng.normal(size=(n_docs, 32)))
    queries = _unit(docs[:n_q] + 0.5 * rng.normal(size=(n_q, 32)))
    doc_ids = [f"{name}-d{i}" for i in range(n_docs)]
    qids = [f"{name}-q{i}" for i in range(n_q)]
    train = QuerySet(qids[:16], [f"query {i}" for i in range(16)], queries[:16])
    dev = QuerySet(
        qids[16:],
        [f"query {i}" for i in range(16, n_q)],
        queries[16:],
        {q: {doc_ids[i + 16]: 1} for i, q in enumerate(qids[16:])},
    )
    card = TaskCard(name=name, description=f"Synthetic retrieval task {name}.", example_queries=[f"{name} query"])
    task = TaskData(name, card, doc_ids, [f"doc {i}" for i in range(n_docs)], docs, train, dev, dev)
    run = dense_run(train.embeddings, train.ids, docs, doc_ids, top_k=40)
    # a second "teacher" that knows the true document of each query
    oracle = {q: {doc_ids[i]: 10.0, **{d: s for d, s in list(run[q].items())[:20]}} for i, q in enumerate(train.ids)}
    prefs = build_preferences(train.ids, [run, oracle], doc_ids, PreferenceConfig(candidates=30, pairs_per_query=8))
    return task, prefs


def card(name: str = "toy", description: str = "Find documents about animals.") -> TaskCard:
    return TaskCard(name=name, description=description, example_queries=["why do cats purr"])
