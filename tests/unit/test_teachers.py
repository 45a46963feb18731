from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from hydra_st.data import load_beir_folder
from hydra_st.teachers import BM25Teacher, DenseTeacher, reciprocal_rank_fusion


def test_rrf_scores_and_order() -> None:
    a = {"q": {"x": 3.0, "y": 2.0, "z": 1.0}}
    b = {"q": {"z": 9.0, "x": 8.0}}
    fused = reciprocal_rank_fusion([a, b], k=60)
    assert fused["q"]["x"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["q"]["z"] == pytest.approx(1 / 63 + 1 / 61)
    assert list(fused["q"]) == ["x", "z", "y"]


def test_rrf_depth_weights_top_k_and_errors() -> None:
    a = {"q": {"x": 3.0, "y": 2.0}}
    b = {"q": {"y": 1.0}, "q2": {"w": 1.0}}
    assert "y" not in reciprocal_rank_fusion([a], depth=1)["q"]
    weighted = reciprocal_rank_fusion([a, b], weights=[1.0, 0.0])
    assert weighted["q"]["y"] == pytest.approx(1 / 62)
    assert list(reciprocal_rank_fusion([a, b], top_k=1)["q"]) == ["y"]
    assert "q2" in reciprocal_rank_fusion([a, b])  # a query present in only one run is kept
    with pytest.raises(ValueError, match="at least one run"):
        reciprocal_rank_fusion([])
    with pytest.raises(ValueError, match="2 weights for 1 runs"):
        reciprocal_rank_fusion([a], weights=[1, 2])


def test_bm25_stems_and_drops_zero_scores(toy_dataset_dir: Path) -> None:
    ds = load_beir_folder(toy_dataset_dir)
    bm25 = BM25Teacher().index(ds.doc_ids, ds.doc_texts)
    run = bm25.search({"q": "purring cats", "none": "zzz qqq"}, top_k=10)
    assert list(run["q"])[0] == "d1"  # "purring"/"cats" stem to "purr"/"cat"
    assert run["none"] == {}
    assert all(score > 0 for score in run["q"].values())
    with pytest.raises(RuntimeError, match="call index"):
        BM25Teacher().search({"q": "x"})
    with pytest.raises(ValueError, match="2 doc ids but 1 texts"):
        BM25Teacher().index(["a", "b"], ["x"])


def test_dense_teacher_caches_by_model_and_corpus(tiny_st_model, tmp_path: Path, toy_dataset_dir: Path) -> None:
    ds = load_beir_folder(toy_dataset_dir)
    teacher = DenseTeacher(tiny_st_model, cache_dir=tmp_path, show_progress_bar=False)
    first = teacher.encode_corpus(ds.doc_ids, ds.doc_texts)
    path = teacher.cache_path(ds.doc_ids, ds.doc_texts)
    assert path.is_file() and first.shape == (5, 32) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)

    calls: list[int] = []  # how many texts each encode_document call got
    original = teacher.model.encode_document
    teacher.model.encode_document = lambda texts, *a, **k: calls.append(len(texts)) or original(texts, *a, **k)
    np.testing.assert_array_equal(teacher.encode_corpus(ds.doc_ids, ds.doc_texts), first)
    assert calls == [4]  # second call reads the cache: only the spot-check documents are re-encoded

    changed = [*ds.doc_texts[:-1], "a different last document"]
    assert teacher.cache_path(ds.doc_ids, changed) != path

    path.write_bytes(b"garbage")  # a corrupt cache file is rebuilt, not trusted
    np.testing.assert_allclose(teacher.encode_corpus(ds.doc_ids, ds.doc_texts), first, rtol=1e-5, atol=1e-6)
    assert calls == [4, 5]


def _shuffled(a: np.ndarray) -> np.ndarray:
    return a[::-1].copy()


def _with_nan(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[2, 0] = np.nan  # row 2 is not a spot-checked row: the finiteness check must catch it
    return a


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_shuffled, "re-encoded documents .* differ from the cached rows"),
        (lambda a: a[:, :16].copy(), "dimension 16, but the model gives 32"),
        (_with_nan, "non-finite values"),
        (lambda a: (a * 100).astype(np.int32), "dtype int32, expected float32"),
    ],
)
def test_dense_teacher_rebuilds_a_wrong_cache(
    tiny_st_model, tmp_path: Path, toy_dataset_dir: Path, caplog: pytest.LogCaptureFixture, corrupt, message: str
) -> None:
    from hydra_st.utils.io import atomic_save_numpy, load_numpy

    ds = load_beir_folder(toy_dataset_dir)
    teacher = DenseTeacher(tiny_st_model, cache_dir=tmp_path, show_progress_bar=False)
    good = teacher.encode_corpus(ds.doc_ids, ds.doc_texts)
    path = teacher.cache_path(ds.doc_ids, ds.doc_texts)
    atomic_save_numpy(path, corrupt(good))
    with caplog.at_level("WARNING", logger="hydra_st.teachers.dense"):
        np.testing.assert_allclose(teacher.encode_corpus(ds.doc_ids, ds.doc_texts), good, atol=1e-6)
    assert str(path) in caplog.text and "re-encoding" in caplog.text
    assert re.search(message, caplog.text)
    np.testing.assert_allclose(load_numpy(path), good, atol=1e-6)  # the cache file was rebuilt


def test_dense_teacher_search(tiny_st_model, tmp_path: Path, toy_dataset_dir: Path) -> None:
    ds = load_beir_folder(toy_dataset_dir)
    teacher = DenseTeacher(tiny_st_model, cache_dir=tmp_path, show_progress_bar=False).index(ds.doc_ids, ds.doc_texts)
    run = teacher.search({"q1": "cats", "q2": "rain"}, top_k=3)
    assert set(run) == {"q1", "q2"} and all(len(v) == 3 for v in run.values())
    scores = list(run["q1"].values())
    assert scores == sorted(scores, reverse=True)


def test_bm25_empty_corpus_error_says_what_to_pass() -> None:
    with pytest.raises(ValueError, match=r"empty corpus \(0 documents given\): pass at least one id and its text"):
        BM25Teacher().index([], [])


def test_baseline_rrf_fuses_to_rrf_depth_and_is_cut_to_top_k(tiny_st_model, tmp_path: Path) -> None:
    from hydra_st.data import Document, Query, RetrievalDataset
    from hydra_st.evaluation.baselines import BaselineSuite

    words = "cats dogs rain stock market clouds purr bark fell water".split()
    docs = {
        f"d{i}": Document(f"d{i}", "", f"{words[i % 10]} {words[i * 3 % 10]} {words[i * 7 % 10]} doc {i}")
        for i in range(60)
    }
    dataset = RetrievalDataset("toy", "test", docs, {"q1": Query("q1", "cats rain stock")}, {"q1": {"d0": 1}})
    suite = BaselineSuite(
        dataset, top_k=5, rrf_depth=20, model=tiny_st_model, cache_dir=str(tmp_path), show_progress_bar=False
    )
    fused = suite.run("rrf")["q1"]
    full = reciprocal_rank_fusion([suite._runs["bm25"], suite._runs["dense"]], k=60, depth=20)["q1"]
    assert list(fused) == list(full)[:5]  # the top 5 of a depth-20 fusion, not a fusion of each ranker's top 5
    _, result = suite.evaluate("rrf", metrics=["map"])
    assert (result.metadata["top_k"], result.metadata["rrf_depth"]) == (5, 20)  # the fused run is cut to top_k too
