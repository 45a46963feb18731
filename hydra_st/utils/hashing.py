"""Content fingerprints used as cache keys (model weights, corpora)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any


def fingerprint_texts(ids: Iterable[str], texts: Iterable[str], digest_size: int = 12) -> str:
    """Hex digest of an ordered list of (id, text) pairs: changes when any id, text or the order changes.

    Example:
        >>> fingerprint_texts(["a"], ["x"]) == fingerprint_texts(["a"], ["x"])
        True
        >>> fingerprint_texts(["a"], ["x"]) == fingerprint_texts(["a"], ["y"])
        False
    """
    h = hashlib.blake2b(digest_size=digest_size)
    for doc_id, text in zip(ids, texts, strict=True):
        for part in (doc_id, text):
            data = part.encode("utf-8")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    return h.hexdigest()


def fingerprint_model(model: Any, digest_size: int = 12) -> str:
    """Hex digest of a torch module's parameters, buffers and relevant settings.

    Two models with the same weights and the same encode settings (max sequence length, module stack) get the
    same fingerprint, wherever they were loaded from. Hashing MiniLM's 90 MB of weights takes ~0.1 s. A module
    class that encodes exactly as another one names it in a ``fingerprint_name`` attribute (for example, the
    Hypencoder's reference to a frozen base transformer counts as that ``Transformer``).
    """
    import torch

    h = hashlib.blake2b(digest_size=digest_size)
    h.update(repr([getattr(m, "fingerprint_name", type(m).__name__) for m in model.children()]).encode())
    h.update(str(getattr(model, "max_seq_length", None)).encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        t = tensor.detach().to("cpu").contiguous()
        if t.dtype == torch.bfloat16:
            t = t.float()
        h.update(t.numpy().tobytes())
    return h.hexdigest()
