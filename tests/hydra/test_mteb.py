"""Hydra under MTEB: the task's card reaches encode_query / encode_document."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hydra_st.data import load_beir_folder
from hydra_st.evaluation import evaluate_run
from hydra_st.hydra import TaskCard
from hydra_st.retrieval import dense_run

mteb = pytest.importorskip("mteb")

from hydra_st.evaluation.mteb_tasks import beir_retrieval_task  # noqa: E402
from hydra_st.hydra.mteb import HydraMTEBWrapper, bundled_card_name, card_from_metadata  # noqa: E402

CARD = TaskCard(name="toy", description="Find the passage that answers an everyday science question.")


def test_mteb_scores_hydra_with_the_given_card(tiny_hydra, toy_dataset_dir: Path) -> None:
    ds = load_beir_folder(toy_dataset_dir)
    task = beir_retrieval_task(ds, description="toy task")
    wrapper = HydraMTEBWrapper(tiny_hydra, cards={task.metadata.name: CARD})
    result = mteb.evaluate(wrapper, task, cache=None, show_progress_bar=False)
    mteb_ndcg = result.task_results[0].get_score()
    assert wrapper.cards_used == {task.metadata.name: "given"}

    # the same ranking computed by hand with that card
    queries = ds.judged_queries
    q = tiny_hydra.encode_query([queries[i].text for i in queries], task_card=CARD)
    d = tiny_hydra.encode_document(ds.doc_texts, task_card=CARD)
    run = dense_run(q, list(queries), d, ds.doc_ids, top_k=5)
    ours = evaluate_run(ds.qrels, run, ["ndcg@10"]).aggregate["ndcg@10"]
    assert mteb_ndcg == pytest.approx(ours, abs=1e-4)


def test_wrapper_encodes_with_the_card_not_the_generic_head(tiny_hydra, toy_dataset_dir: Path) -> None:
    from datasets import Dataset
    from torch.utils.data import DataLoader

    meta = beir_retrieval_task(load_beir_folder(toy_dataset_dir)).metadata
    wrapper = HydraMTEBWrapper(tiny_hydra, cards={meta.name: CARD})
    texts = ["why do cats purr", "what makes stock prices drop"]
    loader = DataLoader(Dataset.from_dict({"text": texts}), batch_size=2)  # what MTEB hands an encoder
    out = wrapper.encode(loader, task_metadata=meta, hf_split="test", hf_subset="default", show_progress_bar=False)
    assert np.allclose(out, tiny_hydra.encode(texts, task_card=CARD), atol=1e-5)
    assert not np.allclose(out, tiny_hydra.encode(texts), atol=1e-3)


def test_card_resolution_order() -> None:
    local = SimpleNamespace(
        name="HydraSTScifactRetrieval", description="d", domains=None, dataset={"path": "local/scifact"}
    )
    official = SimpleNamespace(
        name="NFCorpus", description="d", domains=["Medical"], dataset={"path": "mteb/nfcorpus"}
    )
    unknown = SimpleNamespace(
        name="Some Task (v2)", description="Find  answers\nto questions.", domains=["Web"], dataset={"path": "x/y"}
    )
    assert bundled_card_name(local) == "scifact"
    assert bundled_card_name(official) == "nfcorpus"
    assert bundled_card_name(unknown) is None
    card = card_from_metadata(unknown)
    assert (card.name, card.description, card.domain) == ("Some-Task--v2", "Find answers to questions.", "Web")
