"""A store's files are tied together: mixed, stale, corrupt or interrupted stores fail to load with a clear error."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import hydra_st.retrieval.store as store_module
from hydra_st.cli.main import main
from hydra_st.evaluation import paired_comparison
from hydra_st.retrieval import EmbeddingStore, FaissIndex, GraphSearcher, build_neighbor_graph, exhaustive_search


@pytest.fixture
def vectors() -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def store(vectors, tmp_path) -> EmbeddingStore:
    s = EmbeddingStore(tmp_path / "store")
    s.save(vectors, [f"d{i}" for i in range(len(vectors))], meta={"model": "m"})
    s.save_graph(build_neighbor_graph(vectors, k=4, show_progress_bar=False), {"metric": "ip"})
    index = FaissIndex(vectors.shape[1])
    index.add(vectors)
    s.save_index(index)
    return s


def _meta(store: EmbeddingStore) -> dict:
    return json.loads((store.path / "meta.json").read_text())


def test_meta_records_fingerprints(store, vectors):
    meta = _meta(store)
    assert (meta["num_documents"], meta["dim"], meta["model"]) == (40, 6, "m")
    assert meta["ids_fingerprint"] and meta["embeddings_fingerprint"]
    assert meta["graph"]["embeddings_fingerprint"] == meta["embeddings_fingerprint"]
    assert meta["index"] == {
        "kind": "flat",
        "ntotal": 40,
        "d": 6,
        "embeddings_fingerprint": meta["embeddings_fingerprint"],
    }
    assert np.array_equal(store.load_embeddings(), vectors) and len(store.load_graph()) == 40
    assert len(store.load_index()) == 40


def test_shuffled_embeddings_are_detected(store, vectors):
    np.save(store.path / "embeddings.npy", vectors[::-1].copy())  # same shape and dtype, other order
    with pytest.raises(ValueError, match=r"embeddings.npy is not the file.*hydra-st encode"):
        store.load_embeddings()


def test_permuted_ids_are_detected(store):
    ids = json.loads((store.path / "ids.json").read_text())
    (store.path / "ids.json").write_text(json.dumps(ids[::-1]))
    with pytest.raises(ValueError, match=r"ids.json is not the list.*hydra-st encode"):
        store.load_ids()
    (store.path / "ids.json").write_text(json.dumps(ids[:-2]))
    with pytest.raises(ValueError, match="38 ids but the store has 40 embeddings"):
        store.load_ids()


def test_interrupted_save_is_detected_and_keeps_no_stale_graph(store, vectors, monkeypatch):
    real = store_module.atomic_write_json

    def crash_on_ids(path, obj, indent=2):
        if str(path).endswith("ids.json"):
            raise KeyboardInterrupt  # the process dies after embeddings.npy was replaced
        return real(path, obj, indent)

    monkeypatch.setattr(store_module, "atomic_write_json", crash_on_ids)
    with pytest.raises(KeyboardInterrupt):
        store.save(vectors[::-1].copy(), [f"d{i}" for i in range(40)])
    monkeypatch.setattr(store_module, "atomic_write_json", real)
    assert store.has_graph()  # not deleted before the new data was complete ...
    for load in (store.load_embeddings, store.load_ids, store.load_graph):
        with pytest.raises(ValueError, match="incomplete.*hydra-st encode"):  # ... and never used with it
            load()


def test_stale_graph_and_index_are_detected(store, vectors):
    # a crash between writing the new meta.json and deleting the old graph/index: they name other embeddings
    graph, index = (store.path / "graph.npy").read_bytes(), (store.path / "index.faiss").read_bytes()
    store.save(vectors[::-1].copy(), [f"d{i}" for i in range(40)])
    assert not store.has_graph() and not store.has_index()
    (store.path / "graph.npy").write_bytes(graph)
    (store.path / "index.faiss").write_bytes(index)
    with pytest.raises(ValueError, match="graph.npy was built from other embeddings: re-run `hydra-st build-graph`"):
        store.load_graph()
    with pytest.raises(ValueError, match="index.faiss was built from other embeddings"):
        store.load_index()


def test_index_must_hold_the_store(store, vectors):
    small = FaissIndex(6)
    small.add(vectors[:20])
    small.save(store.path / "index.faiss")
    with pytest.raises(ValueError, match="holds 20 6-d vectors but the store has 40 6-d"):
        store.load_index()
    with pytest.raises(ValueError, match="holds 20"):
        store.save_index(small)


def test_corrupt_values_and_dtypes(store, vectors):
    meta = _meta(store)
    bad = vectors.copy()
    bad[3, 2] = np.nan
    np.save(store.path / "embeddings.npy", bad)
    (store.path / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if "fingerprint" not in k}))
    with pytest.raises(ValueError, match="NaN or infinite.*hydra-st encode"):
        store.load_embeddings()
    np.save(store.path / "embeddings.npy", (vectors * 100).astype(np.int32))
    with pytest.raises(ValueError, match="dtype int32"):
        store.load_embeddings()
    np.save(store.path / "graph.npy", np.zeros((40, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="dtype float32, not integer"):
        store.load_graph()
    with pytest.raises(ValueError, match="NaN or infinite"):
        build_neighbor_graph(bad, k=4, show_progress_bar=False)
    with pytest.raises(ValueError, match="NaN or infinite"):
        EmbeddingStore(store.path.parent / "other").save(bad, [f"d{i}" for i in range(40)])


def test_bad_meta_names_the_file(store):
    (store.path / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"meta.json: unreadable meta.json.*hydra-st encode"):
        store.load_embeddings()
    (store.path / "meta.json").write_text("[]")
    with pytest.raises(ValueError, match="must hold a JSON object, not a list"):
        store.load_ids()


def test_missing_meta_graph_is_checked_against_the_embeddings(store, caplog):
    (store.path / "meta.json").unlink()
    with caplog.at_level(logging.WARNING):
        assert store.load_graph().shape == (40, 4)  # no false "does not fit" when meta.json has no size
    assert "no fingerprints" in caplog.text
    store.save_graph(store.load_graph())  # rebuilds the missing size fields from the arrays
    meta = _meta(store)
    assert (meta["num_documents"], meta["dim"]) == (40, 6)
    assert store.load_embeddings().shape == (40, 6)


def test_legacy_store_still_loads(store, vectors, caplog):
    meta = _meta(store)
    legacy = {k: v for k, v in meta.items() if k not in ("ids_fingerprint", "embeddings_fingerprint", "index")}
    legacy["graph"] = {"k": 4, "metric": "ip"}
    (store.path / "meta.json").write_text(json.dumps(legacy))
    with caplog.at_level(logging.WARNING):
        assert np.array_equal(store.load_embeddings(), vectors)
    assert "older hydra_st" in caplog.text
    assert store.load_ids()[0] == "d0" and store.load_graph().shape == (40, 4) and len(store.load_index()) == 40


def test_search_parameters_are_validated(vectors):
    graph = build_neighbor_graph(vectors, k=4, show_progress_bar=False)
    for name in ("num_entry_points", "ncandidates", "max_iter"):
        with pytest.raises(ValueError, match=f"{name} must be >= 1"):
            GraphSearcher(vectors, graph, **{name: 0})
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        exhaustive_search(vectors[:2], vectors, chunk_size=-1)
    with pytest.raises(ValueError, match="resamples must be >= 1"):
        paired_comparison({"q": 1.0}, {"q": 0.5}, resamples=0)


@pytest.mark.parametrize(
    "argv",
    [
        ["retrieve", "--mode", "graph", "--entry-points", "0"],
        ["retrieve", "--mode", "graph", "--max-iter", "0"],
        ["retrieve", "--ncandidates", "0"],
        ["retrieve", "--chunk-size", "-1"],
        ["retrieve", "--top-k", "-5", "--mode", "faiss"],
        ["retrieve", "--index-seeds", "-1"],
        ["build-graph", "--reverse-edges", "-1"],
        ["evaluate", "--top-k", "0"],
        ["compare", "a.trec", "b.trec", "--resamples", "0"],
    ],
)
def test_cli_rejects_bad_numbers(argv, capsys):
    common = {
        "retrieve": ["--model", "m", "--store", "s", "--dataset", "d", "--output-dir", "o"],
        "build-graph": ["--store", "s"],
        "evaluate": ["--dataset", "d"],
        "compare": ["--dataset", "d"],
    }[argv[0]]
    with pytest.raises(SystemExit) as exc:
        main([*argv, *common])
    assert exc.value.code == 2 and "must be >=" in capsys.readouterr().err


class _FakeBiEncoder:
    """Stands in for a sentence-transformer: fixed query vectors, no model to load."""

    def encode_query(self, texts, convert_to_tensor=True, **kwargs):
        import torch

        return torch.ones(len(texts), 6)


@pytest.fixture
def toy_store(toy_dataset_dir, tmp_path, monkeypatch) -> tuple:
    import hydra_st.cli.hypencoder_commands as commands

    monkeypatch.setattr(commands, "load_model", lambda *args, **kwargs: _FakeBiEncoder())
    path = tmp_path / "toy_store"
    x = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    EmbeddingStore(path).save(x, ["d1", "d2", "d3", "d4", "d5"])
    retrieve = ["retrieve", "--model", "fake", "--store", str(path), "--dataset", str(toy_dataset_dir)]
    return path, [*retrieve, "--output-dir", str(tmp_path / "out"), "--top-k", "3"], tmp_path / "out"


def test_interrupted_retrieve_leaves_no_stale_metrics(toy_store, monkeypatch):
    import hydra_st.evaluation as evaluation

    _, argv, out = toy_store
    assert main(argv) == 0
    assert (out / "exhaustive.metrics.json").exists() and (out / "exhaustive.summary.json").exists()
    assert "hydra_st-biencoder-exhaustive" in (out / "exhaustive.trec").read_text()
    real = evaluation.write_trec_run

    def write_then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "write_trec_run", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert (out / "exhaustive.trec").exists()
    assert not (out / "exhaustive.metrics.json").exists() and not (out / "exhaustive.summary.json").exists()


def test_retrieve_refuses_a_mixed_store(toy_store, capsys):
    path, argv, _ = toy_store
    ids = json.loads((path / "ids.json").read_text())
    (path / "ids.json").write_text(json.dumps(ids[::-1]))
    assert main(argv) == 1
    assert "ids.json is not the list meta.json was written with" in capsys.readouterr().err


def test_encode_output_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["encode", "--model", "m", "--dataset", "d", "--output", str(tmp_path / "file")]) == 1
    assert "is an existing file, not a store folder" in capsys.readouterr().err


def test_encode_needs_no_qrels(tmp_path, monkeypatch):
    import hydra_st.cli.hypencoder_commands as commands
    from tests.conftest import TOY_CORPUS, TOY_QUERIES, write_beir_folder

    class Encoder(_FakeBiEncoder):
        def encode_document(self, texts, **kwargs):
            return np.eye(len(texts), 6, dtype=np.float32) + 0.5

    monkeypatch.setattr(commands, "load_model", lambda *args, **kwargs: Encoder())
    data = write_beir_folder(tmp_path / "devonly", TOY_CORPUS, TOY_QUERIES, {"dev": "query-id\tcorpus-id\tscore\n"})
    assert main(["encode", "--model", "m", "--dataset", str(data), "--output", str(tmp_path / "s")]) == 0
    assert EmbeddingStore(tmp_path / "s").load_ids() == ["d1", "d2", "d3", "d4", "d5"]


def _model_folder(path, types: list[str]):
    path.mkdir(parents=True)
    (path / "modules.json").write_text(json.dumps([{"idx": i, "path": "", "type": t} for i, t in enumerate(types)]))
    return path


def test_model_family_errors(tmp_path):
    from hydra_st.cli.common import check_model
    from hydra_st.cli.hypencoder_commands import load_model

    hydra = _model_folder(tmp_path / "hydra", ["sentence_transformers.Transformer", "hydra_head.HydraHead"])
    hyp = _model_folder(tmp_path / "hyp", ["hydra_st.hypencoder.modules.BaseModelReference", "router.Router"])
    with pytest.raises(ValueError, match="is a Hydra model.*use `hydra-st hydra-evaluate`"):
        load_model(str(hydra))
    with pytest.raises(ValueError, match="is a Hypencoder model.*use `hydra-st retrieve"):
        check_model(str(hyp), "hydra", "hydra-st hydra-evaluate")
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        load_model(str(tmp_path / "missing" / "model"))
    check_model("sentence-transformers/all-MiniLM-L6-v2", None, "hydra-st retrieve")  # a Hub id: left to the loader


def test_main_reports_os_and_safetensors_errors(tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError

    import hydra_st.cli.hypencoder_commands as commands

    for error in (PermissionError(13, "Permission denied", "x.npy"), SafetensorError("header too large")):

        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(commands, "run_build_graph", fail)
        assert main(["build-graph", "--store", str(tmp_path)]) == 1
        assert capsys.readouterr().err.count("\n") == 1  # one line, no traceback
    with pytest.raises(SafetensorError):
        main(["--debug", "build-graph", "--store", str(tmp_path)])
