"""The baseline retrievers (BM25, dense, RRF of both) run end to end on a dataset split.

Example:
    >>> from hydra_st.evaluation.baselines import BaselineSuite
    >>> suite = BaselineSuite.for_dataset("adi", data_dir="/path/to/beir")  # doctest: +SKIP
    >>> run, result = suite.evaluate("rrf")  # doctest: +SKIP
    >>> round(result.aggregate["ndcg@10"], 3)  # doctest: +SKIP
    0.523
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hydra_st.data import RetrievalDataset, load_dataset
from hydra_st.evaluation.metrics import DEFAULT_METRICS, EvaluationResult, evaluate_run
from hydra_st.settings import DEFAULT_BASE_MODEL
from hydra_st.teachers import BM25Teacher, DenseTeacher, Run, reciprocal_rank_fusion

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

RETRIEVERS = ("bm25", "dense", "rrf")


@dataclass
class BaselineSuite:
    """BM25, dense and RRF retrieval over one dataset split, each teacher built once and reused.

    Attributes:
        dataset: the loaded split.
        top_k: documents kept per query in every run: BM25, dense and the fused RRF run alike.
        rrf_k: the RRF constant.
        rrf_depth: how many of each ranker's top documents RRF fuses (BM25 and dense retrieve
            ``max(top_k, rrf_depth)`` documents, so a depth above ``top_k`` is honoured).
        model: the dense model (Hub id, path or loaded model).

    Example:
        >>> from hydra_st.data import Document, Query
        >>> docs = {"d1": Document("d1", "", "cats purr softly"), "d2": Document("d2", "", "stock markets fell")}
        >>> ds = RetrievalDataset("toy", "test", docs, {"q1": Query("q1", "why do cats purr")}, {"q1": {"d1": 1}})
        >>> run, result = BaselineSuite(ds).evaluate("bm25", metrics=["mrr@10"])  # "dense"/"rrf" load the model
        >>> list(run["q1"]), result.aggregate, result.metadata["retriever"]
        (['d1'], {'mrr@10': 1.0}, 'bm25')
    """

    dataset: RetrievalDataset
    top_k: int = 1000
    rrf_k: float = 60.0
    rrf_depth: int = 100
    model: str | SentenceTransformer = DEFAULT_BASE_MODEL
    cache_dir: str | os.PathLike[str] | None = None
    show_progress_bar: bool = True
    _bm25: BM25Teacher | None = field(default=None, init=False, repr=False)
    _dense: DenseTeacher | None = field(default=None, init=False, repr=False)
    _runs: dict[str, Run] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        # top_k 0 would evaluate empty runs (every metric 0.0) without any error
        for name in ("top_k", "rrf_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def for_dataset(
        cls, name: str, split: str = "test", data_dir: str | os.PathLike[str] | None = None, **kwargs
    ) -> BaselineSuite:
        """Load ``name``/``split`` from the data dir and wrap it."""
        return cls(dataset=load_dataset(name, split=split, data_dir=data_dir), **kwargs)

    @property
    def queries(self) -> dict[str, str]:
        """Text of the judged queries (the ones evaluated)."""
        return {qid: q.text for qid, q in self.dataset.judged_queries.items()}

    @property
    def bm25(self) -> BM25Teacher:
        if self._bm25 is None:
            self._bm25 = BM25Teacher().index(self.dataset.doc_ids, self.dataset.doc_texts)
        return self._bm25

    @property
    def dense(self) -> DenseTeacher:
        if self._dense is None:
            teacher = DenseTeacher(self.model, cache_dir=self.cache_dir, show_progress_bar=self.show_progress_bar)
            self._dense = teacher.index(self.dataset.doc_ids, self.dataset.doc_texts)
        return self._dense

    def run(self, retriever: str) -> Run:
        """The run of ``retriever`` (one of ``bm25``, ``dense``, ``rrf``) over the judged queries."""
        if retriever not in RETRIEVERS:
            raise ValueError(f"unknown retriever {retriever!r}; choose from {', '.join(RETRIEVERS)}")
        if retriever not in self._runs:
            if retriever == "bm25":
                self._runs[retriever] = self.bm25.search(self.queries, top_k=max(self.top_k, self.rrf_depth))
            elif retriever == "dense":
                self._runs[retriever] = self.dense.search(self.queries, top_k=max(self.top_k, self.rrf_depth))
            else:
                # fuse the rankers' stored runs (depth max(top_k, rrf_depth)), not their top_k cuts, so that
                # rrf_depth is honoured when top_k is smaller
                for ranker in ("bm25", "dense"):
                    self.run(ranker)
                self._runs[retriever] = reciprocal_rank_fusion(
                    [self._runs["bm25"], self._runs["dense"]], k=self.rrf_k, depth=self.rrf_depth
                )
        run = self._runs[retriever]
        return {q: dict(list(d.items())[: self.top_k]) for q, d in run.items()}

    def evaluate(self, retriever: str, metrics: Sequence[str] = DEFAULT_METRICS) -> tuple[Run, EvaluationResult]:
        """Run ``retriever`` and score it on the split's qrels."""
        run = self.run(retriever)
        # the fused run is cut to top_k too, so every retriever's metadata records it
        settings: dict[str, Any] = {"top_k": self.top_k}
        if retriever == "rrf":
            settings.update(rrf_k=self.rrf_k, rrf_depth=self.rrf_depth)
        if retriever == "bm25":
            settings["bm25"] = repr(self.bm25)
        if retriever in ("dense", "rrf"):
            settings["model"] = self.model if isinstance(self.model, str) else type(self.model).__name__
        metadata = {"dataset": self.dataset.name, "split": self.dataset.split, "retriever": retriever, **settings}
        return run, evaluate_run(self.dataset.qrels, run, metrics=metrics, metadata=metadata)
