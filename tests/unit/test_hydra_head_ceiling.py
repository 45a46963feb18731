"""The supervised head ceiling script (evaluation/hydra_head_ceiling.py) on a synthetic task."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from tests.conftest import load_repo_script


@pytest.fixture(scope="module")
def ceiling():
    return load_repo_script("evaluation/hydra_head_ceiling.py", "hydra_head_ceiling")


def _normalised(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_judged_queries_and_training_lower_the_loss(ceiling):
    rng = np.random.default_rng(0)
    docs = _normalised(rng.normal(size=(60, 8)))
    queries = _normalised(rng.normal(size=(10, 8)))
    doc_ids = [f"d{i}" for i in range(60)]
    qrels = {f"q{i}": {f"d{i}": 2, f"d{i + 10}": 1, f"d{i + 20}": 0} for i in range(10)}
    qrels["q9"] = {"d-missing": 1}  # a query whose only relevant document is not in the corpus is left out
    judged = ceiling.JudgedQueries(queries, [f"q{i}" for i in range(10)], qrels, docs, doc_ids)
    assert judged.queries.shape == (9, 8)
    assert judged.pair_weight.tolist() == [2.0, 1.0] * 9  # grade-0 judgments are not positives
    # a relevant document is never one of its own query's negatives
    for pair, doc in zip(judged.pair_query.tolist(), judged.pair_doc.tolist(), strict=True):
        valid = judged.negatives[pair][judged.negative_mask[pair]]
        assert doc not in valid.tolist()
    heads = list(ceiling.train_head([judged], steps=30, eval_every=10, lr=1e-2))
    assert [step for step, _ in heads] == [0, 10, 20, 30]
    assert torch.count_nonzero(heads[0][1]) == 0  # step 0 is the base model
    losses = [float(judged.loss(a)) for _, a in heads]
    assert losses[-1] < losses[0]


def test_judged_queries_refuses_a_task_without_usable_judgments(ceiling):
    docs = _normalised(np.eye(4))
    with pytest.raises(ValueError, match="no judged query"):
        ceiling.JudgedQueries(docs[:1], ["q"], {"q": {"zz": 1}}, docs, ["a", "b", "c", "d"])


def test_summarise_picks_per_task_and_common_steps(ceiling):
    rows = {
        "a": {
            s: {0: 0.5, 5: 0.6, 10: 0.55} for s in ("cross_fitted_by_step", "transfer_by_step", "memorised_by_step")
        },
        "b": {
            s: {0: 0.4, 5: 0.39, 10: 0.45} for s in ("cross_fitted_by_step", "transfer_by_step", "memorised_by_step")
        },
    }
    summary = ceiling.summarise(rows)["transfer"]
    assert summary["per_task_best"] == {"a": {"step": 5, "ndcg@10": 0.6}, "b": {"step": 10, "ndcg@10": 0.45}}
    assert summary["common_step"] == 10 and summary["common_step_mean"] == pytest.approx(0.5)
    assert summary["per_task_best_mean"] == pytest.approx(0.525)


def test_training_free_transforms_centre_and_project(ceiling):
    rng = np.random.default_rng(1)
    x = _normalised(rng.normal(size=(5, 6)) + 3.0)  # a shared offset, as in anisotropic embeddings
    mean = x.mean(0)
    out = ceiling.centred(x, mean, 1.0)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert np.allclose(out, _normalised(x - mean), atol=1e-6)
    drop = np.eye(6, dtype=np.float32)[:1]
    assert np.allclose(ceiling.centred(x, mean, 1.0, drop)[:, 0], 0.0, atol=1e-6)  # the dropped direction is gone
    # every transform is scored on the task's test queries
    docs = _normalised(rng.normal(size=(30, 6)))
    test = types.SimpleNamespace(
        ids=[f"q{i}" for i in range(5)],
        embeddings=_normalised(docs[:5] + 0.1),
        qrels={f"q{i}": {f"d{i}": 1} for i in range(5)},
    )
    train = types.SimpleNamespace(embeddings=_normalised(docs[5:10] + 0.1))
    dev = types.SimpleNamespace(embeddings=_normalised(docs[10:12] + 0.1))
    task = types.SimpleNamespace(
        test=test, train=train, dev=dev, doc_embeddings=docs, doc_ids=[f"d{i}" for i in range(30)]
    )
    scores = ceiling.training_free(task, docs[:3], test.embeddings[:2])
    assert set(scores) == set(ceiling.TRAINING_FREE) - {"shared_query_shift_loto"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_shared_query_shift_picks_its_step_on_the_other_tasks(ceiling):
    rng = np.random.default_rng(2)

    def task(name, offset):
        docs = _normalised(rng.normal(size=(40, 6)))
        queries = _normalised(docs[:12] + offset)  # every query is its document moved away by the same offset

        def split(rows):
            qrels = {f"{name}-q{i}": {f"{name}-d{i}": 1} for i in rows}
            return types.SimpleNamespace(ids=list(qrels), embeddings=queries[rows], qrels=qrels)

        return types.SimpleNamespace(
            name=name, doc_embeddings=docs, doc_ids=[f"{name}-d{i}" for i in range(40)],
            train=split(list(range(6))), dev=split(list(range(6, 9))), test=split(list(range(9, 12))),
        )  # fmt: skip

    offset = np.full(6, 0.8, dtype=np.float32)
    tasks = [task(n, offset) for n in ("a", "b", "c")]
    shifted = ceiling.shared_query_shift(tasks)
    assert set(shifted) == {"a", "b", "c"}
    # the shared offset is learnable from the other tasks: a positive step, and every held-out task gains
    for t in tasks:
        assert shifted[t.name]["alpha"] > 0
        assert shifted[t.name]["ndcg@10"] > ceiling._shifted_ndcg(t, "test", np.zeros(6, dtype=np.float32))
