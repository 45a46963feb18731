"""Neighbour graph and graph search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydra_st.hypencoder import QNetConverter
from hydra_st.retrieval import GraphSearcher, build_neighbor_graph, exhaustive_search, recall_at_k


@pytest.fixture(scope="module")
def clustered():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 16))
    x = centers[rng.integers(0, 20, 2000)] + 0.3 * rng.normal(size=(2000, 16))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("method", ["exact", "ivf", "hnsw"])
def test_graph_shape_and_no_self(clustered, method):
    g = build_neighbor_graph(clustered, k=8, method=method, show_progress_bar=False)
    assert g.shape == (2000, 8) and g.dtype == np.int32
    assert (g != np.arange(2000)[:, None]).mean() > 0.99
    assert g.min() >= 0 and g.max() < 2000


def test_exact_graph_is_true_knn(clustered):
    g = build_neighbor_graph(clustered, k=5, show_progress_bar=False)
    sims = clustered @ clustered.T
    np.fill_diagonal(sims, -np.inf)
    truth = np.argsort(-sims, axis=1)[:, :5]
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(g, truth, strict=False)]) > 0.99


def test_graph_search_recall_and_cost(clustered):
    conv = QNetConverter([16, 16, 1], linear_skip=True)
    gen = torch.Generator().manual_seed(0)
    flat = 0.1 * torch.randn(8, conv.num_parameters, generator=gen)
    flat[:, -16:] = torch.from_numpy(clustered[:8]) * 5  # skip vector: a strong, smooth component
    graph = build_neighbor_graph(clustered, k=16, show_progress_bar=False)
    searcher = GraphSearcher(clustered, graph, scorer=conv.score, num_entry_points=100, ncandidates=16)
    res = searcher.search_batch(flat, top_k=10)
    _, exact = exhaustive_search(flat, clustered, top_k=10, scorer=conv.score)
    approx = np.stack([r.indices for r in res])
    assert recall_at_k(approx, exact.numpy(), 10) >= 0.95
    assert all(r.num_evaluations < len(clustered) for r in res)
    assert all(np.all(np.diff(r.scores) <= 1e-6) for r in res)  # best first


def test_early_stop_and_rounds(clustered):
    graph = build_neighbor_graph(clustered, k=8, show_progress_bar=False)
    q = torch.from_numpy(clustered[0])
    eager = GraphSearcher(clustered, graph, num_entry_points=50, ncandidates=8, max_iter=30).search(q, 10)
    full = GraphSearcher(clustered, graph, num_entry_points=50, ncandidates=8, max_iter=30, early_stop=False).search(
        q, 10
    )
    assert eager.num_rounds <= full.num_rounds
    assert eager.num_evaluations <= full.num_evaluations
    assert 0 in eager.indices.tolist()


def test_bad_graph_inputs(clustered):
    with pytest.raises(ValueError, match="documents"):
        GraphSearcher(clustered, np.zeros((10, 4), dtype=np.int32))
    with pytest.raises(ValueError, match="outside the corpus"):
        GraphSearcher(clustered, np.full((2000, 4), 5000, dtype=np.int32))
    with pytest.raises(ValueError, match="k must be"):
        build_neighbor_graph(clustered[:5], k=5, show_progress_bar=False)
    with pytest.raises(ValueError, match="method"):
        build_neighbor_graph(clustered, k=4, method="lsh", show_progress_bar=False)


def test_recall_at_k():
    assert recall_at_k(np.array([[1, 2, 3]]), np.array([[3, 2, 9]]), k=3) == pytest.approx(2 / 3)
