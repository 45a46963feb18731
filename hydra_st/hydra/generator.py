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
    conditioning vector around ``b0``, 1 and 0. With the default sizes, which are also :class:`HydraHead`'s and
    ``Hydra.from_base``'s (384→256, rank 4, conditioning dim 64), each head has 99,072 generated parameters and this
    module 314,880 trainable ones (398,080 at rank 6); the card encoder adds 204,992.

    With ``gated=True`` (needs ``out_dim == in_dim``) the generator also writes a *gate* ``g(c) = σ(w·c + a)``
    that mixes the head's output with the base embedding, ``normalize((1 − g) x + g head(x))``: at ``g = 0`` the
    task gets exactly the base model. The gate is not trained with the head; :func:`calibrate_gate` fits it after
    training from the tasks' dev results, so a task whose dev queries show no gain falls back to the base model.

    With ``query_shift=True`` it also writes a *query shift* ``s(c)`` (``in_dim``), added to query embeddings only,
    ``normalize(x + s)``, before the head: the base model's queries and documents sit in different regions of its
    space, and moving queries toward the documents is a map a shared head cannot express. It is zero (no shift) until
    :func:`calibrate_query_shift` fits it after training. The gate mixes with the shifted query, so with a shift a
    closed gate gives the base model's documents and its shifted queries.

    Args:
        in_dim: Base embedding dimension.
        out_dim: Head output dimension.
        cond_dim: Conditioning vector dimension.
        rank: Rank of the card-dependent update of ``W``.
        gated: Also generate the fallback gate (opened wide until calibrated).
        query_shift: Also generate the query shift (zero until calibrated).

    Example:
        >>> gen = ProjectionHeadGenerator(in_dim=8, out_dim=4, cond_dim=3, rank=2)
        >>> params = gen(torch.zeros(3))
        >>> tuple(params["weight"].shape), gen.generated_parameter_count()
        ((8, 4), 44)
    """

    def __init__(
        self,
        in_dim: int = 384,
        out_dim: int = 256,
        cond_dim: int = 64,
        rank: int = 4,
        gated: bool = False,
        query_shift: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("cond_dim", cond_dim), ("rank", rank)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ProjectionHeadGenerator: {name} must be a positive int, got {value!r}")
        if out_dim > in_dim:
            raise ValueError(f"out_dim ({out_dim}) must not exceed in_dim ({in_dim}) for an orthonormal init")
        if gated and out_dim != in_dim:
            raise ValueError(
                f"a gated head mixes its output with the base embedding, so out_dim ({out_dim}) must equal in_dim "
                f"({in_dim}); use out_dim={in_dim} or gated=False"
            )
        self.in_dim, self.out_dim, self.cond_dim, self.rank, self.gated = in_dim, out_dim, cond_dim, rank, gated
        self.query_shift = query_shift
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
        if gated:
            self.to_gate = nn.Linear(cond_dim, 1)
            nn.init.zeros_(self.to_gate.weight)
            nn.init.constant_(self.to_gate.bias, GATE_OPEN_LOGIT)  # open (g ≈ 1) until calibrated
        if query_shift:  # built last, so a head without it draws the same initial weights as before
            self.to_query_shift = nn.Linear(cond_dim, in_dim)
            nn.init.zeros_(self.to_query_shift.weight)
            nn.init.zeros_(self.to_query_shift.bias)

    def generated_parameter_count(self) -> int:
        """Number of parameters of one generated head (W, b, scale, shift, and the gate when gated)."""
        return self.in_dim * self.out_dim + 3 * self.out_dim + int(self.gated) + self.in_dim * int(self.query_shift)

    def head_parameters(self) -> list[nn.Parameter]:
        """The parameters trained with the head (all but the gate and the query shift, calibrated afterwards)."""
        calibrated = {id(p) for p in self.calibrated_parameters()}
        return [p for p in self.parameters() if id(p) not in calibrated]

    def calibrated_parameters(self) -> list[nn.Parameter]:
        """The gate's and the query shift's parameters: fitted after training, never by the optimizer."""
        modules = [m for flag, m in ((self.gated, "to_gate"), (self.query_shift, "to_query_shift")) if flag]
        return [p for name in modules for p in getattr(self, name).parameters()]

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
        params = {
            "weight": self.base_weight + a @ b,
            "bias": self.base_bias + bias,
            "scale": 1.0 + scale,
            "shift": shift,
        }
        if self.gated:
            params["gate"] = torch.sigmoid(self.to_gate(cond))
        if self.query_shift:
            params["query_shift"] = self.to_query_shift(cond)
        return params


GATE_OPEN_LOGIT = 20.0
"""Gate logit of an uncalibrated head and of a task whose dev queries gained. σ(20) is exactly 1 in float32, so an
open gate gives exactly the trained head, the one its dev gain was measured on (at σ(10) = 0.99995 the residual
mix of the base still reordered near-duplicate documents whose scores differ only by rounding)."""


@torch.no_grad()
def calibrate_gate(
    generator: ProjectionHeadGenerator, conds: torch.Tensor, open_: torch.Tensor, ridge: float = 1e-3
) -> None:
    """Fit the gate so that task ``i`` (conditioning ``conds[i]``) gets ``g ≈ 1`` if ``open_[i]`` else ``g ≈ 0``.

    Ridge regression of the logits ``±GATE_OPEN_LOGIT`` on the centred conditioning vectors (closed form,
    deterministic; ``ridge`` is relative to the mean squared norm): with fewer tasks than conditioning dimensions it
    interpolates the training tasks, and a card at their mean gets the mean target logit.

    Example:
        >>> gen = ProjectionHeadGenerator(in_dim=4, out_dim=4, cond_dim=3, rank=1, gated=True)
        >>> conds = torch.eye(3)[:2]
        >>> calibrate_gate(gen, conds, torch.tensor([True, False]))
        >>> [round(float(gen(c)["gate"].detach()), 3) for c in conds]
        [1.0, 0.0]
    """
    if not generator.gated:
        raise ValueError("this head has no gate (built with gated=False)")
    if conds.ndim != 2 or conds.shape != (len(open_), generator.cond_dim):
        raise ValueError(f"need conditioning vectors [n_tasks, {generator.cond_dim}], got {tuple(conds.shape)}")
    target = torch.where(torch.as_tensor(open_, dtype=torch.bool), GATE_OPEN_LOGIT, -GATE_OPEN_LOGIT).double()
    _ridge_into(generator.to_gate, conds, target.view(-1, 1), ridge)


@torch.no_grad()
def calibrate_query_shift(
    generator: ProjectionHeadGenerator, conds: torch.Tensor, shifts: torch.Tensor, ridge: float = 1e-3
) -> None:
    """Fit the query shift so that task ``i`` (conditioning ``conds[i]``) gets ``shifts[i]`` (``[n_tasks, in_dim]``).

    The same closed-form ridge regression as :func:`calibrate_gate`: the training tasks get (close to) their own
    shift, and a card at their mean gets the mean shift, the part all tasks share.

    Example:
        >>> gen = ProjectionHeadGenerator(in_dim=4, out_dim=4, cond_dim=3, rank=1, query_shift=True)
        >>> conds, shifts = torch.eye(3)[:2], torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
        >>> calibrate_query_shift(gen, conds, shifts)
        >>> [round(v, 2) for v in gen(conds.mean(0))["query_shift"].tolist()]
        [0.5, 0.5, 0.0, 0.0]
    """
    if not generator.query_shift:
        raise ValueError("this head has no query shift (built with query_shift=False)")
    if conds.ndim != 2 or conds.shape[1] != generator.cond_dim or shifts.shape != (len(conds), generator.in_dim):
        raise ValueError(
            f"need conditioning vectors [n_tasks, {generator.cond_dim}] and shifts [n_tasks, {generator.in_dim}], "
            f"got {tuple(conds.shape)} and {tuple(shifts.shape)}"
        )
    _ridge_into(generator.to_query_shift, conds, shifts.double(), ridge)


def _ridge_into(layer: nn.Linear, conds: torch.Tensor, target: torch.Tensor, ridge: float) -> None:
    """Set ``layer`` (cond_dim → k) to the ridge regression of ``target`` ([n, k]) on the centred ``conds``."""
    mean = conds.double().mean(0)
    c = conds.double() - mean
    gram = c @ c.T
    scale = float(gram.diagonal().mean()) or 1.0
    centred = target - target.mean(0)
    coef = torch.linalg.solve(gram + ridge * scale * torch.eye(len(c), dtype=c.dtype), centred)  # [n, k]
    weight = (c.T @ coef).T  # [k, cond_dim]
    layer.weight.copy_(weight.to(layer.weight.dtype))
    layer.bias.copy_((target.mean(0) - weight @ mean).to(layer.bias.dtype))


def apply_head(
    params: HeadParams, x: torch.Tensor, layer_norm: bool = True, eps: float = 1e-5, is_query: bool = False
) -> torch.Tensor:
    """Apply a generated head to embeddings ``x`` ([..., in_dim]) and L2-normalise the result.

    ``is_query``: ``x`` holds query embeddings, which get the head's query shift first (when it has one).
    """
    if is_query and "query_shift" in params:
        x = nn.functional.normalize(x + params["query_shift"], dim=-1)
    h = x @ params["weight"] + params["bias"]
    if layer_norm:
        h = nn.functional.layer_norm(h, (h.shape[-1],), eps=eps) * params["scale"] + params["shift"]
    h = nn.functional.normalize(h, dim=-1)
    if "gate" in params:  # fall back towards the base embedding (exactly it at gate 0)
        g = params["gate"]
        h = nn.functional.normalize((1.0 - g) * nn.functional.normalize(x, dim=-1) + g * h, dim=-1)
    return h
