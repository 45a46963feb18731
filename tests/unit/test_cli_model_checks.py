"""The CLI names the right command for a model of the wrong family, and never scores a store's documents with
queries of another model than the one that encoded them."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from hydra_st.cli.main import main
from hydra_st.retrieval import EmbeddingStore


def _model_folder(path: Path, types: list[str]) -> Path:
    path.mkdir(parents=True)
    (path / "modules.json").write_text(json.dumps([{"idx": i, "path": "", "type": t} for i, t in enumerate(types)]))
    return path


HYDRA_TYPES = ["sentence_transformers.Transformer", "hydra_head.HydraHead"]
HYPENCODER_TYPES = ["hydra_st.hypencoder.modules.BaseModelReference", "router.Router"]


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        (HYDRA_TYPES, r"is a Hydra model.*`hydra-st hydra-evaluate`"),
        (HYPENCODER_TYPES, r"is a Hypencoder model.*`hydra-st retrieve"),
    ],
)
def test_evaluate_names_the_command_for_a_family_model(types, expected, toy_dataset_dir, tmp_path, capsys):
    model = _model_folder(tmp_path / "model", types)
    argv = ["evaluate", "--dataset", str(toy_dataset_dir), "--model", str(model), "--output-dir", str(tmp_path / "o")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hydra-st evaluate: error: --model" in err
    assert re.search(expected, err)


def test_evaluate_names_a_missing_model_path(toy_dataset_dir, tmp_path, capsys):
    argv = ["evaluate", "--dataset", str(toy_dataset_dir), "--model", str(tmp_path / "no" / "such")]
    assert main([*argv, "--output-dir", str(tmp_path / "o")]) == 1
    assert "no such model folder" in capsys.readouterr().err


@pytest.fixture
def encoded(tiny_st_model_dir, toy_dataset_dir, tmp_path) -> tuple[Path, list[str]]:
    store = tmp_path / "store"
    data = ["--dataset", str(toy_dataset_dir)]
    assert main(["encode", "--model", str(tiny_st_model_dir), *data, "--output", str(store)]) == 0
    retrieve = ["retrieve", "--store", str(store), *data, "--top-k", "3", "--output-dir", str(tmp_path / "out")]
    return store, retrieve


def test_encode_records_the_model_fingerprint_and_retrieve_accepts_that_model(encoded, tiny_st_model_dir):
    store, retrieve = encoded
    meta = EmbeddingStore(store).load_meta()
    assert len(meta["model_fingerprint"]) == 24
    # a model without a Router encodes documents with all of itself: both fingerprints are the whole model's
    assert meta["document_fingerprint"] == meta["model_fingerprint"]
    assert main([*retrieve, "--model", str(tiny_st_model_dir)]) == 0


def test_retrieve_refuses_queries_of_another_model(encoded, tiny_st_model, tmp_path, capsys):
    import torch

    store, retrieve = encoded
    with torch.no_grad():
        next(tiny_st_model.parameters()).add_(0.5)  # same architecture and width, other weights
    tiny_st_model.save(str(tmp_path / "other"))
    for mode in ("exhaustive", "faiss"):
        assert main([*retrieve, "--model", str(tmp_path / "other"), "--mode", mode]) == 1
        err = capsys.readouterr().err
        assert "was encoded by another document encoder" in err and "re-run `hydra-st encode --model" in err
    assert not (tmp_path / "out" / "exhaustive.trec").exists()


def test_a_store_of_an_earlier_hydra_st_is_checked_against_the_whole_model(
    encoded, tiny_st_model_dir, tiny_st_model, tmp_path, capsys
):
    import torch

    store, retrieve = encoded
    meta_path = store / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["document_fingerprint"]  # what `hydra-st encode` wrote before it recorded the document side
    meta_path.write_text(json.dumps(meta))
    assert main([*retrieve, "--model", str(tiny_st_model_dir)]) == 0
    with torch.no_grad():
        next(tiny_st_model.parameters()).add_(0.5)
    tiny_st_model.save(str(tmp_path / "other"))
    assert main([*retrieve, "--model", str(tmp_path / "other")]) == 1
    assert "was encoded by another model" in capsys.readouterr().err


def test_a_hypencoder_retrained_on_the_query_side_keeps_using_its_store(
    tiny_st_model, toy_dataset_dir, tmp_path, capsys
):
    import torch

    from hydra_st.hypencoder import Hypencoder, QNetConverter

    model = Hypencoder.from_base(tiny_st_model, converter=QNetConverter([32, 1], linear_skip=True))
    model.save(str(tmp_path / "hyp"))
    store = tmp_path / "store"
    data = ["--dataset", str(toy_dataset_dir)]
    assert main(["encode", "--model", str(tmp_path / "hyp"), *data, "--output", str(store)]) == 0
    meta = EmbeddingStore(store).load_meta()
    assert meta["document_fingerprint"] != meta["model_fingerprint"]  # the hyper-head encodes no document
    retrieve = ["retrieve", "--store", str(store), *data, "--top-k", "3", "--output-dir", str(tmp_path / "out")]
    with torch.no_grad():  # retrained on the query side: the hyper-head changes, the document route does not
        for p in model.hyper_head.parameters():
            p.add_(0.5)
    model.save(str(tmp_path / "query-side"))
    assert main([*retrieve, "--model", str(tmp_path / "query-side")]) == 0
    with torch.no_grad():  # the shared transformer encodes the documents too: a change there needs a new store
        next(model[0].parameters()).add_(0.5)
    model.save(str(tmp_path / "both-sides"))
    assert main([*retrieve, "--model", str(tmp_path / "both-sides")]) == 1
    assert "was encoded by another document encoder" in capsys.readouterr().err


def test_retrieve_records_what_the_run_was_made_with(encoded, tiny_st_model_dir, tmp_path, capsys):
    store, retrieve = encoded
    assert main([*retrieve, "--model", str(tiny_st_model_dir)]) == 0
    assert "runs cut at top-k 3: map is MAP@3" in capsys.readouterr().out
    metadata = json.loads((tmp_path / "out" / "exhaustive.metrics.json").read_text())["metadata"]
    assert metadata["top_k"] == 3 and metadata["mode"] == "exhaustive" and metadata["split"] == "test"
    assert metadata["model"] == str(tiny_st_model_dir) and metadata["store"] == str(store)
    assert metadata["dataset"] == "toy" and metadata["retriever"] == "biencoder"
    summary = json.loads((tmp_path / "out" / "exhaustive.summary.json").read_text())
    assert summary["metadata"] == metadata
    # the default depth is evaluate's: map is MAP@1000, and the table says nothing about a cut
    default = [a for a in retrieve if a not in ("--top-k", "3")]
    assert main([*default, "--model", str(tiny_st_model_dir), "--mode", "faiss"]) == 0
    assert "runs cut at" not in capsys.readouterr().out
    faiss = json.loads((tmp_path / "out" / "faiss.metrics.json").read_text())["metadata"]
    assert faiss["top_k"] == 1000 and faiss["faiss"]["kind"] == "flat"


def test_a_store_without_a_fingerprint_gets_a_warning(encoded, tiny_st_model_dir, caplog):
    store, retrieve = encoded
    meta_path = store / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["model_fingerprint"], meta["document_fingerprint"]  # what `hydra-st encode` of an older hydra_st wrote
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="hydra_st.cli.store_checks"):
        assert main([*retrieve, "--model", str(tiny_st_model_dir)]) == 0
    assert "records no model fingerprint" in caplog.text and "re-run `hydra-st encode`" in caplog.text


def test_hydra_evaluate_records_the_model_card_and_depth(tiny_st_model, toy_dataset_dir, tmp_path, capsys):
    from hydra_st.hydra import Hydra, load_card

    Hydra.from_base(tiny_st_model, out_dim=16).save(str(tmp_path / "hydra"))
    out = tmp_path / "out"
    argv = ["hydra-evaluate", "--model", str(tmp_path / "hydra"), "--dataset", str(toy_dataset_dir)]
    assert main([*argv, "--card", "scifact", "--top-k", "3", "--output-dir", str(out)]) == 0
    assert "runs cut at top-k 3: map is MAP@3" in capsys.readouterr().out
    card = load_card("scifact")
    hydra = json.loads((out / "toy" / "test" / "hydra.json").read_text())["metadata"]
    assert hydra["card"] == "scifact" and hydra["card_fingerprint"] == card.fingerprint
    assert hydra["card_source"] == "scifact" and hydra["retriever"] == "hydra"
    assert (hydra["dataset"], hydra["split"], hydra["top_k"]) == ("toy", "test", 3)
    assert hydra["model"] == str(tmp_path / "hydra") and len(hydra["model_revision"]) == 24
    base = json.loads((out / "toy" / "test" / "base.json").read_text())["metadata"]
    assert base["retriever"] == "base" and "card" not in base and base["top_k"] == 3
