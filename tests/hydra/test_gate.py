"""The fallback gate: a task whose dev queries show no gain gets exactly the base model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from hydra_st.hydra import Hydra, ProjectionHeadGenerator, TaskCard
from hydra_st.hydra.evaluate import base_dev_scores, dev_gains
from hydra_st.hydra.generator import GATE_OPEN_LOGIT, apply_head, calibrate_gate
from hydra_st.hydra.trainer import HydraTrainer, TrainingConfig
from tests.hydra.synthetic import make_task

TEXTS = ["cats purr when content", "stock markets fell sharply"]


def test_gate_needs_a_square_head_and_adds_one_generated_parameter():
    with pytest.raises(ValueError, match="out_dim .* must equal in_dim"):
        ProjectionHeadGenerator(in_dim=8, out_dim=4, gated=True)
    gen = ProjectionHeadGenerator(in_dim=8, out_dim=8, cond_dim=3, rank=2, gated=True)
    assert gen.generated_parameter_count() == ProjectionHeadGenerator(8, 8, 3, 2).generated_parameter_count() + 1
    assert {id(p) for p in gen.to_gate.parameters()}.isdisjoint(id(p) for p in gen.head_parameters())
    with torch.no_grad():
        assert float(gen(torch.randn(3))["gate"]) == pytest.approx(1.0, abs=1e-4)  # open until calibrated


def test_closed_gate_is_the_base_embedding_and_open_gate_the_head():
    gen = ProjectionHeadGenerator(in_dim=8, out_dim=8, cond_dim=3, rank=2, gated=True)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in gen.head_parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    params = gen(torch.randn(3))
    head_only = apply_head({k: v for k, v in params.items() if k != "gate"}, x)
    assert float(params["gate"].detach()) == 1.0  # uncalibrated: open, exactly 1 in float32
    assert torch.allclose(apply_head(params, x), head_only, atol=1e-6)
    assert torch.allclose(apply_head({**params, "gate": torch.zeros(1)}, x), x, atol=1e-6)


def test_calibration_fits_every_task_and_gives_a_new_card_the_mean_logit():
    gen = ProjectionHeadGenerator(in_dim=4, out_dim=4, cond_dim=6, rank=1, gated=True)
    conds = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    open_ = torch.tensor([True, False, True, False, False])
    calibrate_gate(gen, conds, open_)
    gates = torch.stack([gen(c)["gate"][0] for c in conds])
    assert torch.all(gates[open_] == 1.0) and torch.all(gates[~open_] < 1e-6)  # open is exactly 1 in float32
    mean_logit = (2 - 3) * GATE_OPEN_LOGIT / 5
    assert float(gen(conds.mean(0))["gate"].detach()) == pytest.approx(
        float(torch.sigmoid(torch.tensor(mean_logit))), abs=1e-4
    )
    with pytest.raises(ValueError, match="no gate"):
        calibrate_gate(ProjectionHeadGenerator(4, 4, 6, 1), conds, open_)


def test_trainer_leaves_the_gate_alone_then_calibrates_it(tiny_st_model, tmp_path):
    model = Hydra.from_base(tiny_st_model, out_dim=32, cond_dim=8, rank=2, hidden_dim=16, gated=True)
    (a, pa), (b, pb) = make_task("alpha", 0), make_task("beta", 1)
    trainer = HydraTrainer(model, [a, b], {"alpha": pa, "beta": pb}, TrainingConfig(epochs=2, batch_size=8))
    gate_before = {k: v.clone() for k, v in model.head.generator.to_gate.state_dict().items()}
    trainer.config.show_progress_bar = False
    trainer.train()
    assert all(torch.equal(gate_before[k], v) for k, v in model.head.generator.to_gate.state_dict().items())
    gates = trainer.calibrate_gate({"alpha": 0.01, "beta": 0.0})  # beta did not gain on dev: closed
    assert gates["alpha"] == 1.0 and gates["beta"] < 1e-6
    assert trainer.summary()["gates"] == gates
    assert trainer.summary()["gated_dev_gains"] == {"alpha": 0.01, "beta": 0.0}
    # a closed task ranks exactly as the base model does (dev gain 0), an open one keeps its trained head
    assert dev_gains(model, [b], base_dev_scores([b]))["beta"] == pytest.approx(0.0, abs=1e-9)

    card = TaskCard(name="beta", description="Synthetic retrieval task beta.", example_queries=["beta query"])
    path = tmp_path / "gated"
    model.save(str(path))
    ref = model.encode_query(TEXTS, task_card=card)
    assert np.allclose(Hydra(str(path)).encode_query(TEXTS, task_card=card), ref, atol=1e-6)
    plain = SentenceTransformer(str(path), trust_remote_code=True)
    assert np.allclose(plain.encode_query(TEXTS, task_card=card.to_dict()), ref, atol=1e-6)


def test_shipped_recipe_parses_and_gates_a_square_head():
    from tests.conftest import REPO_ROOT, load_repo_script

    module = load_repo_script("training_recipes/hydra/train.py", "hydra_recipe_train")
    config = module.load_recipe(REPO_ROOT / "training_recipes" / "hydra" / "recipe.yaml")
    assert (
        config.gated
        and config.gate_rule == "confident"
        and config.out_dim == 384
        and config.training.init == "identity"
    )


def test_gain_lower_bound_is_the_one_sided_95_percent_bound():
    from hydra_st.hydra.evaluate import GATE_CONFIDENCE_Z, gain_lower_bound

    gains = np.array([0.02, 0.03, 0.01, 0.02, 0.04])
    expected = gains.mean() - GATE_CONFIDENCE_Z * gains.std(ddof=1) / np.sqrt(len(gains))
    assert gain_lower_bound(gains) == pytest.approx(expected) and expected > 0
    assert gain_lower_bound(np.array([0.3, -0.2, 0.0, -0.04])) < 0 < np.mean([0.3, -0.2, 0.0, -0.04])
    assert gain_lower_bound(np.array([0.5])) == -np.inf and gain_lower_bound(np.zeros(0)) == -np.inf
    assert gain_lower_bound(np.zeros(7)) == 0.0  # no gain at all: not above 0, so the gate stays closed


def test_per_query_dev_gains_average_to_the_dev_gain(tiny_st_model):
    from hydra_st.hydra.evaluate import dev_gain_lower_bounds, gain_lower_bound, per_query_dev_gains

    model = Hydra.from_base(tiny_st_model, out_dim=32, cond_dim=8, rank=2, hidden_dim=16, gated=True)
    with torch.no_grad():  # a head that differs from the base, so that the gains are not all 0
        for p in model.head.generator.head_parameters():
            p.add_(0.2 * torch.randn_like(p, generator=torch.Generator().manual_seed(0)))
    task, _ = make_task("alpha", 0)
    gains = per_query_dev_gains(model, task)
    assert gains.shape == (len(task.dev),) and np.any(gains != 0)
    assert gains.mean() == pytest.approx(dev_gains(model, [task], base_dev_scores([task]))["alpha"], abs=1e-9)
    assert dev_gain_lower_bounds(model, [task]) == {"alpha": pytest.approx(gain_lower_bound(gains))}
    one_query = replace(task, name="one", dev=replace(task.dev, ids=task.dev.ids[:1]))
    assert dev_gain_lower_bounds(model, [one_query]) == {}  # no bound from one query: its gate stays closed


def test_confident_rule_closes_a_gate_whose_positive_gain_is_noise(tiny_st_model):
    model = Hydra.from_base(tiny_st_model, out_dim=32, cond_dim=8, rank=2, hidden_dim=16, gated=True)
    (a, pa), (b, pb) = make_task("alpha", 0), make_task("beta", 1)
    trainer = HydraTrainer(model, [a, b], {"alpha": pa, "beta": pb}, TrainingConfig(epochs=1, batch_size=8))
    # both gained on dev, but only alpha's lower bound is above 0
    gates = trainer.calibrate_gate({"alpha": 0.02, "beta": 0.01}, lower_bounds={"alpha": 0.004, "beta": -0.003})
    assert gates["alpha"] == 1.0 and gates["beta"] < 1e-6
    summary = trainer.summary()
    assert summary["gated_dev_gains"] == {"alpha": 0.02, "beta": 0.01}
    assert summary["gated_dev_lower_bounds"] == {"alpha": 0.004, "beta": -0.003}
    trainer.calibrate_gate({"alpha": 0.02, "beta": 0.01})  # the "positive" rule opens both
    assert trainer.summary()["gated_dev_lower_bounds"] is None


def test_gate_rule_is_validated_and_reaches_the_config():
    from hydra_st.cli.hydra_commands import quickstart_config
    from hydra_st.cli.main import build_parser
    from hydra_st.hydra.evaluate import GATE_RULES
    from hydra_st.hydra.pipeline import PipelineConfig

    assert PipelineConfig().gate_rule == "confident"
    with pytest.raises(ValueError, match="gate_rule must be one of"):
        PipelineConfig(gate_rule="sometimes")

    def config(*flags):
        return quickstart_config(build_parser().parse_args(["quickstart", *flags]), ("adi",))

    assert config().gate_rule == "confident" and config("--gate-rule", "positive").gate_rule == "positive"
    with pytest.raises(SystemExit):
        config("--gate-rule", "sometimes")
    parser = build_parser()._subparsers._group_actions[0].choices["quickstart"]  # the flag offers every rule
    assert set(next(a.choices for a in parser._actions if a.dest == "gate_rule")) == set(GATE_RULES)


def test_saved_model_records_its_gates_and_their_evidence(tiny_st_model, tmp_path):
    import json

    from hydra_st.hydra.pipeline import PipelineConfig, save_trained_model

    model = Hydra.from_base(tiny_st_model, out_dim=32, cond_dim=8, rank=2, hidden_dim=16, gated=True)
    (a, pa), (b, pb) = make_task("alpha", 0), make_task("beta", 1)
    trainer = HydraTrainer(model, [a, b], {"alpha": pa, "beta": pb}, TrainingConfig(epochs=1, batch_size=8))
    trainer.calibrate_gate({"alpha": 0.02, "beta": 0.01}, lower_bounds={"alpha": 0.004, "beta": -0.003})
    config = PipelineConfig(tasks=("alpha", "beta"), loto=False)
    save_trained_model(model, tmp_path / "model", config, [a, b], trainer.summary())
    record = json.loads((tmp_path / "model" / "hydra_training.json").read_text(encoding="utf-8"))
    assert record["config"]["gate_rule"] == "confident"
    assert record["gates"]["alpha"] == 1.0 and record["gates"]["beta"] < 1e-6
    assert record["gated_dev_lower_bounds"] == {"alpha": 0.004, "beta": -0.003}
    assert record["gated_dev_gains"] == {"alpha": 0.02, "beta": 0.01}


def test_a_resume_may_change_the_gate_rule_but_not_the_head():
    from hydra_st.hydra.pipeline import PipelineConfig, resume_identity

    assert resume_identity(PipelineConfig(gate_rule="positive")) == resume_identity(PipelineConfig())
    assert resume_identity(PipelineConfig(rank=8)) != resume_identity(PipelineConfig())
