"""Per-task training and evaluation data for Hydra, built once from the foundation's loaders and caches.

For each task (a dataset under the data dir) this assembles:

* **evaluation queries**: the judged queries of the ``test`` split, with their qrels (read only by evaluation);
* **training queries**: the ``train`` split's queries where the dataset has one (scifact, nfcorpus), with their
  *train* qrels (read only when preferences use ``judged_positives``); otherwise *pseudo-queries* made from the
  corpus (see :func:`pseudo_queries`), without judgments. A query that is evaluated on is never trained on:
  train-split query ids are disjoint from test query ids, and no training or dev query repeats the text of a
  query outside the training splits (:mod:`hydra_st.data.decontamination`: scifact and nfcorpus hold test
  queries again under train ids, and a pseudo-query made from a title can equal a test query);
* **dev queries** for early stopping: nfcorpus's ``dev`` split; for scifact a deterministic 10% of its train
  queries (held out of training, judged by the *train* qrels); for the others held-out pseudo-queries whose
  source document is the one relevant answer;
* base-model embeddings of the corpus (the foundation's :class:`~hydra_st.teachers.DenseTeacher` cache) and of
  the queries (cached here under ``<cache>/hydra/queries``).

Training uses no test query and no test judgment: the preferences and the trainer read only the ``train`` and
``dev`` query sets. ``qrels/test.tsv`` is read by :func:`build_task` only with ``with_test=True`` (the default), to
fill the ``test`` query set for the evaluation step and to check that no training query is a test query.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hydra_st.data import RetrievalDataset, available_splits, load_dataset, load_dataset_corpus
from hydra_st.data.decontamination import drop_held_out_repeats, held_out_query_texts
from hydra_st.data.pseudo_queries import pseudo_queries, stable_fraction
from hydra_st.settings import resolve_cache_dir
from hydra_st.utils.hashing import fingerprint_texts
from hydra_st.utils.io import atomic_save_numpy, load_numpy

from .task_card import TaskCard

logger = logging.getLogger(__name__)

DEV_FRACTION = 0.1
"""Share of a train split's queries held out for early stopping when the dataset has no dev split (scifact)."""


@dataclass
class QuerySet:
    """Query ids, texts, base embeddings and (for dev/test) judgments.

    Example:
        >>> qs = QuerySet(["q1", "q2"], ["why do cats purr", "dog breeds"], qrels={"q1": {"d1": 1}})
        >>> len(qs), qs.as_dict()
        (2, {'q1': 'why do cats purr', 'q2': 'dog breeds'})
    """

    ids: list[str]
    texts: list[str]
    embeddings: np.ndarray | None = None
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def as_dict(self) -> dict[str, str]:
        """``{query_id: text}``, in query order (the form the BM25 teacher searches)."""
        return dict(zip(self.ids, self.texts, strict=True))


@dataclass
class TaskData:
    """Everything Hydra needs about one task.

    Example:
        >>> card = TaskCard(name="toy", description="Find the document that answers a question.")
        >>> task = TaskData("toy", card, ["d1", "d2"], ["cats purr", "dogs bark"], np.eye(2, dtype="float32"),
        ...                 train=QuerySet(["q1"], ["why do cats purr"]), dev=QuerySet([], []), test=QuerySet([], []))
        >>> task.card.name, task.doc_embeddings.shape, len(task.train), task.train_source
        ('toy', (2, 2), 1, 'train split')
    """

    name: str
    card: TaskCard
    doc_ids: list[str]
    doc_texts: list[str]
    doc_embeddings: np.ndarray
    train: QuerySet
    dev: QuerySet
    test: QuerySet
    train_source: str = "train split"


class QueryEmbeddingCache:
    """Base-model query embeddings cached on disk by (model fingerprint, query texts).

    Example:
        >>> import tempfile
        >>> from types import SimpleNamespace
        >>> calls = []  # a stand-in base model that records each encode_query call
        >>> base = SimpleNamespace(encode_query=lambda texts, **kw: calls.append(texts) or np.ones((len(texts), 2)))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     cache = QueryEmbeddingCache(base, "toy-model", cache_dir=tmp)
        ...     emb = [cache.encode(["q1"], ["why do cats purr"]) for _ in range(2)]
        >>> emb[1].shape, emb[1].dtype, len(calls)  # the second call read the cache
        ((1, 2), dtype('float32'), 1)
    """

    def __init__(
        self, model: Any, model_fingerprint: str, cache_dir: str | Path | None = None, show_progress_bar: bool = True
    ) -> None:
        self.model = model
        self.root = resolve_cache_dir(cache_dir) / "hydra" / "queries" / model_fingerprint
        self.show_progress_bar = show_progress_bar  # shown only for more than 500 queries to encode

    def encode(self, ids: list[str], texts: list[str]) -> np.ndarray:
        """Normalised base-model embeddings of the queries ``texts`` (``[len(ids), dim]`` float32), from the cache.

        Args:
            ids: Query ids, aligned with ``texts`` (they and the texts key the cache file).
            texts: Query texts.

        Returns:
            The embeddings, row ``i`` for ``texts[i]``. A cache file that cannot be read, or that holds other than
            one finite float32 row per query, is re-encoded and rewritten, with a warning.
        """
        if not ids:
            return np.zeros((0, self.model.get_embedding_dimension()), dtype=np.float32)
        path = self.root / f"{fingerprint_texts(ids, texts)}.npy"
        if path.is_file():
            try:
                emb = load_numpy(path)
                if emb.ndim != 2 or emb.shape[0] != len(ids) or emb.dtype != np.float32:
                    raise ValueError(
                        f"{path}: holds a {emb.dtype} array of shape {emb.shape}, expected float32 [{len(ids)}, dim]"
                    )
                if not np.isfinite(emb).all():
                    raise ValueError(f"{path}: holds non-finite values")
                return emb
            except ValueError as exc:
                logger.warning("query embedding cache unusable (%s); re-encoding the queries", exc)
        emb = self.model.encode_query(
            texts,
            batch_size=64,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=self.show_progress_bar and len(ids) > 500,
        ).astype(np.float32)
        atomic_save_numpy(path, emb)
        return emb


def build_task(
    name: str,
    teacher: Any,
    query_cache: QueryEmbeddingCache,
    card: TaskCard | None = None,
    data_dir: str | Path | None = None,
    n_pseudo: int = 400,
    seed: int = 0,
    with_test: bool = True,
) -> TaskData:
    """Assemble :class:`TaskData` for dataset ``name``.

    Args:
        name: Dataset folder name under the data dir.
        teacher: The foundation's ``DenseTeacher`` on the base model (its corpus cache is reused).
        query_cache: Query embedding cache on the same base model.
        card: The task's card (default: the bundled card of that name).
        data_dir: Data dir (default: ``$HYDRA_ST_DATA_DIR``).
        n_pseudo: Pseudo-queries per task without a train split (a further 25% are made for dev).
        seed: Seed of the deterministic splits (and of the pseudo-queries).
        with_test: Load the test split and its qrels, for the evaluation step and for the check that no training
            query is a test query; ``False`` reads no test qrels (the ``test`` query set stays empty). Either way
            ``queries.jsonl`` is read so that no training or dev query repeats the text of a query outside the
            training splits (:mod:`hydra_st.data.decontamination`).

    Returns:
        The task's :class:`TaskData`.
    """
    from .cards import load_card

    card = card or load_card(name)
    splits = available_splits(name, data_dir)
    test_ds = load_dataset(name, "test", data_dir, download=False) if with_test else None
    if "train" in splits:
        train_ds = load_dataset(name, "train", data_dir, download=False)
        base_ds = train_ds
        judged = train_ds.judged_queries
        if "dev" in splits:
            dev_ds = load_dataset(name, "dev", data_dir, download=False)
            dev_q = {q: dev_ds.queries[q].text for q in dev_ds.judged_queries}
            dev_qrels = {q: dev_ds.qrels[q] for q in dev_q}
            train_q = {q: v.text for q, v in judged.items()}
        else:
            train_q, dev_q = {}, {}
            for qid, q in judged.items():
                (dev_q if stable_fraction(qid, seed) < DEV_FRACTION else train_q)[qid] = q.text
            dev_qrels = {q: train_ds.qrels[q] for q in dev_q}
        train_qrels = {q: train_ds.qrels[q] for q in train_q if q in train_ds.qrels}
        source = "train split"
    else:
        # the corpus alone (no train split): the training and dev queries are pseudo-queries made from it
        corpus = load_dataset_corpus(name, data_dir, download=False)
        base_ds = RetrievalDataset(name=name, split="corpus", corpus=corpus, queries={})
        pq, src = pseudo_queries(base_ds, n_pseudo + n_pseudo // 4, seed=seed)
        ids = list(pq)
        n_train = min(n_pseudo, (4 * len(ids)) // 5)  # small corpora: 80% train, 20% dev
        train_q = {q: pq[q] for q in ids[:n_train]}
        dev_q = {q: pq[q] for q in ids[n_train:]}
        dev_qrels = {q: {src[q]: 1} for q in dev_q}
        train_qrels = {}
        source = "pseudo-queries (title or first sentence of seeded-random documents)"
    # a training or dev query that repeats the text of a query outside the training splits (the same test query
    # under another id, or a pseudo-query equal to one) is left out: ids alone do not keep test queries out
    held_out = held_out_query_texts(name, [*train_q, *dev_q], data_dir)
    train_q, dropped = drop_held_out_repeats(train_q, held_out)
    dev_q, dropped_dev = drop_held_out_repeats(dev_q, held_out)
    train_qrels = {q: r for q, r in train_qrels.items() if q in train_q}
    dev_qrels = {q: dev_qrels[q] for q in dev_q}
    if "train" not in splits:
        source = f"{len(train_q)} {source}"
    if dropped or dropped_dev:
        logger.info(
            "%s: left out %s training and %s dev queries that repeat a held-out query", name, dropped, dropped_dev
        )
        source += f"; {len(dropped) + len(dropped_dev)} left out as repeats of a held-out query's text"
    if test_ds is not None:
        overlap = set(train_q) & set(test_ds.judged_queries)
        if overlap:
            raise RuntimeError(f"{name}: {len(overlap)} training queries are also test queries; refusing to train")
    doc_ids, doc_texts = base_ds.doc_ids, base_ds.doc_texts
    doc_emb = teacher.encode_corpus(doc_ids, doc_texts)

    def qset(queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> QuerySet:
        ids, texts = list(queries), list(queries.values())
        return QuerySet(ids, texts, query_cache.encode(ids, texts), qrels)

    test = QuerySet([], [])
    if test_ds is not None:
        tq = {q: test_ds.queries[q].text for q in test_ds.judged_queries}
        test = qset(tq, {q: test_ds.qrels[q] for q in tq})
    return TaskData(
        name=name,
        card=card,
        doc_ids=doc_ids,
        doc_texts=doc_texts,
        doc_embeddings=doc_emb,
        train=qset(train_q, train_qrels),
        dev=qset(dev_q, dev_qrels),
        test=test,
        train_source=source,
    )
