"""The query shift: a generated, calibrated move of query embeddings (only) toward the documents."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from hydra_st.hydra import Hydra, ProjectionHeadGenerator, TaskCard
from hydra_st.hydra.generator import apply_head, calibrate_query_shift
from hydra_st.hydra.pipeline import QUERY_SHIFT_STEPS, PipelineConfig, query_gap
from hydra_st.hydra.pipeline import calibrate_query_shift as calibrate_on_tasks
from tests.hydra.synthetic import make_task

TEXTS = ["cats purr when content", "stock markets fell sharply"]
CARD = TaskCard(name="t", description="A test task.", example_queries=["q"])


def test_an_uncalibrated_shift_changes_nothing_and_is_never_trained():
    gen = ProjectionHeadGenerator(in_dim=8, out_dim=8, cond_dim=3, rank=2, query_shift=True)
    plain = ProjectionHeadGenerator(in_dim=8, out_dim=8, cond_dim=3, rank=2)
    assert gen.generated_parameter_count() == plain.generated_parameter_count() + 8
    assert {id(p) for p in gen.to_query_shift.parameters()}.isdisjoint(id(p) for p in gen.head_parameters())
    x = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    params = gen(torch.randn(3))
    assert torch.allclose(apply_head(params, x, is_query=True), apply_head(params, x), atol=1e-6)


def test_the_shift_moves_queries_only():
    gen = ProjectionHeadGenerator(in_dim=4, out_dim=4, cond_dim=2, rank=1, query_shift=True)
    conds = torch.eye(2)
    calibrate_query_shift(gen, conds, torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 0]]))
    params = {k: v.detach() for k, v in gen(conds[0]).items()}
    assert torch.allclose(params["query_shift"], torch.tensor([1.0, 0, 0, 0]), atol=1e-3)  # a seen task's own shift
    x = torch.nn.functional.normalize(torch.tensor([[0.0, 1.0, 0, 0]]), dim=-1)
    expected = torch.nn.functional.normalize(torch.tensor([[1.0, 1.0, 0, 0]]), dim=-1)  # the head is the identity
    assert torch.allclose(apply_head(params, x, layer_norm=False, is_query=True), expected, atol=1e-3)
    assert torch.allclose(apply_head(params, x, layer_norm=False), x, atol=1e-6)
    with pytest.raises(ValueError, match="no query shift"):
        calibrate_query_shift(ProjectionHeadGenerator(4, 4, 2, 1), conds, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="shifts"):
        calibrate_query_shift(gen, conds, torch.zeros(3, 4))


def _shifted_model(tiny_st_model) -> Hydra:
    model = Hydra.from_base(tiny_st_model, out_dim=16, cond_dim=8, rank=2, hidden_dim=16, query_shift=True)
    with torch.no_grad():
        model.head.generator.to_query_shift.bias.copy_(torch.linspace(-0.5, 0.5, model.head.in_dim))
    model.head.clear_cache()
    return model


def test_encode_query_gets_the_shift_and_save_load_keeps_it(tiny_st_model, tmp_path):
    model = _shifted_model(tiny_st_model)
    queries = model.encode_query(TEXTS, task_card=CARD)
    documents = model.encode_document(TEXTS, task_card=CARD)
    assert not np.allclose(queries, documents, atol=1e-4)  # the same texts, as queries and as documents
    assert np.allclose(model.encode(TEXTS, task_card=CARD), documents, atol=1e-6)  # plain encode: documents
    model.save(str(tmp_path / "m"))
    assert np.allclose(Hydra(str(tmp_path / "m")).encode_query(TEXTS, task_card=CARD), queries, atol=1e-6)
    plain = SentenceTransformer(str(tmp_path / "m"), trust_remote_code=True)  # the self-contained module file
    assert np.allclose(plain.encode_query(TEXTS, task_card=CARD.to_dict()), queries, atol=1e-6)
    assert np.allclose(plain.encode_document(TEXTS, task_card=CARD.to_dict()), documents, atol=1e-6)


def test_calibration_picks_a_step_on_dev_and_gives_each_task_its_gap(tiny_st_model):
    model = Hydra.from_base(tiny_st_model, out_dim=16, cond_dim=8, rank=2, hidden_dim=16, query_shift=True)
    tasks = [make_task("alpha", 0)[0], make_task("beta", 1)[0]]
    result = calibrate_on_tasks(model, tasks)
    assert result["step"] in QUERY_SHIFT_STEPS and set(result["dev_by_step"]) == set(QUERY_SHIFT_STEPS)
    assert result["dev_by_step"][result["step"]] == max(result["dev_by_step"].values())
    with torch.no_grad():
        for task in tasks:
            shift = model.head.compile_card(task.card)["query_shift"].cpu().numpy()
            assert np.allclose(shift, result["step"] * query_gap(task), atol=1e-3)


def test_a_gated_shift_is_closed_on_the_task_whose_dev_it_lowers(tiny_st_model, monkeypatch):
    import hydra_st.hydra.evaluate as evaluate

    model = Hydra.from_base(tiny_st_model, out_dim=16, cond_dim=8, rank=2, hidden_dim=16, query_shift=True)
    tasks = [make_task("alpha", 0)[0], make_task("beta", 1)[0]]

    def fake_dev_scores(m, ts):  # alpha's dev rises with the shift's size, beta's falls
        with torch.no_grad():
            size = {t.name: float(m.head.compile_card(t.card)["query_shift"].norm()) for t in ts}
        return {"alpha": 0.5 + size["alpha"], "beta": 0.5 - 0.1 * size["beta"]}

    monkeypatch.setattr(evaluate, "dev_scores", fake_dev_scores)
    result = calibrate_on_tasks(model, tasks, gated=True)
    assert result["step"] == max(QUERY_SHIFT_STEPS)  # the mean still rises with the step
    assert result["shift_open"] == {"alpha": True, "beta": False}
    with torch.no_grad():
        alpha, beta = (model.head.compile_card(t.card)["query_shift"].cpu().numpy() for t in tasks)
    assert np.allclose(alpha, result["step"] * query_gap(tasks[0]), atol=1e-3)
    assert np.allclose(beta, 0.0, atol=1e-3)
    ungated = calibrate_on_tasks(model, tasks)  # the same dev curves without the gate: both tasks shifted
    assert ungated["shift_open"] == {"alpha": True, "beta": True}


def test_a_gated_shift_needs_the_unshifted_step_and_the_shift(tiny_st_model):
    model = Hydra.from_base(tiny_st_model, out_dim=16, cond_dim=8, rank=2, hidden_dim=16, query_shift=True)
    with pytest.raises(ValueError, match="must hold 0.0"):
        calibrate_on_tasks(model, [make_task("alpha", 0)[0]], steps=(0.5, 1.0), gated=True)
    with pytest.raises(ValueError, match="set query_shift=True"):
        PipelineConfig(query_shift_gated=True)


def test_quickstart_flags_reach_the_pipeline_config():
    from hydra_st.cli.hydra_commands import quickstart_config
    from hydra_st.cli.main import build_parser

    def config(*flags):
        return quickstart_config(build_parser().parse_args(["quickstart", *flags]), ("adi",))

    assert (config().query_shift, config().query_shift_gated, config().gated) == (False, False, True)
    assert (config("--query-shift").query_shift, config("--query-shift").query_shift_gated) == (True, False)
    gated = config("--query-shift-gated", "--seed", "3", "--epochs", "1")
    assert (gated.query_shift, gated.query_shift_gated) == (True, True)
    assert (gated.training.seed, gated.training.epochs) == (3, 1)
