from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hydra_st.hydra import Hydra, TaskCard
from hydra_st.hydra.evaluate import dev_score, evaluate_task, wrong_card_for
from hydra_st.hydra.preferences import PreferenceConfig, build_preferences, dense_run
from hydra_st.hydra.tasks import QuerySet, TaskData
from hydra_st.hydra.trainer import HydraTrainer, TrainingConfig


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_task(name: str, seed: int, n_docs: int = 80, n_q: int = 24) -> tuple[TaskData, object]:
    rng = np.random.default_rng(seed)
    docs = _unit(rng.normal(size=(n_docs, 32)))
    queries = _unit(docs[:n_q] + 0.5 * rng.normal(size=(n_q, 32)))
    doc_ids = [f"{name}-d{i}" for i in range(n_docs)]
    qids = [f"{name}-q{i}" for i in range(n_q)]
    train = QuerySet(qids[:16], [f"query {i}" for i in range(16)], queries[:16])
    dev = QuerySet(
        qids[16:],
        [f"query {i}" for i in range(16, n_q)],
        queries[16:],
        {q: {doc_ids[i + 16]: 1} for i, q in enumerate(qids[16:])},
    )
    card = TaskCard(name=name, description=f"Synthetic retrieval task {name}.", example_queries=[f"{name} query"])
    task = TaskData(name, card, doc_ids, [f"doc {i}" for i in range(n_docs)], docs, train, dev, dev)
    run = dense_run(train.embeddings, train.ids, docs, doc_ids, top_k=40)
    # a second "teacher" that knows the true document of each query
    oracle = {q: {doc_ids[i]: 10.0, **{d: s for d, s in list(run[q].items())[:20]}} for i, q in enumerate(train.ids)}
    prefs = build_preferences(train.ids, [run, oracle], doc_ids, PreferenceConfig(candidates=30, pairs_per_query=8))
    return task, prefs


@pytest.fixture
def setup(tiny_st_model):
    model = Hydra.from_base(tiny_st_model, out_dim=16, cond_dim=8, rank=2, hidden_dim=16)
    (a, pa), (b, pb) = make_task("alpha", 0), make_task("beta", 1)
    return model, [a, b], {"alpha": pa, "beta": pb}


def test_train_checkpoint_resume(setup, tmp_path):
    model, tasks, prefs = setup
    cfg = TrainingConfig(epochs=2, batch_size=8, checkpoint_every=2, show_progress_bar=False)
    trainer = HydraTrainer(model, tasks, prefs, cfg, output_dir=tmp_path, dev_evaluator=lambda m: dev_score(m, tasks))
    before = {k: v.clone() for k, v in model.head.state_dict().items()}
    summary = trainer.train()
    assert summary["steps"] == 8 and summary["best_dev"] is not None
    assert any(not torch.equal(before[k], v) for k, v in model.head.state_dict().items())
    log = [json.loads(line) for line in (tmp_path / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 9))
    assert (tmp_path / "checkpoint-2" / "training_state.safetensors").is_file()
    # resume from step 4: the trainer continues to step 8
    model2 = Hydra.from_base(model, out_dim=16, cond_dim=8, rank=2, hidden_dim=16)
    trainer2 = HydraTrainer(model2, tasks, prefs, cfg, output_dir=tmp_path / "r")
    summary2 = trainer2.train(resume_from=tmp_path / "checkpoint-4")
    assert summary2["steps"] == 8
    assert len([h for h in trainer2.history if "loss" in h]) == 4


def test_trained_model_evaluates_and_encodes_consistently(setup):
    model, tasks, prefs = setup
    HydraTrainer(model, tasks, prefs, TrainingConfig(epochs=1, batch_size=8, show_progress_bar=False)).train()
    res = evaluate_task(
        tasks[0], model, {t.name: t.card for t in tasks}, systems=("base", "hydra", "hydra_wrong_card")
    )
    assert set(res) == {"base", "hydra", "hydra_wrong_card"}
    assert 0 <= res["hydra"]["ndcg@10"] <= 1
    assert wrong_card_for("alpha", ["alpha", "beta"]) == "beta"


def test_corrupt_and_mismatched_checkpoints(setup, tmp_path):
    model, tasks, prefs = setup
    cfg = TrainingConfig(epochs=1, batch_size=8, show_progress_bar=False)
    HydraTrainer(model, tasks, prefs, cfg, output_dir=tmp_path).train()
    final = tmp_path / "checkpoint-final"
    (final / "training_state.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt"):
        HydraTrainer(model, tasks, prefs, cfg).train(resume_from=final)
    with pytest.raises(FileNotFoundError, match="not a Hydra checkpoint"):
        HydraTrainer(model, tasks, prefs, cfg).train(resume_from=tmp_path / "nowhere")
    other = Hydra.from_base(model, out_dim=8, cond_dim=8, rank=2, hidden_dim=16)
    HydraTrainer(other, tasks, prefs, cfg, output_dir=tmp_path / "o").train()
    with pytest.raises(ValueError, match="does not match"):
        HydraTrainer(model, tasks, prefs, cfg).train(resume_from=tmp_path / "o" / "checkpoint-final")


def test_bad_trainer_inputs(setup):
    model, tasks, prefs = setup
    with pytest.raises(ValueError, match="no preferences"):
        HydraTrainer(model, tasks, {"alpha": prefs["alpha"]})
    with pytest.raises(ValueError, match="other queries"):
        HydraTrainer(model, tasks, {"alpha": prefs["beta"], "beta": prefs["beta"]})
    with pytest.raises(ValueError, match="init"):
        TrainingConfig(init="random")
    with pytest.raises(ValueError, match="unknown loss"):
        TrainingConfig(loss_weights={"bogus": 1.0})
    with pytest.raises(ValueError, match="at least one task"):
        HydraTrainer(model, [], {})


def test_dev_aggregates():
    from hydra_st.hydra.evaluate import aggregate_gains

    gains = {"a": 0.02, "b": -0.01}
    assert aggregate_gains(gains, "mean") == pytest.approx(0.005)
    assert aggregate_gains(gains, "min") == pytest.approx(-0.01)
    assert aggregate_gains(gains, "penalized") == pytest.approx(0.005 - 0.005)
    with pytest.raises(ValueError, match="aggregate"):
        aggregate_gains(gains, "max")
    with pytest.raises(ValueError, match="no task"):
        aggregate_gains({}, "mean")


def test_dict_dev_evaluator_is_aggregated(setup):
    model, tasks, prefs = setup
    cfg = TrainingConfig(epochs=1, batch_size=8, show_progress_bar=False)
    trainer = HydraTrainer(model, tasks, prefs, cfg, dev_evaluator=lambda m: {"alpha": 0.1, "beta": 0.3})
    summary = trainer.train()
    assert summary["best_dev"]["score"] == pytest.approx(0.2)
    assert summary["dev_history"][0]["dev_per_task"] == {"alpha": 0.1, "beta": 0.3}
