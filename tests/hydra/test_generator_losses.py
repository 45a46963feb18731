from __future__ import annotations

import pytest
import torch

from hydra_st.hydra import HydraHead, ProjectionHeadGenerator, TaskCardEncoder
from hydra_st.hydra.generator import apply_head
from hydra_st.hydra.losses import (
    HydraLoss,
    ScoreBatch,
    anchor_mse,
    in_batch_infonce,
    listwise_kl,
    margin_mse,
    pairwise_logsigmoid,
)


def test_default_sizes_match_the_spec():
    gen = ProjectionHeadGenerator()
    assert gen.generated_parameter_count() == 384 * 256 + 3 * 256 == 99_072
    enc = TaskCardEncoder()
    # the figures the generator's docstring states; its defaults are HydraHead's and Hydra.from_base's (rank 4)
    assert gen.rank == HydraHead().rank == 4
    assert sum(p.numel() for p in gen.parameters()) == 314_880
    assert sum(p.numel() for p in ProjectionHeadGenerator(rank=6).parameters()) == 398_080
    assert sum(p.numel() for p in enc.parameters()) == 204_992


def test_fresh_generator_is_card_independent_and_pca_init_is_orthonormal():
    gen = ProjectionHeadGenerator(in_dim=16, out_dim=8, cond_dim=4, rank=2)
    a, b = gen(torch.randn(4)), gen(torch.randn(4))
    assert torch.equal(a["weight"], b["weight"]) and torch.equal(a["shift"], b["shift"])
    x = torch.randn(200, 16) * torch.linspace(3, 0.1, 16)
    gen.init_base_from_embeddings(x)
    w = gen.base_weight
    assert torch.allclose(w.T @ w, torch.eye(8), atol=1e-4)
    out = apply_head(gen(torch.zeros(4)), x)
    assert out.shape == (200, 8)
    assert torch.allclose(out.norm(dim=-1), torch.ones(200), atol=1e-5)


def test_generator_rejects_bad_inputs():
    with pytest.raises(ValueError, match="positive int"):
        ProjectionHeadGenerator(in_dim=0)
    with pytest.raises(ValueError, match="must not exceed"):
        ProjectionHeadGenerator(in_dim=8, out_dim=16)
    gen = ProjectionHeadGenerator(in_dim=8, out_dim=4, cond_dim=3)
    with pytest.raises(ValueError, match="shape"):
        gen(torch.zeros(5))
    with pytest.raises(ValueError, match="expected embeddings"):
        gen.init_base_from_embeddings(torch.zeros(10, 9))


def test_card_encoder_caches_features_and_checks_dims():
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return torch.ones(len(texts), 6)

    enc = TaskCardEncoder(embed_dim=6, cond_dim=3, hidden_dim=5)
    card = {"name": "t", "description": "d", "example_queries": ["q1", "q2"]}
    c1, c2 = enc(card, embed), enc(card, embed)
    assert torch.equal(c1, c2) and len(calls) == 1
    assert enc.card_features(card, embed)[-6:].abs().sum() == 0  # no example documents: zero view
    with pytest.raises(ValueError, match="embedding dimension"):
        TaskCardEncoder(embed_dim=7).card_features(card, embed)
    with pytest.raises(ValueError, match="card features"):
        enc.condition(torch.zeros(5))


def _batch(scores, teacher=None, base=None, pairs=((0, 1),), conf=(1.0,)):
    s = torch.tensor([scores], requires_grad=True)
    k = s.shape[1]
    return ScoreBatch(
        scores=s,
        mask=torch.ones(1, k, dtype=torch.bool),
        teacher_scores=torch.tensor([teacher or [1.0 / (60 + i) for i in range(k)]]),
        base_scores=torch.tensor([base or scores]),
        pairs=torch.tensor([list(pairs)]),
        confidence=torch.tensor([list(conf)]),
        query_emb=torch.nn.functional.normalize(torch.eye(2, 4)[:1].repeat(2, 1) + torch.eye(2, 4), dim=-1),
        positive_emb=torch.nn.functional.normalize(torch.eye(2, 4), dim=-1),
    )


def test_pairwise_prefers_correct_order_and_respects_confidence():
    good, bad = _batch([0.9, 0.1]), _batch([0.1, 0.9])
    assert pairwise_logsigmoid(good) < pairwise_logsigmoid(bad)
    zero_conf = _batch([0.1, 0.9, 0.5], pairs=((0, 1), (0, 2)), conf=(0.0, 1.0))
    one_pair = _batch([0.1, 0.9, 0.5], pairs=((0, 2),), conf=(1.0,))
    assert torch.isclose(pairwise_logsigmoid(zero_conf), pairwise_logsigmoid(one_pair))


def test_other_losses_have_expected_minima():
    assert anchor_mse(_batch([0.3, 0.2])) == 0
    assert anchor_mse(_batch([0.3, 0.2], base=[0.3, 0.4])) > 0
    assert listwise_kl(_batch([0.9, 0.1])) < listwise_kl(_batch([0.1, 0.9]))
    assert margin_mse(_batch([0.3, 0.2])) < margin_mse(_batch([0.2, 0.9]))
    assert in_batch_infonce(_batch([0.3, 0.2])) > 0


def test_hydra_loss_combines_and_validates():
    batch = _batch([0.9, 0.1])
    total, parts = HydraLoss({"pairwise": 1.0, "anchor": 2.0, "listwise": 0.0})(batch)
    assert set(parts) == {"pairwise", "anchor"}
    assert torch.isclose(total, torch.tensor(parts["pairwise"] + 2 * parts["anchor"]))
    total.backward()
    assert batch.scores.grad is not None
    with pytest.raises(ValueError, match="unknown loss"):
        HydraLoss({"cosine": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        HydraLoss({"pairwise": -1.0})
    with pytest.raises(ValueError, match="positive weight"):
        HydraLoss({"pairwise": 0.0})
