"""Retrieval library defects found in review: chunk-dependent ties, bare shape errors, a failed save that bricked
the old store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import hydra_st.retrieval.store as store_module
from hydra_st.retrieval import EmbeddingStore, GraphSearcher, build_neighbor_graph, exhaustive_search, merge_topk
from hydra_st.retrieval.exhaustive import cosine_scorer, sort_by_score_then_index, topk_lowest_index

# --- ties: which tied documents make the top k must not depend on the chunking --------------------------------


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 7, 20])
@pytest.mark.parametrize("query_batch_size", [1, 2, 64])
def test_tied_documents_reach_the_top_k_lowest_index_first_whatever_the_chunking(chunk_size, query_batch_size):
    docs = np.ones((20, 4), dtype=np.float32)  # duplicate documents: every score ties
    queries = np.ones((3, 4), dtype=np.float32)
    scores, indices = exhaustive_search(
        queries, docs, top_k=5, chunk_size=chunk_size, query_batch_size=query_batch_size
    )
    assert indices.tolist() == [[0, 1, 2, 3, 4]] * 3
    assert torch.all(scores == 4.0)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 13, 64, None])
@pytest.mark.parametrize("top_k", [1, 4, 10, 64])
def test_exhaustive_search_with_many_ties_is_the_lexicographic_top_k(chunk_size, top_k):
    # few distinct integer scores: ties at the cut in most rows, in every chunking
    rng = np.random.default_rng(0)
    docs = rng.integers(0, 3, size=(64, 3)).astype(np.float32)
    queries = rng.integers(0, 3, size=(9, 3)).astype(np.float32)
    scores, indices = exhaustive_search(queries, docs, top_k=top_k, chunk_size=chunk_size, query_batch_size=4)
    full = queries @ docs.T
    for row in range(len(queries)):
        expected = sorted(range(len(docs)), key=lambda j, r=row: (-full[r, j], j))[:top_k]
        assert indices[row].tolist() == expected
        assert np.array_equal(scores[row].numpy(), full[row, expected])


def test_exhaustive_search_without_ties_is_unchanged():
    rng = np.random.default_rng(1)
    docs, queries = rng.normal(size=(500, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    _, indices = exhaustive_search(queries, docs, top_k=50, chunk_size=37)
    assert np.array_equal(indices.numpy(), np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :50])


def test_merge_topk_keeps_the_lowest_index_among_ties_in_either_list():
    s, i = merge_topk(
        torch.tensor([[1.0, 1.0, 0.5]]),
        torch.tensor([[9, 4, 1]]),
        torch.tensor([[1.0, 1.0]]),
        torch.tensor([[7, 2]]),
        k=3,
    )
    assert i.tolist() == [[2, 4, 7]] and s.tolist() == [[1.0, 1.0, 1.0]]


def test_topk_helpers_order_ties_by_index():
    s, i = topk_lowest_index(torch.tensor([[2.0, 1.0, 1.0, 1.0, 0.0]]), torch.tensor([[10, 13, 11, 12, 0]]), k=3)
    assert sorted(i.flatten().tolist()) == [10, 11, 12]
    assert sort_by_score_then_index(s, i)[1].tolist() == [[10, 11, 12]]


# --- vectors of two models: a clear ValueError, not a torch shape error -------------------------------------------


def test_exhaustive_search_refuses_queries_of_another_width():
    docs = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"query vectors are 5-d but document vectors are 4-d.*hydra-st encode"):
        exhaustive_search(np.zeros((2, 5), np.float32), docs, top_k=3)
    with pytest.raises(ValueError, match="5-d but document vectors are 4-d"):
        exhaustive_search(np.zeros((2, 5), np.float32), docs, top_k=3, scorer=cosine_scorer)


def test_graph_search_refuses_a_query_of_another_width():
    docs = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    searcher = GraphSearcher(docs, build_neighbor_graph(docs, k=3, show_progress_bar=False), num_entry_points=2)
    with pytest.raises(ValueError, match="query vectors are 5-d but document vectors are 4-d"):
        searcher.search(np.zeros(5, np.float32), top_k=3)


def test_cosine_scorer_ranks_by_cosine_whatever_the_lengths():
    docs = torch.tensor([[10.0, 0.0], [0.6, 0.8]])
    assert cosine_scorer(torch.tensor([[0.0, 3.0]]), docs).argmax().item() == 1


# --- a failed save keeps the old store loadable -------------------------------------------------------------------


@pytest.fixture
def saved_store(tmp_path):
    store = EmbeddingStore(tmp_path / "store")
    emb = np.random.default_rng(0).normal(size=(30, 6)).astype(np.float32)
    store.save(emb, [f"d{i}" for i in range(30)], meta={"model": "old"})
    store.save_graph(build_neighbor_graph(emb, k=4, show_progress_bar=False))
    return store, emb


def test_a_save_whose_embeddings_write_fails_leaves_the_old_store_loadable(saved_store, monkeypatch):
    store, emb = saved_store
    meta_before = (store.path / "meta.json").read_bytes()

    def disk_full(path, array):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "atomic_save_numpy", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.save(emb * 2, [f"d{i}" for i in range(30)], meta={"model": "new"})
    assert (store.path / "meta.json").read_bytes() == meta_before
    assert np.array_equal(store.load_embeddings(), emb) and store.load_graph().shape == (30, 4)
    assert store.load_meta()["model"] == "old"


def test_a_failed_first_save_leaves_no_marker_behind(tmp_path, monkeypatch):
    store = EmbeddingStore(tmp_path / "fresh")
    monkeypatch.setattr(
        store_module, "atomic_save_numpy", lambda path, array: (_ for _ in ()).throw(OSError(5, "EIO"))
    )
    with pytest.raises(OSError, match="EIO"):
        store.save(np.eye(3, dtype=np.float32), ["a", "b", "c"])
    assert not (store.path / "meta.json").exists() and not store.exists()


def test_a_save_that_fails_after_replacing_the_embeddings_keeps_the_incomplete_marker(saved_store, monkeypatch):
    store, emb = saved_store
    real = store_module.atomic_write_json

    def fail_on_ids(path, obj, indent=2):
        if str(path).endswith("ids.json"):
            raise OSError(28, "No space left on device")
        real(path, obj, indent=indent)

    monkeypatch.setattr(store_module, "atomic_write_json", fail_on_ids)
    with pytest.raises(OSError):
        store.save(emb * 2, [f"d{i}" for i in range(30)])
    # the old embeddings are gone: the store must say it is incomplete rather than load new vectors with old ids
    assert "incomplete" in json.loads((store.path / "meta.json").read_text())
    with pytest.raises(ValueError, match="incomplete"):
        store.load_embeddings()
