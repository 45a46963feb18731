"""``hydra-st encode | build-graph | retrieve`` end to end on a tiny model and the real ``adi`` collection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hydra_st.cli.main import main
from hydra_st.hypencoder import Hypencoder, QNetConverter


@pytest.mark.integration
def test_cli_end_to_end(tiny_st_model, beir_data_dir, tmp_path):
    model_dir = tmp_path / "hyp"
    Hypencoder.from_base(tiny_st_model, converter=QNetConverter([32, 1], linear_skip=True)).save(str(model_dir))
    store = tmp_path / "store"
    data = ["--data-dir", str(beir_data_dir)]
    assert main(["encode", "--model", str(model_dir), "--dataset", "adi", "--output", str(store), *data]) == 0
    from hydra_st.data import load_dataset
    from hydra_st.retrieval import EmbeddingStore

    stored = EmbeddingStore(store).load_embeddings(mmap=False)
    expected = Hypencoder(str(model_dir)).encode_document(load_dataset("adi", data_dir=str(beir_data_dir)).doc_texts)
    assert np.allclose(stored, expected, atol=1e-5)  # from the embedding cache or not, the model's own vectors
    assert main(["build-graph", "--store", str(store), "--k", "8", "--faiss", "flat"]) == 0
    summaries = {}
    for mode in ("exhaustive", "graph", "faiss"):
        out = tmp_path / mode
        assert (
            main(
                [
                    "retrieve",
                    "--model",
                    str(model_dir),
                    "--store",
                    str(store),
                    "--dataset",
                    "adi",
                    "--mode",
                    mode,
                    "--output-dir",
                    str(out),
                    "--top-k",
                    "10",
                    "--entry-points",
                    "40",
                    *data,
                ]
            )
            == 0
        )
        assert (out / f"{mode}.trec").read_text().count("\n") > 0
        summaries[mode] = json.loads((out / f"{mode}.summary.json").read_text())
    # a [d, 1] q-net is an inner product: all three modes rank the same way
    ndcg = {m: s["metrics"]["ndcg@10"] for m, s in summaries.items()}
    assert ndcg["exhaustive"] == pytest.approx(ndcg["faiss"], abs=1e-3)
    assert 0.0 <= ndcg["graph"] <= 1.0
    # entry points from the store's faiss index: for an inner product, its top 10 are the exact top 10
    seeded = tmp_path / "seeded"
    retrieve = ["retrieve", "--model", str(model_dir), "--store", str(store), "--dataset", "adi", "--mode", "graph"]
    args = [*retrieve, "--output-dir", str(seeded), "--top-k", "10", "--entry-points", "1", "--index-seeds", "10"]
    assert main([*args, *data]) == 0
    seeded_ndcg = json.loads((seeded / "graph.summary.json").read_text())["metrics"]["ndcg@10"]
    assert seeded_ndcg == pytest.approx(ndcg["exhaustive"], abs=1e-3)
    (store / "index.faiss").unlink()  # without an index, the flag names the command that builds one
    assert main([*args, *data]) == 1


def test_cli_errors(tmp_path, capsys):
    assert main(["build-graph", "--store", str(tmp_path / "missing")]) == 1
    assert "hydra-st encode" in capsys.readouterr().err
