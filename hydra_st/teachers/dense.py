"""A frozen sentence-transformer as dense teacher, with corpus embeddings cached on disk."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hydra_st.settings import DEFAULT_BASE_MODEL, resolve_cache_dir
from hydra_st.teachers.fusion import Run
from hydra_st.utils.hashing import fingerprint_model, fingerprint_texts
from hydra_st.utils.io import atomic_save_numpy, atomic_write_json, load_numpy

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

SPOT_CHECK_DOCS = 4
"""How many cached document embeddings are re-encoded and compared on every cache load."""
SPOT_CHECK_ATOL = 1e-4
"""Largest difference allowed between a cached and a re-encoded embedding (batching changes the last digits)."""


class DenseTeacher:
    """Dense retrieval with a frozen sentence-transformer (cosine similarity, exact search with faiss).

    Corpus embeddings are computed once and stored under
    ``<cache dir>/embeddings/<model fingerprint>/<corpus fingerprint>.npy``: the key changes when the model's
    weights or any document (id, text or order) change, and never otherwise, so every later run, epoch and
    test reuses them. A cache file is checked on every load (shape, dtype, finite values, and a few documents
    re-encoded and compared): one that fails is logged as a warning naming the file and rebuilt.

    Args:
        model: a Hub id or path (loaded offline-aware via :func:`hydra_st.hub.offline.load_base_model`) or a
            loaded ``SentenceTransformer``.
        cache_dir: cache root (default: ``$HYDRA_ST_CACHE_DIR`` or ``~/.cache/hydra_st``).
        batch_size: encoding batch size.
        show_progress_bar: show a progress bar while encoding.
        device: device for a model loaded by id.

    Example:
        >>> doc_ids, doc_texts = ["d1", "d2"], ["Rain forms when water vapour condenses.", "The stock market fell."]
        >>> teacher = DenseTeacher("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> run = teacher.index(doc_ids, doc_texts).search({"q1": "what causes rain"}, top_k=1)  # doctest: +SKIP
        >>> list(run["q1"])  # doctest: +SKIP
        ['d1']
    """

    def __init__(
        self,
        model: str | SentenceTransformer = DEFAULT_BASE_MODEL,
        cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 32,
        show_progress_bar: bool = True,
        device: str | None = "cpu",
    ) -> None:
        if isinstance(model, str):
            from hydra_st.hub.offline import load_base_model

            self.model_name = model
            model = load_base_model(model, device=device)
        else:
            self.model_name = str(getattr(model, "model_card_data", None) and model.model_card_data.base_model or "")
        self.model = model
        self.cache_dir = resolve_cache_dir(cache_dir)
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self._model_fingerprint: str | None = None
        self._faiss_index: Any = None
        self.doc_ids: list[str] = []

    @property
    def model_fingerprint(self) -> str:
        """Fingerprint of the model's weights and encode settings (computed once)."""
        if self._model_fingerprint is None:
            self._model_fingerprint = fingerprint_model(self.model)
        return self._model_fingerprint

    def cache_path(self, doc_ids: Sequence[str], doc_texts: Sequence[str]) -> Path:
        """Where the embeddings of this corpus under this model are (or will be) stored."""
        corpus_key = fingerprint_texts(doc_ids, doc_texts)
        return self.cache_dir / "embeddings" / self.model_fingerprint / f"{corpus_key}.npy"

    def encode_corpus(self, doc_ids: Sequence[str], doc_texts: Sequence[str]) -> np.ndarray:
        """L2-normalised document embeddings ``[n_docs, dim]`` (float32), from the cache when present."""
        if len(doc_ids) != len(doc_texts):
            raise ValueError(f"{len(doc_ids)} doc ids but {len(doc_texts)} texts")
        path = self.cache_path(doc_ids, doc_texts)
        if path.is_file():
            try:
                embeddings = load_numpy(path)
            except ValueError as exc:
                logger.warning("%s; re-encoding", exc)
            else:
                problem = self._cache_problem(embeddings, doc_texts)
                if problem is None:
                    return embeddings
                logger.warning("%s: %s; re-encoding the corpus and overwriting it", path, problem)
        embeddings = self._encode_documents(doc_texts, show_progress_bar=self.show_progress_bar)
        atomic_save_numpy(path, embeddings)
        atomic_write_json(
            path.with_suffix(".json"),
            {"model": self.model_name, "model_fingerprint": self.model_fingerprint, "num_docs": len(doc_ids),
             "dim": int(embeddings.shape[1]), "first_doc_id": doc_ids[0] if doc_ids else None},
        )  # fmt: skip
        return embeddings

    def _encode_documents(self, texts: Sequence[str], show_progress_bar: bool) -> np.ndarray:
        return self._encode(self.model.encode_document, texts, show_progress_bar)

    def _encode(self, encode: Any, texts: Sequence[str], show_progress_bar: bool) -> np.ndarray:
        return encode(
            list(texts),
            batch_size=self.batch_size,
            show_progress_bar=show_progress_bar,
            convert_to_numpy=True,
            normalize_embeddings=True,
        ).astype(np.float32, copy=False)

    def _cache_problem(self, embeddings: np.ndarray, doc_texts: Sequence[str]) -> str | None:
        """What is wrong with a loaded cache array, or ``None`` when it can be trusted.

        The cache key covers the model and the corpus but not the file's content, so a file that was
        overwritten (rows shuffled, another model's vectors, bit rot) would otherwise be used silently.
        """
        if embeddings.ndim != 2 or embeddings.shape[0] != len(doc_texts):
            return f"shape {embeddings.shape}, expected ({len(doc_texts)}, dim) for {len(doc_texts)} documents"
        if embeddings.dtype != np.float32:
            return f"dtype {embeddings.dtype}, expected float32"
        if not np.isfinite(embeddings).all():
            return "it holds non-finite values"
        if not len(doc_texts):
            return None
        # A few documents spread over the corpus (first and last included) are re-encoded: cheap, and it also
        # checks the dimension and catches rows shuffled or taken from another model.
        rows = np.unique(np.linspace(0, len(doc_texts) - 1, num=SPOT_CHECK_DOCS).round().astype(int))
        fresh = self._encode_documents([doc_texts[i] for i in rows], show_progress_bar=False)
        if fresh.shape[1] != embeddings.shape[1]:
            return f"dimension {embeddings.shape[1]}, but the model gives {fresh.shape[1]}"
        diff = float(np.abs(fresh - embeddings[rows]).max())
        if diff > SPOT_CHECK_ATOL:
            return f"re-encoded documents {rows.tolist()} differ from the cached rows by up to {diff:.3g}"
        return None

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised query embeddings ``[n_queries, dim]`` (float32)."""
        return self._encode(self.model.encode_query, texts, show_progress_bar=False)

    def index(self, doc_ids: Sequence[str], doc_texts: Sequence[str]) -> DenseTeacher:
        """Encode (or load) the corpus and build an exact inner-product faiss index over it."""
        import faiss

        embeddings = self.encode_corpus(doc_ids, doc_texts)
        index = faiss.IndexFlatIP(embeddings.shape[1])
        index.add(np.ascontiguousarray(embeddings))
        self._faiss_index = index
        self.doc_ids = list(doc_ids)
        return self

    def search(self, queries: dict[str, str], top_k: int = 100) -> Run:
        """Return each query's ``top_k`` documents by cosine similarity."""
        if self._faiss_index is None:
            raise RuntimeError("call index(doc_ids, doc_texts) before search()")
        if not queries:
            return {}
        qids = list(queries)
        scores, idx = self._faiss_index.search(
            self.encode_queries([queries[q] for q in qids]), min(top_k, len(self.doc_ids))
        )
        return {
            qid: {self.doc_ids[int(i)]: float(s) for i, s in zip(idx[row], scores[row], strict=True) if i >= 0}
            for row, qid in enumerate(qids)
        }
