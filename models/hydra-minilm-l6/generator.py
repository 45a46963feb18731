"""ProjectionHeadGenerator: conditioning vector → the parameters of a task-specific projection head.

This file is part of Hydra's self-contained remote code (it is copied next to ``hydra_head.py`` in a saved
model), so it imports only torch and the standard library.
"""

from __future__ import annotations

import math

import torch
from torch import nn

HeadParams = dict[str, torch.Tensor]


class ProjectionHeadGenerator(nn.Module):
    """Generate ``W`` (``in_dim × out_dim``), ``b``, and LayerNorm ``scale``/``shift`` from a conditioning vector.

    ``W = W0 + A(c) @ B(c)`` with a shared, learned base ``W0`` (initialised from an orthonormal basis, e.g. the
    principal directions of the training corpora's embeddings, so that an untrained hypernet already gives a
    sensible head) plus a card-dependent rank-``rank`` update; ``b``, ``scale`` and ``shift`` are affine in the
    conditioning vector around ``b0``, 1 and 0. With the default sizes (384→256, rank 6, conditioning dim 64)
    each head has 99,072 generated parameters and this module about 310K trainable ones.

    Args:
        in_dim: Base embedding dimension.
        out_dim: Head output dimension.
        cond_dim: Conditioning vector dimension.
        rank: Rank of the card-dependent update of ``W``.

    Example:
        >>> gen = ProjectionHeadGenerator(in_dim=8, out_dim=4, cond_dim=3, rank=2)
        >>> params = gen(torch.zeros(3))
        >>> tuple(params["weight"].shape), gen.generated_parameter_count()
        ((8, 4), 44)
    """

    def __init__(self, in_dim: int = 384, out_dim: int = 256, cond_dim: int = 64, rank: int = 6) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("cond_dim", cond_dim), ("rank", rank)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ProjectionHeadGenerator: {name} must be a positive int, got {value!r}")
        if out_dim > in_dim:
            raise ValueError(f"out_dim ({out_dim}) must not exceed in_dim ({in_dim}) for an orthonormal init")
        self.in_dim, self.out_dim, self.cond_dim, self.rank = in_dim, out_dim, cond_dim, rank
        basis = torch.eye(in_dim)[:, :out_dim].clone()
        self.base_weight = nn.Parameter(basis)  # W0, [in, out]
        self.base_bias = nn.Parameter(torch.zeros(out_dim))
        self.to_a = nn.Linear(cond_dim, in_dim * rank)
        self.to_b = nn.Linear(cond_dim, rank * out_dim)
        self.to_affine = nn.Linear(cond_dim, 3 * out_dim)  # b, scale, shift
        nn.init.normal_(self.to_a.weight, std=1.0 / math.sqrt(cond_dim * in_dim))
        nn.init.zeros_(self.to_a.bias)
        nn.init.zeros_(self.to_b.weight)  # ΔW = 0 at start; gradients still reach to_b
        nn.init.zeros_(self.to_b.bias)
        nn.init.zeros_(self.to_affine.weight)
        nn.init.zeros_(self.to_affine.bias)

    def generated_parameter_count(self) -> int:
        """Number of parameters of one generated head (W, b, scale, shift)."""
        return self.in_dim * self.out_dim + 3 * self.out_dim

    @torch.no_grad()
    def init_base_from_embeddings(self, embeddings: torch.Tensor, center: bool = True) -> None:
        """Set ``W0`` to the top ``out_dim`` principal directions of ``embeddings`` ([n, in_dim]).

        With ``center`` the base bias becomes ``-mean @ W0``, so the untrained head is centred PCA.
        """
        if embeddings.ndim != 2 or embeddings.shape[1] != self.in_dim:
            raise ValueError(f"expected embeddings of shape [n, {self.in_dim}], got {tuple(embeddings.shape)}")
        x = embeddings.float()
        mean = x.mean(0)
        xc = x - mean if center else x
        cov = xc.T @ xc / max(1, x.shape[0] - 1)
        _, vecs = torch.linalg.eigh(cov)
        basis = vecs[:, -self.out_dim :].flip(1).contiguous()
        self.base_weight.copy_(basis.to(self.base_weight.dtype))
        self.base_bias.copy_((-(mean @ basis) if center else torch.zeros(self.out_dim)).to(self.base_bias.dtype))

    def forward(self, cond: torch.Tensor) -> HeadParams:
        """Return the head parameters for one conditioning vector ``cond`` of shape ``[cond_dim]``."""
        if cond.shape != (self.cond_dim,):
            raise ValueError(f"conditioning vector must have shape ({self.cond_dim},), got {tuple(cond.shape)}")
        a = self.to_a(cond).view(self.in_dim, self.rank)
        b = self.to_b(cond).view(self.rank, self.out_dim)
        bias, scale, shift = self.to_affine(cond).view(3, self.out_dim)
        return {
            "weight": self.base_weight + a @ b,
            "bias": self.base_bias + bias,
            "scale": 1.0 + scale,
            "shift": shift,
        }


def apply_head(params: HeadParams, x: torch.Tensor, layer_norm: bool = True, eps: float = 1e-5) -> torch.Tensor:
    """Apply a generated head to embeddings ``x`` ([..., in_dim]) and L2-normalise the result."""
    h = x @ params["weight"] + params["bias"]
    if layer_norm:
        h = nn.functional.layer_norm(h, (h.shape[-1],), eps=eps) * params["scale"] + params["shift"]
    return nn.functional.normalize(h, dim=-1)
