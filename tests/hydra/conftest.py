from __future__ import annotations

import pytest
import torch

from hydra_st.hydra import Hydra


@pytest.fixture
def tiny_hydra(tiny_st_model) -> Hydra:
    """A Hydra on the tiny base whose head depends on the card, as after training."""
    model = Hydra.from_base(tiny_st_model, out_dim=16, cond_dim=8, rank=2, hidden_dim=16)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model
