"""Exhaustive chunked top-k."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydra_st.hypencoder import QNetConverter
from hydra_st.retrieval import exhaustive_search, to_run
from hydra_st.utils.io import atomic_save_numpy, load_numpy


@pytest.fixture
def corpus():
    rng = np.random.default_rng(0)
    return rng.normal(size=(1000, 16)).astype(np.float32)


@pytest.mark.parametrize("chunk", [7, 64, 5000])
def test_dot_matches_full_topk(corpus, chunk):
    q = torch.randn(5, 16)
    scores, idx = exhaustive_search(q, corpus, top_k=10, chunk_size=chunk)
    full = torch.topk(q @ torch.from_numpy(corpus).T, 10)
    torch.testing.assert_close(scores, full.values)
    assert torch.equal(idx, full.indices)


def test_qnet_scorer_and_memmap(corpus, tmp_path):
    conv = QNetConverter([16, 8, 8, 1], linear_skip=True)
    q = torch.randn(3, conv.num_parameters)
    atomic_save_numpy(tmp_path / "emb.npy", corpus)
    mm = load_numpy(tmp_path / "emb.npy", mmap=True)
    scores, idx = exhaustive_search(q, mm, top_k=5, scorer=conv.score, chunk_size=100, query_batch_size=2)
    full = torch.topk(conv.score(q, torch.from_numpy(corpus)), 5)
    torch.testing.assert_close(scores, full.values, atol=1e-5, rtol=1e-5)
    assert torch.equal(idx, full.indices)


def test_k_larger_than_corpus_and_run(corpus):
    scores, idx = exhaustive_search(torch.randn(2, 16), corpus[:4], top_k=10, chunk_size=3)
    assert scores.shape == (2, 4)
    run = to_run(["q1", "q2"], ["a", "b", "c", "d"], scores, idx)
    assert set(run["q1"]) == {"a", "b", "c", "d"}


def test_bad_inputs(corpus):
    with pytest.raises(ValueError, match="empty"):
        exhaustive_search(torch.randn(1, 16), corpus[:0])
    with pytest.raises(ValueError, match="top_k"):
        exhaustive_search(torch.randn(1, 16), corpus, top_k=0)
    with pytest.raises(ValueError, match="scorer returned shape"):
        exhaustive_search(torch.randn(2, 16), corpus, scorer=lambda q, d: torch.zeros(len(d)))
    with pytest.raises(ValueError, match="query vectors are 8-d but document vectors are 16-d"):
        exhaustive_search(torch.randn(2, 8), corpus)  # wrong query width


def test_empty_corpus_error_names_the_shape_and_the_fix(corpus):
    with pytest.raises(ValueError, match=r"corpus is empty \(docs has shape \(0, 16\)\): pass at least one"):
        exhaustive_search(torch.randn(1, 16), corpus[:0])


def _reference_dense_run(query_emb, query_ids, doc_emb, doc_ids, top_k):
    # the algorithm as it was in hydra_st.hydra.preferences when Hydra's numbers were published
    scores = query_emb @ doc_emb.T
    k = min(top_k, scores.shape[1])
    idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return {qid: {doc_ids[c]: float(scores[row, c]) for c in idx[row]} for row, qid in enumerate(query_ids)}


def test_dense_run_is_exact_top_k_with_the_published_arithmetic(corpus):
    from hydra_st.retrieval import dense_run

    docs = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    docs[7] = docs[3]  # an exact duplicate: its order must not change
    queries = docs[:6] + 0.01 * np.random.default_rng(1).normal(size=(6, 16)).astype(np.float32)
    qids, doc_ids = [f"q{i}" for i in range(6)], [f"d{i}" for i in range(len(docs))]
    run = dense_run(queries, qids, docs, doc_ids, top_k=10)
    reference = _reference_dense_run(queries, qids, docs, doc_ids, 10)
    assert run == reference and [list(r) for r in run.values()] == [list(r) for r in reference.values()]
    exact = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :10]
    for row, qid in enumerate(qids):
        assert set(run[qid]) == {doc_ids[j] for j in exact[row]}
    assert len(dense_run(queries, qids, docs[:4], doc_ids[:4], top_k=10)["q0"]) == 4  # clipped to the corpus


def test_dense_run_is_the_function_hydra_uses():
    from hydra_st.hydra import evaluate, preferences
    from hydra_st.retrieval import dense_run

    assert preferences.dense_run is dense_run and evaluate.dense_run is dense_run


def test_a_qnet_scorer_gets_cache_sized_chunks_on_a_cpu_and_the_same_results():
    from hydra_st.hypencoder import QNetConverter
    from hydra_st.retrieval.exhaustive import CPU_ACTIVATION_BLOCK, MIN_CHUNK, dot_scorer, search_chunk_size

    conv = QNetConverter([16, 32, 8, 1], linear_skip=True)
    docs = torch.randn(5000, 16, generator=torch.Generator().manual_seed(0))
    assert conv.activation_width == 32 and QNetConverter([16, 1]).activation_width == 1
    assert search_chunk_size(conv.score, 1, docs) == CPU_ACTIVATION_BLOCK // 32
    assert search_chunk_size(conv.score, 10**6, docs) == MIN_CHUNK
    # an inner product keeps the large blocks that make large GEMMs, and so does any scorer on an accelerator
    assert search_chunk_size(dot_scorer, 1, docs) == 2**26 // 16
    assert search_chunk_size(conv.score, 1, docs, device="cuda") == 2**26 // 16
    # a wide q-net gets chunks of MIN_CHUNK documents here: the default scans 20 chunks, with the same top-k
    wide = QNetConverter([16, 4096, 1], linear_skip=True)
    assert search_chunk_size(wide.score, 2, docs) == MIN_CHUNK
    params = torch.randn(3, wide.num_parameters, generator=torch.Generator().manual_seed(1)) * 0.05
    by_default = exhaustive_search(params, docs, top_k=7, scorer=wide.score, query_batch_size=2)
    one_chunk = exhaustive_search(params, docs, top_k=7, scorer=wide.score, chunk_size=len(docs))
    assert torch.equal(by_default[1], one_chunk[1])
    torch.testing.assert_close(by_default[0], one_chunk[0])
