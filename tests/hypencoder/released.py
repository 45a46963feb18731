"""A random state dict with the names and shapes of a released Hypencoder checkpoint (test fixture)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from hydra_st.hypencoder.convert import PREFIX, TRANSFORMER_PREFIX


def synthetic_released_state_dict(
    num_layers: int, hidden: int = 768, bert_state: Mapping[str, Tensor] | None = None, seed: int = 0
) -> dict[str, Tensor]:
    """A random state dict with the released names and shapes (for tests and shape checks)."""
    gen = torch.Generator().manual_seed(seed)
    dims = [hidden] * (num_layers + 1) + [1]
    out: dict[str, Tensor] = {}
    shapes = [(dims[i - 1], dims[i]) for i in range(1, len(dims))]
    biases = [o for _, o in shapes[:-1]]
    for i, (inn, o) in enumerate(shapes):
        out[f"{PREFIX}hyper_base_matrices.{i}"] = torch.randn(1, o, inn, generator=gen) * (2 / inn) ** 0.5
        out[f"{PREFIX}weight_query_embeddings.{i}"] = torch.randn(1, o, inn, generator=gen)
        out[f"{PREFIX}weight_hyper_projection.{i}.weight"] = torch.randn(inn, inn, generator=gen) * 0.05
        out[f"{PREFIX}weight_hyper_projection.{i}.bias"] = torch.randn(inn, generator=gen) * 0.05
    for j, o in enumerate(biases):
        out[f"{PREFIX}hyper_base_vectors.{j}"] = torch.randn(1, o, generator=gen) * 0.1
        out[f"{PREFIX}bias_query_embeddings.{j}"] = torch.randn(1, 1, o, generator=gen)
        out[f"{PREFIX}bias_hyper_projection.{j}.weight"] = torch.randn(o, o, generator=gen) * 0.05
        out[f"{PREFIX}bias_hyper_projection.{j}.bias"] = torch.randn(o, generator=gen) * 0.05
    for k, width in enumerate([i for i, _ in shapes] + biases):
        for name in ("key_projections", "value_projections"):
            out[f"{PREFIX}{name}.{k}.weight"] = torch.randn(width, hidden, generator=gen) / hidden**0.5
            out[f"{PREFIX}{name}.{k}.bias"] = torch.randn(width, generator=gen) * 0.05
    for key, value in (bert_state or {}).items():
        out[f"{TRANSFORMER_PREFIX}{key}"] = value
        out[f"passage_encoder.transformer.{key}"] = value  # the same tensor, as in the released .bin (tied BERT)
    return out
