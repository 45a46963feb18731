"""Hydra's training losses on head-projected embeddings of a query batch and its teacher candidates.

All losses take a :class:`ScoreBatch`: student scores ``s[b, k] = cos(h(q_b), h(d_bk))`` over each query's
candidates, the teacher's fused scores, the base model's own cosine scores, the sampled pairs and their
confidences, and the head-projected query/positive embeddings for in-batch contrastive learning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_NAMES = ("pairwise", "infonce", "margin_mse", "listwise", "anchor")


@dataclass
class ScoreBatch:
    """Inputs shared by the losses.

    Attributes:
        scores: Student cosine scores ``[B, K]``.
        mask: Valid candidates ``[B, K]`` (bool).
        teacher_scores: Teacher (RRF) scores ``[B, K]``.
        base_scores: Frozen base model's cosine scores ``[B, K]``.
        pairs: Candidate positions ``[B, P, 2]`` (preferred, other).
        confidence: Pair weights ``[B, P]``.
        query_emb: Head-projected queries ``[B, D]``.
        positive_emb: Head-projected teacher top-1 documents ``[B, D]``.
    """

    scores: torch.Tensor
    mask: torch.Tensor
    teacher_scores: torch.Tensor
    base_scores: torch.Tensor
    pairs: torch.Tensor
    confidence: torch.Tensor
    query_emb: torch.Tensor
    positive_emb: torch.Tensor


def _pair_scores(scores: torch.Tensor, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return scores.gather(1, pairs[..., 0]), scores.gather(1, pairs[..., 1])


def pairwise_logsigmoid(batch: ScoreBatch, scale: float = 20.0) -> torch.Tensor:
    """Confidence-weighted ``-log σ(scale · (s_i − s_j))`` over the sampled pairs.

    Example:
        >>> s = torch.tensor([[0.9, 0.1]]); m = torch.ones(1, 2, dtype=torch.bool)
        >>> b = ScoreBatch(s, m, s, s, torch.tensor([[[0, 1]]]), torch.ones(1, 1), torch.ones(1, 2), torch.ones(1, 2))
        >>> round(float(pairwise_logsigmoid(b)), 4)
        0.0
    """
    si, sj = _pair_scores(batch.scores, batch.pairs)
    w = batch.confidence
    loss = -F.logsigmoid(scale * (si - sj))
    return (loss * w).sum() / w.sum().clamp_min(1e-8)


def in_batch_infonce(batch: ScoreBatch, scale: float = 20.0) -> torch.Tensor:
    """InfoNCE with each query's teacher top-1 as positive and the other queries' positives as negatives."""
    logits = scale * batch.query_emb @ batch.positive_emb.T
    target = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, target)


def margin_mse(batch: ScoreBatch, margin_scale: float = 0.1) -> torch.Tensor:
    """MSE between student margins ``s_i − s_j`` and teacher margins, rescaled to cosine units.

    Teacher (RRF) margins are divided by the largest possible RRF margin in the candidate list of that query,
    then multiplied by ``margin_scale``.
    """
    si, sj = _pair_scores(batch.scores, batch.pairs)
    ti, tj = _pair_scores(batch.teacher_scores, batch.pairs)
    span = batch.teacher_scores.max(1, keepdim=True).values - _masked_min(batch.teacher_scores, batch.mask)
    target = margin_scale * (ti - tj) / span.clamp_min(1e-8)
    w = (batch.confidence > 0).float()
    return (((si - sj) - target) ** 2 * w).sum() / w.sum().clamp_min(1.0)


def listwise_kl(
    batch: ScoreBatch, student_temperature: float = 0.05, teacher_temperature: float = 0.003
) -> torch.Tensor:
    """KL(teacher ‖ student) between softmaxes over each query's candidates."""
    neg = torch.finfo(batch.scores.dtype).min
    t = (batch.teacher_scores / teacher_temperature).masked_fill(~batch.mask, neg)
    s = (batch.scores / student_temperature).masked_fill(~batch.mask, neg)
    p = F.softmax(t, dim=1)
    return (p * (torch.log(p.clamp_min(1e-12)) - F.log_softmax(s, dim=1))).masked_fill(~batch.mask, 0).sum(1).mean()


def anchor_mse(batch: ScoreBatch) -> torch.Tensor:
    """Keep the student's candidate scores near the base model's (MSE over valid candidates)."""
    m = batch.mask.float()
    return (((batch.scores - batch.base_scores) ** 2) * m).sum() / m.sum().clamp_min(1.0)


def _masked_min(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x.masked_fill(~mask, float("inf")).min(1, keepdim=True).values


_FUNCTIONS = {
    "pairwise": pairwise_logsigmoid,
    "infonce": in_batch_infonce,
    "margin_mse": margin_mse,
    "listwise": listwise_kl,
    "anchor": anchor_mse,
}


class HydraLoss(torch.nn.Module):
    """A weighted sum of Hydra's losses.

    Args:
        weights: ``{loss name: weight}`` over ``pairwise``, ``infonce``, ``margin_mse``, ``listwise``, ``anchor``.
            Zero-weight terms are skipped.

    Example:
        >>> loss = HydraLoss({"pairwise": 1.0, "anchor": 5.0})
        >>> sorted(loss.weights)
        ['anchor', 'pairwise']
    """

    def __init__(self, weights: dict[str, float] | None = None) -> None:
        super().__init__()
        weights = dict(weights if weights is not None else {"pairwise": 1.0})
        unknown = sorted(set(weights) - set(LOSS_NAMES))
        if unknown:
            raise ValueError(f"unknown loss name(s) {unknown}; choose from {list(LOSS_NAMES)}")
        bad = {k: v for k, v in weights.items() if not isinstance(v, int | float) or v < 0}
        if bad:
            raise ValueError(f"loss weights must be non-negative numbers, got {bad}")
        self.weights = {k: float(v) for k, v in weights.items() if v > 0}
        if not self.weights:
            raise ValueError("at least one loss needs a positive weight")

    def forward(self, batch: ScoreBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the total loss and each term's value."""
        total = batch.scores.new_zeros(())
        parts: dict[str, float] = {}
        for name, w in self.weights.items():
            value = _FUNCTIONS[name](batch)
            parts[name] = float(value.detach())
            total = total + w * value
        return total, parts
