"""MarginMSE + in-batch cross-entropy."""

from __future__ import annotations

import pytest
import torch

from hydra_st.hypencoder import Hypencoder, QNetConverter
from hydra_st.hypencoder.losses import HypencoderLoss, hypencoder_loss, in_batch_cross_entropy, margin_mse_loss


def test_margin_mse_is_zero_for_equal_margins():
    student = torch.tensor([[3.0, 1.0, 0.0]])
    teacher = student + 10.0  # same margins, other offset
    assert margin_mse_loss(student, teacher).item() == pytest.approx(0.0)
    assert margin_mse_loss(student, torch.tensor([[1.0, 1.0, 1.0]])).item() == pytest.approx((2**2 + 3**2) / 2)
    with pytest.raises(ValueError, match="1\\+n"):
        margin_mse_loss(student, teacher[:, :2])


def test_in_batch_ce_prefers_diagonal():
    conv = QNetConverter([4, 1])
    docs = torch.eye(4)
    good = (10 * torch.eye(4)).reshape(4, 4)  # q-net i = 10 * e_i
    bad = torch.flip(good, dims=[0])
    assert in_batch_cross_entropy(conv, good, docs) < in_batch_cross_entropy(conv, bad, docs)


def test_combined_loss_backpropagates():
    conv = QNetConverter([4, 4, 1])
    params = torch.randn(3, conv.num_parameters, requires_grad=True)
    loss, parts = hypencoder_loss(conv, params, torch.randn(3, 5, 4), torch.randn(3, 5))
    loss.backward()
    assert set(parts) == {"margin_mse", "in_batch_ce"} and params.grad.abs().sum() > 0
    _, parts = hypencoder_loss(conv, params, torch.randn(3, 5, 4), torch.randn(3, 5), in_batch_weight=0)
    assert set(parts) == {"margin_mse"}


def test_sentence_transformers_loss_signature(tiny_st_model):
    model = Hypencoder.from_base(tiny_st_model, converter=QNetConverter([32, 8, 1], linear_skip=True))
    loss_fn = HypencoderLoss(model)
    cols = [["q one", "q two"], ["pos one", "pos two"], ["neg a", "neg b"], ["neg c", "neg d"]]
    feats = [model.preprocess(c) for c in cols]
    margins = torch.tensor([[0.5, 0.7], [0.2, 0.1]])
    loss = loss_fn(feats, margins)
    loss.backward()
    grads = [p.grad for p in model.hyper_head.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and grads
