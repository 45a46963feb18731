"""The fallback gate: a task whose dev queries show no gain gets exactly the base model."""

from __future__ import annotations

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
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "training_recipes" / "hydra" / "train.py"
    spec = importlib.util.spec_from_file_location("hydra_recipe_train", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.load_recipe(path.with_name("recipe.yaml"))
    assert config.gated and config.out_dim == 384 and config.training.init == "identity"
