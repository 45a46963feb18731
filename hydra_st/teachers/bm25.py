"""BM25 through bm25s, with a Snowball stemmer and English stop words."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from hydra_st.teachers.fusion import Run


class BM25Teacher:
    """Lexical BM25 retriever (bm25s), the lexical teacher and baseline.

    Args:
        k1: term-frequency saturation. The defaults (1.5, 0.75) are bm25s's own and MTEB's BM25S baseline's.
        b: length normalisation.
        method: bm25s scoring variant (``"lucene"``, ``"robertson"``, ``"atire"``, ``"bm25l"``, ``"bm25+"``).
        stemmer: a PyStemmer language (``"english"`` is Snowball/Porter2), or ``None`` for no stemming.
        stopwords: a bm25s stop-word list name (``"en"``) or ``None``.
        show_progress_bar: show bm25s's progress bars while indexing and searching.

    Example:
        >>> bm25 = BM25Teacher().index(["d1", "d2"], ["cats purr softly", "stock markets fell"])
        >>> list(bm25.search({"q": "a purring cat"}, top_k=1)["q"])
        ['d1']
    """

    def __init__(
        self,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        stemmer: str | None = "english",
        stopwords: str | None = "en",
        show_progress_bar: bool = False,
    ) -> None:
        self.k1 = k1
        self.b = b
        self.method = method
        self.stemmer_name = stemmer
        self.stopwords = stopwords
        self.show_progress_bar = show_progress_bar
        self._stemmer = None
        if stemmer is not None:
            import Stemmer

            self._stemmer = Stemmer.Stemmer(stemmer)
        self._retriever = None
        self.doc_ids: list[str] = []

    def __repr__(self) -> str:
        return (
            f"BM25Teacher(k1={self.k1}, b={self.b}, method={self.method!r}, stemmer={self.stemmer_name!r}, "
            f"stopwords={self.stopwords!r})"
        )

    def _tokenize(self, texts: Sequence[str]):
        import bm25s

        # bm25s sets its own logger to DEBUG at import, which floods any application log; keep it at WARNING.
        logging.getLogger("bm25s").setLevel(logging.WARNING)

        return bm25s.tokenize(
            list(texts), stopwords=self.stopwords, stemmer=self._stemmer, show_progress=self.show_progress_bar
        )

    def index(self, doc_ids: Sequence[str], doc_texts: Sequence[str]) -> BM25Teacher:
        """Build the index over ``doc_texts`` (aligned with ``doc_ids``)."""
        import bm25s

        if len(doc_ids) != len(doc_texts):
            raise ValueError(f"{len(doc_ids)} doc ids but {len(doc_texts)} texts: pass one text per id, in id order")
        if not doc_ids:
            raise ValueError("cannot index an empty corpus (0 documents given): pass at least one id and its text")
        retriever = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        retriever.index(self._tokenize(doc_texts), show_progress=self.show_progress_bar)
        self._retriever = retriever
        self.doc_ids = list(doc_ids)
        return self

    def search(self, queries: dict[str, str], top_k: int = 100) -> Run:
        """Return the ``top_k`` documents per query with a positive BM25 score.

        Documents that share no term with the query score 0 and are left out rather than ranked arbitrarily.
        """
        if self._retriever is None:
            raise RuntimeError("call index(doc_ids, doc_texts) before search()")
        if not queries:
            return {}
        qids = list(queries)
        k = min(top_k, len(self.doc_ids))
        tokens = self._tokenize([queries[q] for q in qids])
        docs, scores = self._retriever.retrieve(
            tokens, k=k, show_progress=self.show_progress_bar, n_threads=1, return_as="tuple"
        )
        run: Run = {}
        for row, qid in enumerate(qids):
            keep = np.asarray(scores[row]) > 0
            run[qid] = {
                self.doc_ids[int(i)]: float(s) for i, s in zip(docs[row][keep], scores[row][keep], strict=True)
            }
        return run
