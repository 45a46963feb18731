"""Hypencoder training losses: MarginMSE against teacher margins plus in-batch cross-entropy.

Both terms have weight 1 in the published recipe. The in-batch term scores every query's q-net on the *positives*
of all queries in the batch (``B x B`` logits, target the diagonal, no temperature); hard negatives stay out of it
because they may be unlabelled positives.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hydra_st.hypencoder.qnet import QNetConverter


def margin_mse_loss(student_scores: Tensor, teacher_scores: Tensor) -> Tensor:
    """MSE between student and teacher margins ``s(q, pos) - s(q, neg_i)``.

    Args:
        student_scores: ``[B, 1 + n]`` scores, positive first.
        teacher_scores: ``[B, 1 + n]`` teacher scores in the same order.
    """
    if student_scores.shape != teacher_scores.shape or student_scores.shape[-1] < 2:
        raise ValueError(
            f"need [B, 1+n] student and teacher scores of one shape, got {tuple(student_scores.shape)} "
            f"and {tuple(teacher_scores.shape)}"
        )
    s = student_scores[:, :1] - student_scores[:, 1:]
    t = teacher_scores[:, :1] - teacher_scores[:, 1:]
    return F.mse_loss(s, t.to(s.dtype))


def in_batch_cross_entropy(converter: QNetConverter, qnet_params: Tensor, positives: Tensor) -> Tensor:
    """Cross-entropy of each q-net over the positives of the whole batch (diagonal targets)."""
    logits = converter.score(qnet_params, positives)
    target = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, target)


def hypencoder_loss(
    converter: QNetConverter,
    qnet_params: Tensor,
    docs: Tensor,
    teacher_scores: Tensor,
    margin_weight: float = 1.0,
    in_batch_weight: float = 1.0,
) -> tuple[Tensor, dict[str, float]]:
    """Combined loss on ``[B, P]`` q-nets and ``[B, 1 + n, d]`` documents (positive first).

    Returns:
        The loss and a dict with its two parts (floats, for logging).
    """
    scores = converter.score(qnet_params, docs)
    mse = margin_mse_loss(scores, teacher_scores)
    loss = margin_weight * mse
    parts = {"margin_mse": float(mse.detach())}
    if in_batch_weight:
        ce = in_batch_cross_entropy(converter, qnet_params, docs[:, 0])
        loss = loss + in_batch_weight * ce
        parts["in_batch_ce"] = float(ce.detach())
    return loss, parts


class HypencoderLoss(nn.Module):
    """The same loss with the sentence-transformers loss signature, for ``SentenceTransformerTrainer``.

    Columns: ``(query, positive, negative_1, ..., negative_n)``; labels: ``[B, 1 + n]`` teacher scores or
    ``[B, n]`` teacher margins ``pos - neg_i``.

    Args:
        model: a :class:`~hydra_st.hypencoder.Hypencoder`.
        margin_weight: weight of the MarginMSE term.
        in_batch_weight: weight of the in-batch cross-entropy term.

    Example:
        >>> import torch
        >>> from hydra_st.hypencoder import Hypencoder, HypencoderLoss, QNetConverter
        >>> model = Hypencoder.from_base("sentence-transformers/all-MiniLM-L6-v2",
        ...                              converter=QNetConverter([384, 384, 1], linear_skip=True))  # doctest: +SKIP
        >>> loss = HypencoderLoss(model)  # doctest: +SKIP
        >>> columns = [["a query"], ["its positive"], ["a negative"]]
        >>> features = [model.preprocess(texts) for texts in columns]  # doctest: +SKIP
        >>> margins = torch.tensor([[3.0]])  # labels: the teacher's margin pos - neg, one per negative
        >>> loss(features, labels=margins).shape  # doctest: +SKIP
        torch.Size([])
    """

    def __init__(self, model: Any, margin_weight: float = 1.0, in_batch_weight: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.margin_weight = margin_weight
        self.in_batch_weight = in_batch_weight

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        """The loss of one batch.

        Args:
            sentence_features: tokenized columns ``(query, positive, negative_1, ..., negative_n)``.
            labels: ``[B, 1 + n]`` teacher scores (positive first) or ``[B, n]`` teacher margins ``pos - neg_i``.

        Returns:
            The scalar loss.
        """
        features = list(sentence_features)
        query = self.model({**features[0], "task": "query"})["sentence_embedding"]
        docs = torch.stack([self.model({**f, "task": "document"})["sentence_embedding"] for f in features[1:]], dim=1)
        if labels.dim() == 2 and labels.shape[1] == docs.shape[1] - 1:
            labels = torch.cat([torch.zeros_like(labels[:, :1]), -labels], dim=1)
        loss, _ = hypencoder_loss(self.model.converter, query, docs, labels, self.margin_weight, self.in_batch_weight)
        return loss

    @property
    def citation(self) -> str:
        """The Hypencoder paper (shown in sentence-transformers' model cards)."""
        return "Killingback et al., Hypencoder: Hypernetworks for Information Retrieval (SIGIR 2025)."
