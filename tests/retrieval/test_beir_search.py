"""BEIR's EvaluateRetrieval over the project's models (ModelSearch), checked against this package's evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("beir")

from beir.datasets.data_loader import GenericDataLoader  # noqa: E402
from beir.retrieval.evaluation import EvaluateRetrieval  # noqa: E402

from hydra_st.data import load_beir_folder  # noqa: E402
from hydra_st.evaluation import evaluate_run  # noqa: E402
from hydra_st.hydra import Hydra, TaskCard  # noqa: E402
from hydra_st.hypencoder import Hypencoder, QNetConverter  # noqa: E402
from hydra_st.retrieval import exhaustive_search, to_run  # noqa: E402
from hydra_st.retrieval.beir_search import ModelSearch  # noqa: E402


def ours(model, folder: Path, **encode_kwargs) -> float:
    ds = load_beir_folder(folder)
    qids = list(ds.judged_queries)
    q = model.encode_query([ds.judged_queries[i].text for i in qids], convert_to_tensor=True, **encode_kwargs)
    d = model.encode_document(ds.doc_texts, convert_to_tensor=True, **encode_kwargs)
    scores, idx = exhaustive_search(q, d, top_k=5, scorer=model.similarity)
    return evaluate_run(ds.qrels, to_run(qids, ds.doc_ids, scores, idx), ["ndcg@10"]).aggregate["ndcg@10"]


def beir_ndcg(model, folder: Path, **encode_kwargs) -> float:
    corpus, queries, qrels = GenericDataLoader(data_folder=str(folder)).load(split="test")
    retriever = EvaluateRetrieval(ModelSearch(model, encode_kwargs=encode_kwargs, show_progress_bar=False))
    results = retriever.retrieve(corpus, queries)
    assert set(results) == set(queries) and all(len(r) == len(corpus) for r in results.values())
    ndcg, *_ = retriever.evaluate(qrels, results, [10])
    return ndcg["NDCG@10"]


def test_beir_scores_plain_hydra_and_hypencoder_models_like_this_package(tiny_st_model, toy_dataset_dir):
    hypencoder = Hypencoder.from_base(tiny_st_model, converter=QNetConverter([32, 16, 1], linear_skip=True))
    hydra = Hydra.from_base(tiny_st_model, out_dim=32, cond_dim=8, rank=2, hidden_dim=16)
    torch.manual_seed(0)
    with torch.no_grad():  # a card-dependent head, as after training, so the card has to reach both encode calls
        for p in hydra.head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    card = {"task_card": TaskCard(name="toy", description="Everyday science questions.")}
    for model, kwargs in ((tiny_st_model, {}), (hypencoder, {}), (hydra, card)):
        assert beir_ndcg(model, toy_dataset_dir, **kwargs) == pytest.approx(
            ours(model, toy_dataset_dir, **kwargs), abs=1e-4
        )


def test_beir_embedding_files_are_refused(tiny_st_model):
    search = ModelSearch(tiny_st_model)
    with pytest.raises(NotImplementedError, match="pickle"):
        search.encode({}, {})
    with pytest.raises(NotImplementedError, match="pickle"):
        search.search_from_files("q.pkl", ["c.pkl"], 10)
    with pytest.raises(ValueError, match="non-empty corpus"):
        search.search({}, {"q": "x"}, 10)


@pytest.mark.integration
def test_beir_on_real_adi_matches_the_published_minilm_baseline(minilm, beir_data_dir: Path):
    corpus, queries, qrels = GenericDataLoader(data_folder=str(beir_data_dir / "adi")).load(split="test")
    retriever = EvaluateRetrieval(ModelSearch(minilm, show_progress_bar=False))
    results = retriever.retrieve(corpus, queries)
    ndcg, *_ = retriever.evaluate(qrels, results, [10], ignore_identical_ids=False)
    assert ndcg["NDCG@10"] == pytest.approx(0.4975, abs=1e-4)  # evaluation/results/baselines.md, dense, adi
    # BEIR's default drops a document whose id equals the query id: on adi both count from 1, so it costs points
    default, *_ = retriever.evaluate(qrels, results, [10])
    assert default["NDCG@10"] < ndcg["NDCG@10"] - 0.005
