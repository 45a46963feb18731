"""Pseudo-queries made from a corpus, for training on collections without training queries.

A pseudo-query is a document's title (when it has at least ``PSEUDO_MIN_WORDS`` words) or else its first sentence,
cut to ``PSEUDO_MAX_WORDS`` words; its source document is its one known relevant document. Documents are picked in
the order of a seeded hash of their ids, so the same seed gives the same queries on every machine. Both Hydra and
the Hypencoder trainer use this module, so they train on the same pseudo-queries.

Example:
    >>> from hydra_st.data import Document
    >>> corpus = {"d1": Document("d1", "Flutter of swept wings at transonic speed", "Body."),
    ...           "d2": Document("d2", "", "Too short.")}
    >>> queries, source = pseudo_queries(corpus, n=5)
    >>> queries, source
    ({'pseudo-d1': 'Flutter of swept wings at transonic speed'}, {'pseudo-d1': 'd1'})
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from hydra_st.data.beir import Document, RetrievalDataset

PSEUDO_MIN_WORDS = 4
PSEUDO_MAX_WORDS = 20


def stable_fraction(key: str, seed: int) -> float:
    """A number in [0, 1) from a seeded hash of ``key`` (the same on every machine and Python run)."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def pseudo_query(title: str, text: str) -> str | None:
    """A pseudo-query for a document: its title when it has ≥4 words, else its first sentence (≤20 words)."""
    title = " ".join(title.split())
    if len(title.split()) >= PSEUDO_MIN_WORDS:
        return " ".join(title.split()[:PSEUDO_MAX_WORDS])
    body = " ".join(text.split())
    first = re.split(r"(?<=[.!?])\s", body, maxsplit=1)[0]
    words = first.split()
    if len(words) < PSEUDO_MIN_WORDS:
        return None
    return " ".join(words[:PSEUDO_MAX_WORDS])


def pseudo_queries(
    corpus: RetrievalDataset | Mapping[str, Document], n: int, seed: int = 0
) -> tuple[dict[str, str], dict[str, str]]:
    """Deterministic pseudo-queries from ``n`` documents: returns ``(queries, source_doc_of_query)``.

    Documents are ordered by a seeded hash of their id; the first ``n`` that yield a pseudo-query are used. Query
    ids are ``"pseudo-<doc id>"``.
    """
    docs = corpus.corpus if isinstance(corpus, RetrievalDataset) else corpus
    order = sorted(docs, key=lambda d: stable_fraction(d, seed))
    queries: dict[str, str] = {}
    source: dict[str, str] = {}
    for doc_id in order:
        if len(queries) >= n:
            break
        doc = docs[doc_id]
        text = pseudo_query(doc.title, doc.text)
        if text is None:
            continue
        qid = f"pseudo-{doc_id}"
        queries[qid] = text
        source[qid] = doc_id
    return queries, source
