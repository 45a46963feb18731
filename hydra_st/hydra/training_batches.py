"""What one Hydra training step sees: a task's inputs as tensors, the epoch's batches, and a scored batch.

:class:`~hydra_st.hydra.trainer.HydraTrainer` owns the loop, model selection and checkpoints; this module turns
cached embeddings and preferences into the :class:`~hydra_st.hydra.losses.ScoreBatch` the loss reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .generator import apply_head
from .losses import ScoreBatch
from .preferences import Preferences
from .training_config import TrainingConfig


class HeadFn(nn.Module):
    """The trainable part as one module (so DDP can wrap it): card features → head → projected embeddings."""

    def __init__(self, head: Any) -> None:  # a HydraHead (not imported: the trainer only needs its parts)
        super().__init__()
        self.card_encoder = head.card_encoder
        self.generator = head.generator
        self.layer_norm = head.layer_norm

    def forward(
        self, card_features: torch.Tensor, view_mask: torch.Tensor, queries: torch.Tensor, *docs: torch.Tensor
    ) -> list[torch.Tensor]:
        params = self.generator(self.card_encoder.condition(card_features, view_mask))
        head = [apply_head(params, queries, layer_norm=self.layer_norm, is_query=True)]
        return head + [apply_head(params, d, layer_norm=self.layer_norm) for d in docs]


@dataclass
class TaskTensors:
    """One task's training inputs, as the trainer keeps them for the whole run."""

    name: str
    card_features: torch.Tensor
    doc_emb: torch.Tensor
    query_emb: torch.Tensor
    candidates: torch.Tensor
    teacher_scores: torch.Tensor
    pairs: torch.Tensor
    confidence: torch.Tensor


def task_tensors(task: Any, prefs: Preferences, head: Any) -> TaskTensors:
    """One task's training inputs as tensors: its card features, cached embeddings and preferences."""
    if list(prefs.query_ids) != list(task.train.ids):
        raise ValueError(f"{task.name}: preferences were built for other queries; rebuild them")
    dim = task.doc_embeddings.shape[1]
    if dim != head.in_dim:
        raise ValueError(f"{task.name}: {dim}-d embeddings but the head expects {head.in_dim}-d")
    feats = head.card_encoder.card_features(task.card.to_dict(), head.embed_texts)
    return TaskTensors(
        name=task.name,
        card_features=feats,
        doc_emb=torch.from_numpy(np.asarray(task.doc_embeddings, dtype=np.float32)),
        query_emb=torch.from_numpy(np.asarray(task.train.embeddings, dtype=np.float32)),
        candidates=torch.from_numpy(prefs.candidates),
        teacher_scores=torch.from_numpy(prefs.teacher_scores),
        pairs=torch.from_numpy(prefs.pairs),
        confidence=torch.from_numpy(prefs.confidence),
    )


def epoch_batches(tasks: list[TaskTensors], config: TrainingConfig, epoch: int) -> list[tuple[int, torch.Tensor]]:
    """One epoch's batches, ``(task index, query rows)``, shuffled across tasks; deterministic in seed and epoch."""
    gen = torch.Generator().manual_seed(config.seed * 1000 + epoch)
    batches: list[tuple[int, torch.Tensor]] = []
    for ti, t in enumerate(tasks):
        perm = torch.randperm(t.query_emb.shape[0], generator=gen)
        if config.max_queries_per_task:
            perm = perm[: config.max_queries_per_task]
        bs = config.batch_size
        batches.extend((ti, perm[i : i + bs]) for i in range(0, len(perm), bs) if len(perm[i : i + bs]) >= 2)
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in order]


def score_batch(
    fn: nn.Module, t: TaskTensors, rows: torch.Tensor, gen: torch.Generator, device: Any, view_dropout: float
) -> ScoreBatch:
    """Score a batch of ``t``'s training queries against their teacher candidates through the generated head.

    ``fn`` is the :class:`HeadFn`; each of the card's four views is dropped with probability ``view_dropout``.
    """
    cand = t.candidates[rows]
    mask = cand >= 0
    q = t.query_emb[rows].to(device)
    d = t.doc_emb[cand.clamp_min(0)].to(device)  # [B, K, in]
    pos = d[:, 0]
    keep = (torch.rand(4, generator=gen) >= view_dropout).float()
    qh, dh, ph = fn(t.card_features.to(device), keep.to(device), q, d, pos)
    scores = torch.einsum("bd,bkd->bk", qh, dh)
    base = torch.einsum("bd,bkd->bk", q, d)
    return ScoreBatch(
        scores=scores,
        mask=mask.to(device),
        teacher_scores=t.teacher_scores[rows].to(device),
        base_scores=base,
        pairs=t.pairs[rows].to(device),
        confidence=t.confidence[rows].to(device),
        query_emb=qh,
        positive_emb=ph,
    )
