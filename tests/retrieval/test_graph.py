"""Neighbour graph and graph search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydra_st.hypencoder import QNetConverter
from hydra_st.retrieval import GraphSearcher, build_neighbor_graph, exhaustive_search, recall_at_k
from hydra_st.retrieval.graph import add_reverse_edges


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


def test_reverse_edges_make_every_listed_document_link_back(clustered):
    knn = build_neighbor_graph(clustered, k=4, show_progress_bar=False)
    both = build_neighbor_graph(clustered, k=4, reverse_edges=8, show_progress_bar=False)
    assert both.shape == (2000, 12) and both.dtype == knn.dtype
    assert np.array_equal(both[:, :4], knn)  # the k-NN lists come first, unchanged
    in_degree = np.bincount(knn.reshape(-1), minlength=2000)
    in_degree_after = np.bincount(both.reshape(-1), minlength=2000)
    assert (in_degree == 0).sum() > (in_degree_after == 0).sum()
    # every reverse link u in row v is a document whose own k-NN list holds v
    for v in range(0, 2000, 97):
        for u in set(both[v, 4:].tolist()) - set(knn[v].tolist()):
            assert v in knn[u]
    # a document listed by fewer than r others is padded with its nearest neighbour
    assert set(both[0, 4:].tolist()) <= set(np.where((knn == 0).any(axis=1))[0].tolist()) | {knn[0, 0]}


def test_reverse_edges_reach_a_document_nobody_lists():
    # 0 and 1 are each other's neighbour; 2 lists 1, but nobody lists 2: only the reverse link reaches it
    graph = np.array([[1], [0], [1]], dtype=np.int32)
    assert add_reverse_edges(graph, 1).tolist() == [[1, 1], [0, 2], [1, 1]]
    with pytest.raises(ValueError, match=">= 0"):
        add_reverse_edges(graph, -1)


def test_patience_searches_longer_and_never_worse(clustered):
    graph = build_neighbor_graph(clustered, k=4, show_progress_bar=False)
    conv = QNetConverter([16, 16, 1], linear_skip=True)
    flat = 0.3 * torch.randn(16, conv.num_parameters, generator=torch.Generator().manual_seed(1))
    flat[:, -16:] = torch.from_numpy(clustered[:16])
    _, exact = exhaustive_search(flat, clustered, top_k=10, scorer=conv.score)
    recalls, evaluations = [], []
    for patience in (1, 4):
        searcher = GraphSearcher(clustered, graph, scorer=conv.score, num_entry_points=20, ncandidates=4,
                                 max_iter=50, patience=patience)  # fmt: skip
        res = searcher.search_batch(flat, top_k=10)
        recalls.append(recall_at_k(np.stack([r.indices for r in res]), exact.numpy(), 10))
        evaluations.append(sum(r.num_evaluations for r in res))
    assert evaluations[1] > evaluations[0]
    assert recalls[1] >= recalls[0]
    with pytest.raises(ValueError, match="patience"):
        GraphSearcher(clustered, graph, patience=0)


def test_recall_at_k():
    assert recall_at_k(np.array([[1, 2, 3]]), np.array([[3, 2, 9]]), k=3) == pytest.approx(2 / 3)


def test_recall_at_k_refuses_lists_of_different_queries():
    with pytest.raises(ValueError, match="got 2 approximate and 1 exact lists"):
        recall_at_k(np.array([[1, 2], [3, 4]]), np.array([[1, 2]]), k=2)


def test_graph_mode_keeps_each_querys_own_results(clustered):
    from hydra_st.cli.hypencoder_commands import stack_graph_results
    from hydra_st.retrieval import GraphSearchResult, to_run

    results = [
        GraphSearchResult(np.array([0.9, 0.8, 0.7], np.float32), np.array([5, 1, 2]), 10, 2),
        GraphSearchResult(np.array([0.6], np.float32), np.array([3]), 10, 1),  # this search found only one
    ]
    scores, idx = stack_graph_results(results)
    run = to_run(["qa", "qb"], [f"d{i}" for i in range(6)], scores, idx)
    assert list(run["qa"]) == ["d5", "d1", "d2"] and run["qb"] == pytest.approx({"d3": 0.6})
    # a real search that scores fewer than top_k documents, and a different number for different queries
    graph = build_neighbor_graph(clustered[:50], k=3, show_progress_bar=False)
    searcher = GraphSearcher(clustered[:50], graph, num_entry_points=3, ncandidates=3, max_iter=3, early_stop=False)
    found = searcher.search_batch(torch.from_numpy(clustered[:8]), top_k=40)
    assert len({len(r.indices) for r in found}) > 1
    scores, idx = stack_graph_results(found)
    assert [int((row >= 0).sum()) for row in idx] == [len(r.indices) for r in found]
