"""Evaluate any of the project's models with BEIR: a ``BaseSearch`` that ranks with the model's own similarity.

BEIR's dense search (``DenseRetrievalExactSearch``) accepts only ``cos_sim`` and ``dot``, so a Hypencoder, whose
similarity is its q-net, cannot go through it. :class:`ModelSearch` encodes with ``encode_document`` /
``encode_query`` and ranks with ``model.similarity`` by exhaustive search in memory-bounded chunks, which covers
plain sentence-transformers, Hydra (pass its card as ``encode_kwargs={"task_card": card}``) and the Hypencoder.
BEIR's embedding-file methods write pickles, which this package never does, so they are not supported.

BEIR's ``EvaluateRetrieval.evaluate`` drops retrieved documents whose id equals the query id unless it is given
``ignore_identical_ids=False``; collections that number queries and documents independently (adi, cacm, cranfield,
med, vaswani) need that flag, or their scores come out too low.

Needs the ``beir`` extra (``pip install "hydra_st[beir]"``).

Example:
    >>> from beir.datasets.data_loader import GenericDataLoader
    >>> from beir.retrieval.evaluation import EvaluateRetrieval
    >>> from hydra_st import Hypencoder
    >>> corpus, queries, qrels = GenericDataLoader("/path/to/beir/scifact").load(split="test")  # doctest: +SKIP
    >>> retriever = EvaluateRetrieval(ModelSearch(Hypencoder("models/hypencoder-minilm-l6")))  # doctest: +SKIP
    >>> results = retriever.retrieve(corpus, queries)  # doctest: +SKIP
    >>> ndcg, _map, recall, precision = retriever.evaluate(qrels, results, [10, 100])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra_st.data.beir import Document
from hydra_st.utils.imports import require

from .exhaustive import exhaustive_search, to_run

require("beir", extra="beir")

from beir.retrieval.search.base import BaseSearch  # noqa: E402


def beir_document_text(doc: Mapping[str, str]) -> str:
    """BEIR's document text: ``title + " " + text``, stripped (this package's ``Document.full_text``).

    Example:
        >>> beir_document_text({"title": "Rain", "text": "Water condenses."})
        'Rain Water condenses.'
    """
    return Document("", doc.get("title") or "", doc.get("text") or "").full_text


class ModelSearch(BaseSearch):
    """Exact search with a sentence-transformers model's own ``similarity``, for ``beir``'s ``EvaluateRetrieval``.

    Args:
        model: A SentenceTransformer (``Hydra``, ``Hypencoder`` or any other).
        batch_size: Encoding batch size.
        encode_kwargs: Extra keyword arguments for both encode calls, e.g. ``{"task_card": card}`` for Hydra.
        show_progress_bar: Show encoding progress.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> encode = lambda texts, **kw: torch.tensor([[float("cat" in t), float("dog" in t)] for t in texts])
        >>> toy = SimpleNamespace(encode_query=encode, encode_document=encode, similarity=lambda q, d: q @ d.T)
        >>> corpus = {"d1": {"title": "Pets", "text": "A cat purrs."}, "d2": {"title": "", "text": "A dog barks."}}
        >>> ModelSearch(toy, show_progress_bar=False).search(corpus, {"q1": "my cat"}, top_k=1)
        {'q1': {'d1': 1.0}}
    """

    def __init__(
        self,
        model: Any,
        batch_size: int = 32,
        encode_kwargs: dict[str, Any] | None = None,
        show_progress_bar: bool = True,
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.encode_kwargs = dict(encode_kwargs or {})
        self.show_progress_bar = show_progress_bar

    def search(
        self,
        corpus: dict[str, dict[str, str]],
        queries: dict[str, str],
        top_k: int,
        score_function: str | None = None,
        **kwargs: Any,
    ) -> dict[str, dict[str, float]]:
        """Top ``top_k`` documents per query as ``{qid: {doc_id: score}}``.

        ``score_function`` (BEIR passes ``"cos_sim"`` by default) is ignored: the model's own similarity ranks.
        """
        if not corpus or not queries:
            raise ValueError("BEIR search needs a non-empty corpus and at least one query")
        doc_ids = list(corpus)
        query_ids = list(queries)
        # encode_kwargs win over the defaults, show_progress_bar included
        common = {"batch_size": self.batch_size, "convert_to_tensor": True}
        docs = self.model.encode_document(
            [beir_document_text(corpus[d]) for d in doc_ids],
            **{**common, "show_progress_bar": self.show_progress_bar, **self.encode_kwargs},
        )
        encoded = self.model.encode_query(
            [queries[q] for q in query_ids], **{**common, "show_progress_bar": False, **self.encode_kwargs}
        )
        scores, indices = exhaustive_search(encoded, docs, top_k=top_k, scorer=self.model.similarity)
        return to_run(query_ids, doc_ids, scores, indices)

    def encode(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "BEIR's embedding files are pickles, which hydra_st never writes; use `hydra-st encode` (an atomic, "
            "pickle-free embedding store) or ModelSearch.search"
        )

    def search_from_files(self, *args: Any, **kwargs: Any) -> dict[str, dict[str, float]]:
        raise NotImplementedError(
            "BEIR's embedding files are pickles, which hydra_st never reads; use ModelSearch.search"
        )
