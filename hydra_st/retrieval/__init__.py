"""Retrieval: exhaustive chunked top-k with any scorer, exact dense runs of cached embeddings, graph search for q-nets,
faiss baselines, on-disk store."""

from __future__ import annotations

from hydra_st.retrieval.exhaustive import (
    cosine_scorer,
    dense_run,
    dot_scorer,
    exhaustive_search,
    merge_topk,
    to_run,
)
from hydra_st.retrieval.faiss_index import FaissIndex
from hydra_st.retrieval.graph import (
    GraphSearcher,
    GraphSearchResult,
    build_neighbor_graph,
    index_entry_points,
    recall_at_k,
)
from hydra_st.retrieval.store import EmbeddingStore

__all__ = [
    "EmbeddingStore",
    "FaissIndex",
    "GraphSearchResult",
    "GraphSearcher",
    "build_neighbor_graph",
    "cosine_scorer",
    "dense_run",
    "dot_scorer",
    "exhaustive_search",
    "index_entry_points",
    "merge_topk",
    "recall_at_k",
    "to_run",
]
