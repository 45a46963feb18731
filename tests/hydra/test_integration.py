"""Hydra on the real MiniLM and the real adi / med data (marked integration; the full quickstart is slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_tasks(beir_data_dir, minilm):
    from hydra_st.hydra.pipeline import load_tasks

    return load_tasks(["adi", "med"], minilm, data_dir=str(beir_data_dir), n_pseudo=200, show_progress_bar=False)


def test_training_queries_never_overlap_evaluation(real_tasks):
    for task in real_tasks:
        assert not set(task.train.ids) & set(task.test.ids)
        assert not set(task.dev.ids) & set(task.test.ids)
        assert all(q.startswith("pseudo-") for q in task.train.ids)
        assert task.doc_embeddings.shape == (len(task.doc_ids), 384)


def test_training_data_reads_no_test_qrels(beir_data_dir, minilm, monkeypatch):
    import hydra_st.data.beir as beir
    from hydra_st.hydra.tasks import QueryEmbeddingCache, build_task
    from hydra_st.teachers import DenseTeacher

    real = beir.load_qrels

    def guarded(path):
        if str(path).endswith("test.tsv"):
            raise AssertionError(f"training code opened {path}")
        return real(path)

    monkeypatch.setattr(beir, "load_qrels", guarded)
    teacher = DenseTeacher(minilm, show_progress_bar=False)
    task = build_task(
        "med",
        teacher,
        QueryEmbeddingCache(minilm, teacher.model_fingerprint),
        data_dir=beir_data_dir,
        n_pseudo=50,
        with_test=False,
    )
    assert 40 < len(task.train) <= 50 and len(task.dev) > 0 and not task.test.ids


def test_train_evaluate_and_encode_agree(real_tasks, minilm, tmp_path):
    import torch

    from hydra_st.hydra import Hydra
    from hydra_st.hydra.evaluate import SYSTEMS, evaluate_task
    from hydra_st.hydra.generator import apply_head
    from hydra_st.hydra.pipeline import PipelineConfig, train_model
    from hydra_st.hydra.trainer import TrainingConfig

    config = PipelineConfig(tasks=("adi", "med"), training=TrainingConfig(epochs=1, show_progress_bar=False))
    model, summary = train_model(minilm, real_tasks, config, output_dir=tmp_path / "train")
    assert summary["steps"] > 0 and (tmp_path / "train" / "loss_log.jsonl").is_file()
    # the default "confident" gate rule: a gate is open exactly where the dev gain's lower bound is above 0
    bounds = summary["gated_dev_lower_bounds"]
    assert set(bounds) == {"adi", "med"} and set(summary["gated_dev_gains"]) == {"adi", "med"}
    assert {t: g > 0.5 for t, g in summary["gates"].items()} == {t: b > 0 for t, b in bounds.items()}
    cards = {t.name: t.card for t in real_tasks}
    res = evaluate_task(real_tasks[0], model, cards)
    assert set(res) == set(SYSTEMS) - {"hydra_loto"}
    for metrics in res.values():
        assert set(metrics) == {"ndcg@10", "mrr@10", "recall@100"}
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
    # evaluation on cached embeddings equals what a user gets from encode_document with the card
    adi = real_tasks[0]
    encoded = model.encode_document(adi.doc_texts[:8], task_card=adi.card, convert_to_numpy=True)
    params = model.head.compile_card(adi.card)
    cached = apply_head(params, torch.from_numpy(adi.doc_embeddings[:8]), layer_norm=model.head.layer_norm).numpy()
    assert np.allclose(encoded, cached, atol=1e-4)
    model.save(str(tmp_path / "model"))
    again = Hydra(str(tmp_path / "model"))
    assert np.allclose(again.encode_document(adi.doc_texts[:8], task_card=adi.card), encoded, atol=1e-5)


@pytest.mark.slow
def test_quickstart_cli_end_to_end(beir_data_dir, tmp_path, capsys):
    from hydra_st.cli.main import main

    rc = main(
        [
            "quickstart",
            "--tasks",
            "adi,med",
            "--epochs",
            "1",
            "--loto",
            "--no-progress",
            "--data-dir",
            str(beir_data_dir),
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "| adi |" in out and "hydra_loto" in out
    assert "gates open: " in out and "what decided each (the dev gain's 95% lower bound" in out
    assert (tmp_path / "model" / "hydra_head.py").is_file()
    report = json.loads((tmp_path / "hydra_results.json").read_text())
    assert set(report["training"]["gates"]) == {"adi", "med"}  # the fallback gate was calibrated (the default)
    assert json.loads((tmp_path / "model" / "3_HydraHead" / "config.json").read_text())["gated"] is True


def test_cli_card_and_missing_data(tmp_path, capsys):
    from hydra_st.cli.main import main

    assert main(["hydra-card", "scifact"]) == 0
    assert "Task: scifact" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndescription: ''\n")
    assert main(["hydra-card", str(bad)]) == 1
    assert "description is empty" in capsys.readouterr().err
    assert main(["quickstart", "--tasks", "nope", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path)]) == 1
    assert "not found" in capsys.readouterr().err


def test_hydra_evaluate_cli_on_the_published_model(beir_data_dir, tmp_path, capsys):
    from pathlib import Path

    from hydra_st.cli.main import main

    model = Path(__file__).resolve().parents[2] / "models" / "hydra-minilm-l6"
    args = ["hydra-evaluate", "--model", str(model), "--data-dir", str(beir_data_dir), "--output-dir", str(tmp_path)]
    assert main([*args, "--dataset", "adi"]) == 0
    out = capsys.readouterr().out
    assert "card: adi" in out and "| adi / hydra |" in out
    result = json.loads((tmp_path / "adi" / "test" / "hydra.json").read_text())
    # the published table: adi's gate is closed, so Hydra scores exactly the base model there
    assert result["aggregate"]["ndcg@10"] == pytest.approx(0.4975, abs=1e-4)
    assert (tmp_path / "adi" / "test" / "hydra.trec").is_file()
