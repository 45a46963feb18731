"""Initialisation of the Hypencoder's hyper-head (:class:`~hydra_st.hypencoder.modules.HyperHead`).

Apart from :mod:`hydra_st.hypencoder.modules`, whose classes saved models name by import path, to keep that file
short. The draw order is part of every seeded model: changing it changes every model initialised with a seed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # the module imports this file; its class is only needed for the annotation
    from hydra_st.hypencoder.modules import HyperHead


@torch.no_grad()
def initialise_hyper_head(head: HyperHead, seed: int) -> None:
    """Initialise every parameter of ``head`` from a local generator seeded with ``seed`` (never the global RNG).

    Query vectors ~ N(0, 10²); base matrices He-normal and base vectors zero; key, value and bias projections
    uniform in ±1/sqrt(fan_in) (torch's Linear default; zero biases on the weights' key/value projections);
    weight projections ~ N(0, 1/in⁴) with zero bias. With a pooled skip, the q-net's output layer and the learned
    skip correction start at zero, so the untrained head scores exactly as the frozen base model.
    """
    gen = torch.Generator().manual_seed(seed)
    n_w = len(head.converter.weight_shapes)
    for p in head.weight_query_embeddings:
        p.copy_(torch.randn(p.shape, generator=gen) * 10.0)
    for p in head.bias_query_embeddings:
        p.copy_(torch.randn(p.shape, generator=gen) * 10.0)
    for p in head.hyper_base_matrices:
        p.copy_(torch.randn(p.shape, generator=gen) * math.sqrt(2.0 / p.shape[-1]))
    for p in head.hyper_base_vectors:
        p.zero_()
    for idx, (k, v) in enumerate(zip(head.key_projections, head.value_projections, strict=False)):
        for lin in (k, v):
            _uniform_fan_in(lin, gen, bias=idx >= n_w)
    for lin in _linears(head.weight_hyper_projection):
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) / (lin.in_features**2))
        lin.bias.zero_()
    for lin in _linears(head.bias_hyper_projection):
        _uniform_fan_in(lin, gen, bias=True)
    if head.converter.linear_skip and head.skip_from_pooling:
        # The skip term carries the base model's score; a zero output layer makes the untrained q-net add 0.
        head.hyper_base_matrices[-1].zero_()
        _linears(head.weight_hyper_projection)[-1].weight.zero_()
    if head.learned_skip:
        # After the q-net's own parameters, so models without a learned skip keep their initialisation.
        head.skip_query_embedding.copy_(torch.randn(head.skip_query_embedding.shape, generator=gen) * 10.0)
        for lin in (head.skip_key_projection, head.skip_value_projection):
            _uniform_fan_in(lin, gen, bias=False)
        head.skip_hyper_projection.weight.zero_()  # the correction starts at 0: the skip is the base embedding
        head.skip_hyper_projection.bias.zero_()
        head.skip_base_vector.zero_()


def _linears(modules: nn.ModuleList) -> list[nn.Linear]:
    return [m for m in modules if isinstance(m, nn.Linear)]


def _uniform_fan_in(lin: nn.Module, gen: torch.Generator, bias: bool) -> None:
    """torch's default Linear initialisation (uniform, bound 1/sqrt(fan_in)) from a local generator; bias 0 unless
    ``bias``."""
    if not isinstance(lin, nn.Linear):
        raise TypeError(f"expected an nn.Linear to initialise, got {type(lin).__name__}")
    bound = 1.0 / math.sqrt(lin.in_features)
    lin.weight.copy_((torch.rand(lin.weight.shape, generator=gen) * 2 - 1) * bound)
    if bias:
        lin.bias.copy_((torch.rand(lin.bias.shape, generator=gen) * 2 - 1) * bound)
    else:
        lin.bias.zero_()
