"""``hydra-st encode | retrieve`` and early-stopping defects found in review, on tiny models and the toy dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hydra_st.cli.main import main
from hydra_st.hypencoder import Hypencoder, QNetConverter
from hydra_st.hypencoder.encoding import route_modules
from hydra_st.hypencoder.training_data import TeacherExamples
from hydra_st.hypencoder.validation import validation_ndcg
from hydra_st.retrieval import EmbeddingStore, build_neighbor_graph
from tests.conftest import TOY_CORPUS, TOY_QUERIES


@pytest.fixture(scope="module")
def hyp_dir(tiny_st_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sentence_transformers import SentenceTransformer

    path = tmp_path_factory.mktemp("hyp") / "hyp"
    base = SentenceTransformer(str(tiny_st_model_dir), device="cpu")
    Hypencoder.from_base(base, converter=QNetConverter([32, 1], linear_skip=True)).save(str(path))
    return path


def _biencoder(tiny_st_model_dir: Path, folder: Path, similarity: str) -> Path:
    """The tiny transformer with mean pooling and no Normalize module, ranking by ``similarity``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    transformer = Transformer(str(tiny_st_model_dir.parent / "bert"), max_seq_length=64)
    model = SentenceTransformer(
        modules=[transformer, Pooling(32, "mean")], device="cpu", similarity_fn_name=similarity
    )
    model.save(str(folder))
    return folder


def _read_run(path: Path) -> dict[str, list[str]]:
    run: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        qid, _, doc, _rank, *_ = line.split()
        run.setdefault(qid, []).append(doc)
    return run


def _expected_ranking(model_dir: Path) -> dict[str, list[str]]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    docs = [(d["title"] + " " + d["text"]).strip() for d in TOY_CORPUS]
    queries = [q for q in TOY_QUERIES if q["_id"] != "q4"]  # q4 is unjudged: retrieve searches the judged ones
    sims = model.similarity(model.encode_query([q["text"] for q in queries]), model.encode_document(docs))
    ids = [d["_id"] for d in TOY_CORPUS]
    return {
        q["_id"]: [ids[i] for i in torch.argsort(row, descending=True, stable=True)]
        for q, row in zip(queries, sims, strict=True)
    }


def _retrieve(model: Path, store: Path, data: Path, out: Path, *extra: str) -> int:
    args = ["retrieve", "--model", str(model), "--store", str(store), "--dataset", str(data), "--output-dir", str(out)]
    return main([*args, "--top-k", "5", *extra])


# --- 1. a bi-encoder ranks by its own similarity --------------------------------------------------------------------


def test_retrieve_ranks_a_cosine_biencoder_without_normalize_by_cosine(tiny_st_model_dir, toy_dataset_dir, tmp_path):
    model = _biencoder(tiny_st_model_dir, tmp_path / "st", "cosine")
    store = tmp_path / "store"
    assert main(["encode", "--model", str(model), "--dataset", str(toy_dataset_dir), "--output", str(store)]) == 0
    meta = EmbeddingStore(store).load_meta()
    assert meta["similarity"] == "cosine" and meta["normalized"] is True
    assert np.allclose(np.linalg.norm(EmbeddingStore(store).load_embeddings(), axis=1), 1.0, atol=1e-5)
    expected = _expected_ranking(model)
    assert _retrieve(model, store, toy_dataset_dir, tmp_path / "ex") == 0
    assert _read_run(tmp_path / "ex" / "exhaustive.trec") == expected
    assert _retrieve(model, store, toy_dataset_dir, tmp_path / "fa", "--mode", "faiss") == 0
    assert _read_run(tmp_path / "fa" / "faiss.trec") == expected


def test_retrieve_with_a_cosine_model_normalises_an_unnormalised_older_store(
    tiny_st_model_dir, toy_dataset_dir, tmp_path, capsys
):
    model = _biencoder(tiny_st_model_dir, tmp_path / "st", "cosine")
    store = tmp_path / "store"
    assert main(["encode", "--model", str(model), "--dataset", str(toy_dataset_dir), "--output", str(store)]) == 0
    # what an older hydra_st wrote: raw vectors, no "normalized" entry
    old = EmbeddingStore(store)
    meta = {k: v for k, v in old.load_meta().items() if k not in ("normalized", "similarity")}
    raw = old.load_embeddings(mmap=False) * np.linspace(0.5, 3.0, len(TOY_CORPUS), dtype=np.float32)[:, None]
    old.save(raw, old.load_ids(), meta=meta)
    assert _retrieve(model, store, toy_dataset_dir, tmp_path / "ex") == 0
    assert _read_run(tmp_path / "ex" / "exhaustive.trec") == _expected_ranking(model)
    assert _retrieve(model, store, toy_dataset_dir, tmp_path / "fa", "--mode", "faiss") == 1
    assert "re-run `hydra-st encode`" in capsys.readouterr().err


def test_retrieve_ranks_a_euclidean_biencoder_by_its_similarity_and_faiss_refuses_it(
    tiny_st_model_dir, toy_dataset_dir, tmp_path, capsys
):
    model = _biencoder(tiny_st_model_dir, tmp_path / "st", "euclidean")
    store = tmp_path / "store"
    assert main(["encode", "--model", str(model), "--dataset", str(toy_dataset_dir), "--output", str(store)]) == 0
    assert _retrieve(model, store, toy_dataset_dir, tmp_path / "ex") == 0
    assert _read_run(tmp_path / "ex" / "exhaustive.trec") == _expected_ranking(model)
    assert _retrieve(model, store, toy_dataset_dir, tmp_path / "fa", "--mode", "faiss") == 1
    assert "similarity is euclidean" in capsys.readouterr().err


# --- 3. encode --batch-size reaches every document encode, a Hypencoder's and a plain bi-encoder's ---------------


@pytest.mark.parametrize("family", ["hypencoder", "bi-encoder"])
def test_encode_batch_size_reaches_every_document_encode(
    family, hyp_dir, tiny_st_model_dir, toy_dataset_dir, tmp_path, monkeypatch
):
    from sentence_transformers import SentenceTransformer

    model_dir = hyp_dir if family == "hypencoder" else tiny_st_model_dir
    seen: list[int | None] = []
    real = SentenceTransformer.encode

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("batch_size"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformer, "encode", spy)
    args = ["encode", "--model", str(model_dir), "--dataset", str(toy_dataset_dir), "--output", str(tmp_path / "s")]
    # an empty cache: the documents are encoded, not read back from an earlier test's embeddings
    assert main([*args, "--batch-size", "2", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert seen and set(seen) == {2}


# --- 4. early stopping scores the document side as it is now --------------------------------------------------------


def _held_out() -> tuple[TeacherExamples, dict[str, dict[str, int]]]:
    doc_ids = [d["_id"] for d in TOY_CORPUS]
    doc_texts = [(d["title"] + " " + d["text"]).strip() for d in TOY_CORPUS]
    q = TOY_QUERIES[:3]
    examples = TeacherExamples(
        "toy", doc_ids, doc_texts, [x["_id"] for x in q], [x["text"] for x in q],
        [np.arange(5)] * 3, [np.zeros(5)] * 3, [np.array([0])] * 3,
    )  # fmt: skip
    return examples, {"q1": {"d1": 1}, "q2": {"d2": 2}, "q3": {"d3": 1}}


def test_validation_reencodes_documents_once_the_shared_transformer_changed(hyp_dir):
    model = Hypencoder(str(hyp_dir))
    examples, qrels = _held_out()
    score = validation_ndcg([examples], [qrels])
    score(model)
    torch.manual_seed(1)
    with torch.no_grad():  # what a freeze_base=False step does to the shared transformer (the document route too)
        for p in model[0].parameters():
            p.add_(torch.randn_like(p) * 0.5)
    assert score(model) == pytest.approx(validation_ndcg([examples], [qrels])(model))


def test_validation_reuses_document_vectors_while_the_document_route_is_unchanged(hyp_dir, monkeypatch):
    import hydra_st.hypencoder.validation as validation

    model = Hypencoder(str(hyp_dir))
    examples, qrels = _held_out()
    calls = []
    real = validation.document_vectors
    monkeypatch.setattr(validation, "document_vectors", lambda *a, **k: calls.append(1) or real(*a, **k))
    score = validation_ndcg([examples], [qrels])
    score(model)
    document_side = {id(m) for m in route_modules(model, "document")}
    torch.manual_seed(1)
    query_only = [p for m in route_modules(model, "query") if id(m) not in document_side for p in m.parameters()]
    assert query_only
    with torch.no_grad():  # train the query side only (the hyper-head): the documents need no new encoding
        for p in query_only:
            p.add_(torch.randn_like(p) * 0.5)
    assert score(model) == pytest.approx(validation_ndcg([examples], [qrels])(model))
    assert len(calls) == 2  # the first call of each closure; the changed query side re-encoded nothing


def test_validation_refuses_a_dataset_without_held_out_queries():
    examples, _ = _held_out()
    empty = TeacherExamples("toy", examples.doc_ids, examples.doc_texts, [], [], [], [], [])
    with pytest.raises(ValueError, match="no held-out validation query"):
        validation_ndcg([empty], [{}])


# --- 5. a store of another width names the encode run that fixes it ------------------------------------------------


@pytest.mark.parametrize("mode", ["exhaustive", "graph", "faiss"])
def test_retrieve_refuses_a_store_of_another_width_without_fingerprints(
    tiny_st_model_dir, toy_dataset_dir, tmp_path, capsys, mode
):
    store = EmbeddingStore(tmp_path / "store16")
    emb = np.random.default_rng(0).normal(size=(len(TOY_CORPUS), 16)).astype(np.float32)
    store.save(emb, [d["_id"] for d in TOY_CORPUS], meta={"model": "some-16d-model"})
    store.save_graph(build_neighbor_graph(emb, k=2, show_progress_bar=False))
    assert _retrieve(tiny_st_model_dir, store.path, toy_dataset_dir, tmp_path / "o", "--mode", mode) == 1
    err = capsys.readouterr().err
    assert "16-d document vectors" in err and f"hydra-st encode --model {tiny_st_model_dir}" in err
    assert "Traceback" not in err


def test_retrieve_refuses_a_store_of_another_width_for_a_hypencoder(hyp_dir, toy_dataset_dir, tmp_path, capsys):
    store = EmbeddingStore(tmp_path / "store16")
    store.save(np.ones((len(TOY_CORPUS), 16), np.float32), [d["_id"] for d in TOY_CORPUS])
    assert _retrieve(hyp_dir, store.path, toy_dataset_dir, tmp_path / "o") == 1
    assert "scores 32-d ones" in capsys.readouterr().err


# --- 7. a split without qrels still gets its run ---------------------------------------------------------------------


def test_retrieve_writes_a_run_without_metrics_for_a_split_without_qrels(hyp_dir, toy_dataset_dir, tmp_path, caplog):
    data = tmp_path / "noqrels"
    data.mkdir()
    for name in ("corpus.jsonl", "queries.jsonl"):
        shutil.copy(toy_dataset_dir / name, data / name)
    store = tmp_path / "store"
    assert main(["encode", "--model", str(hyp_dir), "--dataset", str(data), "--output", str(store)]) == 0
    with caplog.at_level("WARNING"):
        assert _retrieve(hyp_dir, store, data, tmp_path / "out") == 0
    assert "no qrels for split 'test'" in caplog.text
    assert set(_read_run(tmp_path / "out" / "exhaustive.trec")) == {q["_id"] for q in TOY_QUERIES}
    assert not (tmp_path / "out" / "exhaustive.metrics.json").exists()
    assert "metrics" not in json.loads((tmp_path / "out" / "exhaustive.summary.json").read_text())


def test_retrieve_still_refuses_a_qrels_path_that_is_a_directory(hyp_dir, toy_dataset_dir, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["encode", "--model", str(hyp_dir), "--dataset", str(toy_dataset_dir), "--output", str(store)]) == 0
    (toy_dataset_dir / "qrels" / "dev.tsv").mkdir()
    assert _retrieve(hyp_dir, store, toy_dataset_dir, tmp_path / "out", "--split", "dev") == 1
    assert "not a qrels file" in capsys.readouterr().err


def test_retrieve_refuses_a_store_encoded_for_another_similarity(tiny_st_model_dir, toy_dataset_dir, tmp_path, capsys):
    model = _biencoder(tiny_st_model_dir, tmp_path / "st", "cosine")
    store = tmp_path / "store"
    assert main(["encode", "--model", str(model), "--dataset", str(toy_dataset_dir), "--output", str(store)]) == 0
    config = json.loads((model / "config_sentence_transformers.json").read_text())
    config["similarity_fn_name"] = "dot"  # the same weights (fingerprints match), now ranking by the raw dot product
    (model / "config_sentence_transformers.json").write_text(json.dumps(config))
    assert _retrieve(model, store, toy_dataset_dir, tmp_path / "ex") == 1
    assert "encoded for cosine similarity but --model ranks by dot" in capsys.readouterr().err
