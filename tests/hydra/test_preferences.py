from __future__ import annotations

import numpy as np
import pytest

from hydra_st.data.pseudo_queries import pseudo_query
from hydra_st.hydra.preferences import PreferenceConfig, build_preferences, dense_run

DOCS = [f"d{i}" for i in range(60)]


def runs(n_queries: int = 3):
    rng = np.random.default_rng(0)
    bm25, dense = {}, {}
    for q in range(n_queries):
        perm = rng.permutation(60)
        bm25[f"q{q}"] = {DOCS[j]: float(60 - r) for r, j in enumerate(perm)}
        dense[f"q{q}"] = {DOCS[j]: float(1 - r / 100) for r, j in enumerate(perm[::-1] if q == 2 else perm)}
    return bm25, dense


def test_pairs_join_top_and_lower_ranks_deterministically():
    bm25, dense = runs()
    cfg = PreferenceConfig(candidates=40, pairs_per_query=8, top_n=3, hard_lo=10)
    a = build_preferences(["q0", "q1", "q2"], [bm25, dense], DOCS, cfg)
    b = build_preferences(["q0", "q1", "q2"], [bm25, dense], DOCS, cfg)
    assert np.array_equal(a.pairs, b.pairs) and np.array_equal(a.confidence, b.confidence)
    assert a.candidates.shape == (3, 40) and a.pairs.shape == (3, 8, 2)
    assert (a.pairs[..., 0] < 3).all() and (a.pairs[..., 1] >= 10).all()
    assert ((a.confidence >= 0) & (a.confidence <= 1)).all()
    # fused order: teacher scores descend along the candidate list
    assert (np.diff(a.teacher_scores, axis=1) <= 0).all()
    other = build_preferences(["q0", "q1", "q2"], [bm25, dense], DOCS, PreferenceConfig(**{**cfg.__dict__, "seed": 1}))
    assert not np.array_equal(a.pairs, other.pairs)


def test_confidence_reflects_teacher_agreement():
    bm25, dense = runs()
    prefs = build_preferences(["q0", "q2"], [bm25, dense], DOCS, PreferenceConfig(candidates=40, pairs_per_query=8))
    # q0: both teachers agree exactly; q2: dense is the reverse of bm25, so agreement is about half
    assert prefs.confidence[0].mean() > prefs.confidence[1].mean()


def test_unweighted_pairs_get_weight_one_and_keep_their_cache_key():
    bm25, dense = runs()
    cfg = PreferenceConfig(candidates=40, pairs_per_query=8, confidence_weighted=False)
    prefs = build_preferences(["q0", "q2"], [bm25, dense], DOCS, cfg)
    weighted = build_preferences(["q0", "q2"], [bm25, dense], DOCS, PreferenceConfig(candidates=40, pairs_per_query=8))
    assert (prefs.confidence == 1).all() and np.array_equal(prefs.pairs, weighted.pairs)
    assert cfg.key() != PreferenceConfig(candidates=40, pairs_per_query=8).key()


def test_random_mode_and_bad_configs():
    bm25, dense = runs(1)
    prefs = build_preferences(["q0"], [bm25, dense], DOCS, PreferenceConfig(mode="random", pairs_per_query=5))
    assert (prefs.pairs[0, :, 0] < prefs.pairs[0, :, 1]).all() and (prefs.pairs < 30).all()
    with pytest.raises(ValueError, match="mode"):
        PreferenceConfig(mode="hard")
    with pytest.raises(ValueError, match="top_n"):
        PreferenceConfig(top_n=20, hard_lo=10)
    with pytest.raises(ValueError, match="pairs_per_query"):
        PreferenceConfig(pairs_per_query=0)
    with pytest.raises(ValueError, match="at least one"):
        build_preferences(["q0"], [], DOCS)
    with pytest.raises(KeyError, match="not in the corpus"):
        build_preferences(["q0"], [bm25], DOCS[:10])


def test_short_candidate_lists_are_padded():
    tiny = {"q": {"d0": 3.0, "d1": 2.0, "d2": 1.0}}
    prefs = build_preferences(["q"], [tiny], DOCS, PreferenceConfig(candidates=20, hard_lo=5))
    assert (prefs.candidates[0, 3:] == -1).all() and (prefs.confidence == 0).all()


def test_dense_run_and_pseudo_queries():
    q = np.eye(3, dtype=np.float32)
    d = np.eye(3, dtype=np.float32)
    run = dense_run(q, ["a", "b", "c"], d, ["x", "y", "z"], top_k=2)
    assert max(run["a"], key=run["a"].get) == "x" and len(run["a"]) == 2
    assert pseudo_query("A study of wing flutter at high speed", "body") == "A study of wing flutter at high speed"
    assert (
        pseudo_query("", "the effect of heat on steel plates. more text here") == "the effect of heat on steel plates."
    )
    assert pseudo_query("", "too short") is None
