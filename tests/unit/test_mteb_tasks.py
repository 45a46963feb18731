from __future__ import annotations

from pathlib import Path

import pytest

from hydra_st.data import load_beir_folder
from hydra_st.evaluation import evaluate_run
from hydra_st.evaluation.mteb_tasks import beir_retrieval_task
from hydra_st.teachers import DenseTeacher


def test_mteb_scores_a_local_dataset_like_our_pipeline(tiny_st_model, toy_dataset_dir: Path, tmp_path: Path) -> None:
    mteb = pytest.importorskip("mteb")
    ds = load_beir_folder(toy_dataset_dir)
    task = beir_retrieval_task(ds, description="toy task")
    assert task.metadata.name == "HydraSTToyRetrieval"
    results = mteb.evaluate(tiny_st_model, task, cache=None, show_progress_bar=False)
    mteb_ndcg = results.task_results[0].get_score()

    teacher = DenseTeacher(tiny_st_model, cache_dir=tmp_path, show_progress_bar=False).index(ds.doc_ids, ds.doc_texts)
    run = teacher.search({qid: q.text for qid, q in ds.judged_queries.items()}, top_k=100)
    ours = evaluate_run(ds.qrels, run, ["ndcg@10"]).aggregate["ndcg@10"]
    assert mteb_ndcg == pytest.approx(ours, abs=1e-4)
