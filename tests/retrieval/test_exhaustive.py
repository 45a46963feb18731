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
    with pytest.raises(RuntimeError):
        exhaustive_search(torch.randn(2, 8), corpus)  # wrong query width
