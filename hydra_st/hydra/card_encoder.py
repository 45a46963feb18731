"""TaskCardEncoder: a frozen sentence-transformer's embeddings of a card's texts → a learned conditioning vector.

This file is part of Hydra's self-contained remote code (copied next to ``hydra_head.py`` in a saved model), so
it imports only torch and the standard library. The canonical card rendering lives here for that reason;
:class:`hydra_st.hydra.task_card.TaskCard` delegates to it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

CARD_VIEWS = ("card", "summary", "queries", "documents")


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def render_card(card: Mapping[str, Any]) -> str:
    """Render a card mapping to one text, deterministically."""
    lines = [f"Task: {card['name']}", f"Description: {_clean(card['description'])}"]
    for key, label in (("domain", "Domain"), ("query_type", "Queries"), ("relevance", "Relevant")):
        if card.get(key):
            lines.append(f"{label}: {_clean(card[key])}")
    lines.extend(f"Example query: {_clean(q)}" for q in card.get("example_queries") or ())
    lines.extend(f"Example document: {_clean(d)}" for d in card.get("example_documents") or ())
    return "\n".join(lines)


def card_view_texts(card: Mapping[str, Any]) -> dict[str, list[str]]:
    """The texts embedded per view: the whole card, its summary fields, its example queries, its example docs."""
    summary = " ".join(_clean(card.get(k) or "") for k in ("description", "domain", "query_type", "relevance"))
    return {
        "card": [render_card(card)],
        "summary": [summary.strip()],
        "queries": [_clean(q) for q in card.get("example_queries") or ()],
        "documents": [_clean(d) for d in card.get("example_documents") or ()],
    }


def card_fingerprint(card: Mapping[str, Any]) -> str:
    """Content hash of a card mapping (every field counts)."""
    payload = json.dumps({k: card.get(k) for k in sorted(card)}, sort_keys=True, ensure_ascii=False, default=list)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=12).hexdigest()


class TaskCardEncoder(nn.Module):
    """Turn a card into a conditioning vector: frozen view embeddings → learned MLP.

    Each of the four views (the rendered card, its summary, the mean of its example queries, the mean of its
    example documents; a missing view is zeros) is embedded by a frozen sentence-transformer given as
    ``embed_fn``; the concatenation goes through ``Linear → GELU → Linear → tanh``. View embeddings are cached by
    card content, so a card is embedded once.

    Args:
        embed_dim: Dimension of the frozen encoder's embeddings.
        cond_dim: Dimension of the conditioning vector.
        hidden_dim: Hidden size of the projection MLP.

    Example:
        >>> enc = TaskCardEncoder(embed_dim=4, cond_dim=2, hidden_dim=3)
        >>> card = {"name": "t", "description": "find things", "example_queries": ["a"]}
        >>> enc(card, embed_fn=lambda texts: torch.ones(len(texts), 4)).shape
        torch.Size([2])
    """

    def __init__(self, embed_dim: int = 384, cond_dim: int = 64, hidden_dim: int = 128) -> None:
        super().__init__()
        self.embed_dim, self.cond_dim, self.hidden_dim = embed_dim, cond_dim, hidden_dim
        self.project = nn.Sequential(
            nn.Linear(len(CARD_VIEWS) * embed_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, cond_dim)
        )
        self._feature_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def card_features(self, card: Mapping[str, Any], embed_fn: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
        """Frozen features of a card, ``[len(CARD_VIEWS) * embed_dim]``, cached by card content."""
        key = card_fingerprint(card)
        cached = self._feature_cache.get(key)
        if cached is not None:
            return cached
        views = card_view_texts(card)
        texts = [t for name in CARD_VIEWS for t in views[name]]
        emb = embed_fn(texts).detach().float().cpu()
        if emb.ndim != 2 or emb.shape != (len(texts), self.embed_dim):
            raise ValueError(
                f"the card encoder expects [n, {self.embed_dim}] embeddings from the base model, got "
                f"{tuple(emb.shape)}; the head's in_dim must equal the base model's embedding dimension"
            )
        parts, start = [], 0
        for name in CARD_VIEWS:
            n = len(views[name])
            parts.append(emb[start : start + n].mean(0) if n else torch.zeros(self.embed_dim))
            start += n
        features = torch.cat(parts)
        self._feature_cache[key] = features
        return features

    def condition(
        self, features: torch.Tensor, view_mask: Sequence[float] | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Map frozen card features (``[4 * embed_dim]`` or ``[n, 4 * embed_dim]``) to conditioning vectors."""
        if features.shape[-1] != len(CARD_VIEWS) * self.embed_dim:
            raise ValueError(
                f"card features must end in {len(CARD_VIEWS) * self.embed_dim}, got {tuple(features.shape)}"
            )
        if view_mask is not None:
            mask = torch.as_tensor(view_mask, dtype=features.dtype, device=features.device)
            features = features.view(*features.shape[:-1], len(CARD_VIEWS), self.embed_dim) * mask[..., None]
            features = features.flatten(-2)
        return torch.tanh(self.project(features))

    def forward(self, card: Mapping[str, Any], embed_fn: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
        """Conditioning vector ``[cond_dim]`` of ``card``."""
        weight = next(self.project.parameters())
        # the cached features are float32 on the CPU; the projection may have been moved (.to / .half())
        features = self.card_features(card, embed_fn).to(device=weight.device, dtype=weight.dtype)
        return self.condition(features)
