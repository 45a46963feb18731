from __future__ import annotations

import numpy as np
import pytest

from hydra_st.data.pseudo_queries import pseudo_query
from hydra_st.hydra.preferences import PreferenceConfig, build_preferences
from hydra_st.retrieval import dense_run
from tests.hydra.synthetic import make_task

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


def test_judged_positives_go_on_top_with_certain_pairs():
    bm25, dense = runs()
    fused_only = build_preferences(["q2"], [bm25, dense], DOCS, PreferenceConfig(candidates=40, pairs_per_query=8))
    missed = next(d for d in DOCS if DOCS.index(d) not in fused_only.candidates[0])  # outside the fused top 40
    judged = {"q2": {missed: 2, "d7": 1, "d8": 0}, "q0": {f"d{i}": 1 for i in range(5)}}
    cfg = PreferenceConfig(candidates=40, pairs_per_query=8, judged_positives=True)
    prefs = build_preferences(["q2", "q0"], [bm25, dense], DOCS, cfg, judged)
    # q2: the judged documents lead, by grade (grade 0 is not a positive), even one below the fused top 40
    assert [DOCS[i] for i in prefs.candidates[0, :2]] == [missed, "d7"]
    # a pair whose preferred side is judged (and the other not) is certain: its weight is the rank-gap factor alone
    preferred, other = prefs.pairs[0, :, 0], prefs.pairs[0, :, 1]
    decided = preferred < 2
    gap_factor = np.minimum(1.0, (other - preferred) / cfg.gap_scale)
    assert decided.any() and np.allclose(prefs.confidence[0][decided], gap_factor[decided])
    # q0 has more judged documents (5) than preferred slots (top_n = 3): teachers only, as without judgments
    plain_config = PreferenceConfig(candidates=40, pairs_per_query=8)
    plain = build_preferences(["q2", "q0"], [bm25, dense], DOCS, plain_config)
    assert np.array_equal(prefs.candidates[1], plain.candidates[1]) and np.array_equal(prefs.pairs[1], plain.pairs[1])
    # with the option off, judgments change nothing; the cache key differs only when it is on
    assert np.array_equal(build_preferences(["q2"], [bm25, dense], DOCS, plain_config, judged).pairs, fused_only.pairs)
    assert cfg.key() != plain_config.key()


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
    with pytest.raises(ValueError, match="not in the corpus"):  # bad user data: a ValueError, not a KeyError
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


def test_task_preferences_read_train_judgments_only_when_asked(tmp_path):
    from hydra_st.hydra.preferences import task_preferences

    task, _ = make_task("alpha", 0)
    task.train.qrels = {q: {task.doc_ids[i]: 1} for i, q in enumerate(task.train.ids)}  # query i's document is i

    class DenseAsLexical:  # stands in for the BM25 teacher: a second copy of the dense run
        def index(self, doc_ids, doc_texts):
            return self

        def search(self, queries, top_k):
            return dense_run(task.train.embeddings, task.train.ids, task.doc_embeddings, task.doc_ids, top_k)

    plain_config = PreferenceConfig(candidates=30, pairs_per_query=8)
    judged_config = PreferenceConfig(candidates=30, pairs_per_query=8, judged_positives=True)
    plain = task_preferences(task, DenseAsLexical, plain_config, tmp_path)
    judged = task_preferences(task, DenseAsLexical, judged_config, tmp_path)
    assert (judged.candidates[:, 0] == np.arange(len(task.train))).all()  # each query's judged document leads
    assert not np.array_equal(plain.candidates, judged.candidates)
    assert len(list((tmp_path / "hydra" / "preferences").glob("*.safetensors"))) == 2  # cached apart
    again = task_preferences(task, DenseAsLexical, judged_config, tmp_path)
    assert np.array_equal(again.pairs, judged.pairs) and np.array_equal(again.confidence, judged.confidence)


def test_task_preferences_cache_is_keyed_on_the_base_models_embeddings(tmp_path):
    """The same texts embedded by another base model (other vectors) must not reuse the first model's preferences."""
    import dataclasses

    from hydra_st.hydra.preferences import task_preferences
    from hydra_st.teachers import BM25Teacher

    task, _ = make_task("alpha", 1)
    rng = np.random.default_rng(7)
    other = dataclasses.replace(
        task,
        doc_embeddings=rng.permutation(task.doc_embeddings),
        train=dataclasses.replace(task.train, embeddings=rng.permutation(task.train.embeddings)),
    )
    cfg = PreferenceConfig(candidates=30, pairs_per_query=8)
    first = task_preferences(task, BM25Teacher, cfg, tmp_path)
    cached_other = task_preferences(other, BM25Teacher, cfg, tmp_path)
    fresh_other = task_preferences(other, BM25Teacher, cfg, tmp_path / "fresh")
    assert not np.array_equal(first.candidates, fresh_other.candidates)  # the dense teacher matters here
    assert np.array_equal(cached_other.candidates, fresh_other.candidates)
    assert len(list((tmp_path / "hydra" / "preferences").glob("*.safetensors"))) == 2  # cached apart
    again = task_preferences(task, BM25Teacher, cfg, tmp_path)  # and each still hits its own cache file
    assert np.array_equal(again.pairs, first.pairs)


def test_damaged_preference_cache_is_rebuilt_with_a_warning(tmp_path, caplog):
    from hydra_st.hydra.preferences import task_preferences
    from hydra_st.teachers import BM25Teacher

    task, _ = make_task("alpha", 1)
    cfg = PreferenceConfig(candidates=30, pairs_per_query=8)
    good = task_preferences(task, BM25Teacher, cfg, tmp_path)
    (path,) = (tmp_path / "hydra" / "preferences").glob("*.safetensors")
    path.write_bytes(b"\x00not safetensors")
    with caplog.at_level("WARNING", logger="hydra_st.hydra.preferences"):
        rebuilt = task_preferences(task, BM25Teacher, cfg, tmp_path)
    assert np.array_equal(rebuilt.pairs, good.pairs) and np.array_equal(rebuilt.confidence, good.confidence)
    assert str(path) in caplog.text and "rebuilding" in caplog.text
    assert path.is_file()  # written again


def test_a_bug_while_reading_the_preference_cache_is_not_taken_for_damage(tmp_path, monkeypatch):
    """Only a damaged file is rebuilt; any other error propagates and the cache file stays."""
    import safetensors.torch

    from hydra_st.hydra.preferences import task_preferences
    from hydra_st.teachers import BM25Teacher

    task, _ = make_task("alpha", 1)
    cfg = PreferenceConfig(candidates=30, pairs_per_query=8)
    task_preferences(task, BM25Teacher, cfg, tmp_path)
    (path,) = (tmp_path / "hydra" / "preferences").glob("*.safetensors")

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not a damaged file")

    monkeypatch.setattr(safetensors.torch, "load_file", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        task_preferences(task, BM25Teacher, cfg, tmp_path)
    assert path.is_file()
