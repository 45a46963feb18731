"""Faiss baseline and the on-disk embedding store."""

from __future__ import annotations

import numpy as np
import pytest

from hydra_st.retrieval import EmbeddingStore, FaissIndex, build_neighbor_graph


@pytest.fixture
def vectors():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 12)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_is_exact_and_roundtrips(vectors, tmp_path):
    index = FaissIndex(12)
    index.add(vectors)
    q = vectors[:3] + 0.01
    scores, ids = index.search(q, 5)
    truth = np.argsort(-(q @ vectors.T), axis=1)[:, :5]
    assert np.array_equal(ids, truth)
    index.save(tmp_path / "i.faiss")
    again = FaissIndex.load(tmp_path / "i.faiss")
    assert again.kind == "flat" and np.array_equal(again.search(q, 5)[1], ids)


def test_hnsw_recall(vectors, tmp_path):
    index = FaissIndex(12, kind="hnsw", ef_search=64)
    index.add(vectors)
    q = vectors[:20]
    _, ids = index.search(q, 1)
    assert (ids[:, 0] == np.arange(20)).mean() >= 0.95
    index.save(tmp_path / "h.faiss")
    assert FaissIndex.load(tmp_path / "h.faiss").kind == "hnsw"


def test_faiss_bad_inputs(vectors, tmp_path):
    index = FaissIndex(12)
    with pytest.raises(ValueError, match="empty"):
        index.search(vectors[:1])
    with pytest.raises(ValueError, match=r"\[n, 12\]"):
        index.add(vectors[:, :5])
    index.add(vectors)
    with pytest.raises(ValueError, match="dimension 5"):
        index.search(vectors[:1, :5])
    (tmp_path / "bad.faiss").write_bytes(b"nonsense")
    with pytest.raises(ValueError, match="not a readable faiss index"):
        FaissIndex.load(tmp_path / "bad.faiss")
    with pytest.raises(ValueError, match="kind"):
        FaissIndex(12, kind="ivfpq")
    with pytest.raises((ImportError, ValueError)):
        FaissIndex(12, kind="hnsw", device="cuda")


def test_store_roundtrip(vectors, tmp_path):
    store = EmbeddingStore(tmp_path / "s")
    ids = [f"d{i}" for i in range(len(vectors))]
    store.save(vectors, ids, meta={"model": "m"})
    assert np.array_equal(store.load_embeddings(), vectors) and store.load_ids() == ids
    assert store.load_meta()["model"] == "m"
    graph = build_neighbor_graph(vectors, k=4, show_progress_bar=False)
    store.save_graph(graph, {"metric": "ip"})
    assert np.array_equal(store.load_graph(), graph) and store.load_meta()["graph"]["k"] == 4
    index = FaissIndex(12)
    index.add(vectors)
    store.save_index(index)
    assert len(store.load_index()) == 500
    # re-encoding removes the graph and index of the old vectors
    store.save(vectors[:10], ids[:10])
    assert not store.has_graph() and not store.has_index()


def test_store_bad_inputs(vectors, tmp_path):
    store = EmbeddingStore(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="hydra-st encode"):
        store.load_embeddings()
    with pytest.raises(ValueError, match="do not match"):
        store.save(vectors, ["a"])
    with pytest.raises(ValueError, match="unique"):
        store.save(vectors[:2], ["a", "a"])
    store.save(vectors, [str(i) for i in range(500)])
    with pytest.raises(FileNotFoundError, match="build-graph"):
        store.load_graph()
    with pytest.raises(ValueError, match="does not match"):
        store.save_graph(np.zeros((3, 2), dtype=np.int32))
    store.save_graph(np.zeros((500, 2), dtype=np.int32))
    (store.path / "graph.npy").write_bytes(b"corrupt")
    with pytest.raises(ValueError, match="not a readable .npy.*re-run `hydra-st build-graph`"):
        store.load_graph()
    (store.path / "embeddings.npy").write_bytes(b"corrupt")
    with pytest.raises(ValueError, match="not a readable .npy.*re-run `hydra-st encode`"):
        store.load_embeddings()
    (store.path / "ids.json").write_text("{broken")
    with pytest.raises(ValueError, match="ids.json"):
        store.load_ids()


def test_hnsw_search_breadth_survives_save_and_load(vectors, tmp_path):
    index = FaissIndex(12, kind="hnsw", ef_search=77)
    index.add(vectors)
    index.save(tmp_path / "h.faiss")
    assert FaissIndex.load(tmp_path / "h.faiss").index.hnsw.efSearch == 77  # not reset to the default 128
    assert FaissIndex.load(tmp_path / "h.faiss", ef_search=20).index.hnsw.efSearch == 20  # an explicit one wins
    store = EmbeddingStore(tmp_path / "s")
    store.save(vectors, [f"d{i}" for i in range(len(vectors))])
    store.save_index(index)
    assert store.load_index().index.hnsw.efSearch == 77


def test_unreadable_index_names_the_command_that_writes_one(tmp_path):
    (tmp_path / "index.faiss").write_bytes(b"nonsense")
    with pytest.raises(ValueError, match=rf"`hydra-st build-graph --store {tmp_path} --faiss flat\|hnsw`"):
        FaissIndex.load(tmp_path / "index.faiss")


def test_store_compares_ids_as_strings_and_names_the_duplicate(vectors, tmp_path):
    store = EmbeddingStore(tmp_path / "s")
    with pytest.raises(ValueError, match=r"'1' occurs 2 times \(ids are compared as strings\)"):
        store.save(vectors[:3], [1, "1", "2"])
    assert not store.exists()  # nothing was written
    store.save(vectors[:2], [1, 2])
    assert store.load_ids() == ["1", "2"]
