"""The foundation on the real MiniLM and the real (small) BEIR collections adi and med."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hydra_st.cli.main import main
from hydra_st.data import load_dataset
from hydra_st.evaluation import read_trec_run
from hydra_st.evaluation.baselines import BaselineSuite
from hydra_st.teachers import DenseTeacher

pytestmark = pytest.mark.integration


def test_minilm_loads_offline_by_hub_id(minilm) -> None:
    embeddings = minilm.encode(["A cat sits on the mat.", "A kitten is resting on a rug.", "The stock market fell."])
    assert embeddings.shape == (3, 384)
    assert float(embeddings[0] @ embeddings[1]) == pytest.approx(0.655, abs=0.01)  # the published sanity pair
    assert float(embeddings[0] @ embeddings[2]) < 0.2


def test_real_datasets_load_with_documented_counts(beir_data_dir: Path) -> None:
    expected = {"adi": (82, 35, 35), "med": (1033, 30, 30), "cacm": (3204, 64, 52), "cranfield": (1400, 225, 225)}
    for name, (docs, queries, judged) in expected.items():
        ds = load_dataset(name, data_dir=beir_data_dir, download=False)
        assert (len(ds.corpus), len(ds.queries), len(ds.judged_queries)) == (docs, queries, judged), name
    scifact = load_dataset("scifact", data_dir=beir_data_dir, download=False)  # CRLF qrels
    assert len(scifact.judged_queries) == 300 and sum(len(v) for v in scifact.qrels.values()) == 339
    nfcorpus = load_dataset("nfcorpus", split="test", data_dir=beir_data_dir, download=False)
    grades = [g for docs in nfcorpus.qrels.values() for g in docs.values()]
    assert (grades.count(2), grades.count(1), len(nfcorpus.qrels)) == (576, 11758, 323)


def test_baselines_on_adi_and_med(beir_data_dir: Path, minilm) -> None:
    ndcg = {}
    for name in ("adi", "med"):
        # The default cache ($HYDRA_ST_CACHE_DIR, set by conftest) is shared by the whole session: encode once.
        suite = BaselineSuite.for_dataset(name, data_dir=beir_data_dir, model=minilm, show_progress_bar=False)
        for retriever in ("bm25", "dense", "rrf"):
            _, result = suite.evaluate(retriever)
            ndcg[(name, retriever)] = result.aggregate["ndcg@10"]
            assert result.num_queries == len(suite.dataset.judged_queries)
    # Measured values of this exact pipeline (evaluation/results/baselines.md); a regression would move them.
    assert ndcg[("med", "dense")] == pytest.approx(0.7875, abs=0.005)
    assert ndcg[("med", "bm25")] == pytest.approx(0.6957, abs=0.005)
    assert ndcg[("adi", "dense")] == pytest.approx(0.4975, abs=0.005)
    for name in ("adi", "med"):  # fusion beats either teacher alone on these collections
        assert ndcg[(name, "rrf")] > max(ndcg[(name, "bm25")], ndcg[(name, "dense")])


def test_dense_cache_is_reused_across_teachers(beir_data_dir: Path, minilm, monkeypatch) -> None:
    ds = load_dataset("med", data_dir=beir_data_dir, download=False)
    first = DenseTeacher(minilm, show_progress_bar=False)
    embeddings = first.encode_corpus(ds.doc_ids, ds.doc_texts)
    assert first.cache_path(ds.doc_ids, ds.doc_texts).is_file()
    second = DenseTeacher(minilm, show_progress_bar=False)
    encoded: list[int] = []
    encode = minilm.encode_document

    def counting(texts, **kwargs):
        encoded.append(len(texts))
        return encode(texts, **kwargs)

    monkeypatch.setattr(minilm, "encode_document", counting)
    np.testing.assert_array_equal(second.encode_corpus(ds.doc_ids, ds.doc_texts), embeddings)
    # the real MiniLM's cache passes its spot check: only the 4 checked documents are encoded again, not the corpus
    assert encoded == [4]


def test_cli_evaluate_writes_runs_and_results(
    beir_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(
        ["evaluate", "--dataset", "adi", "--retriever", "bm25", "rrf", "--data-dir", str(beir_data_dir),
         "--output-dir", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "| adi / bm25 | 35 |" in out and "adi / rrf" in out
    run = read_trec_run(tmp_path / "adi" / "test" / "rrf.trec")
    assert len(run) == 35
    assert (tmp_path / "adi" / "test" / "bm25.json").is_file()


def test_cli_reports_missing_dataset_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["evaluate", "--dataset", "nope", "--data-dir", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert "is not under" in err and "--data-dir" in err and "Traceback" not in err
