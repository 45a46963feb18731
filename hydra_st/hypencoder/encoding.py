"""Inference helpers of a Hypencoder: the modules of each route, and cached document vectors.

:func:`document_vectors` is what retrieval (``hydra-st retrieve``), evaluation and training use to get a corpus's
document vectors without re-encoding it on every run: with a frozen base they come from the DenseTeacher's
embedding cache, otherwise from a cache of the Hypencoder's own document route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from hydra_st.hypencoder.model import Hypencoder


def document_vectors(
    model: Hypencoder,
    doc_ids: list[str],
    doc_texts: list[str],
    cache_dir: str | None = None,
    show_progress_bar: bool = True,
    batch_size: int = 32,
) -> Tensor:
    """Document vectors ``[n_docs, d]`` of a Hypencoder, from an on-disk cache where one applies.

    With a mean-pooling + normalising document route on the base's transformer (a frozen base, the published
    configuration), the Hypencoder's document vectors equal the base sentence-transformer's, so the cache that the
    foundation's :class:`~hydra_st.teachers.DenseTeacher` keeps for the base is reused (checked on a few
    documents). Otherwise the Hypencoder's own document route is encoded once and cached under its own model
    fingerprint, or, when it does not normalise its vectors (the DenseTeacher cache holds normalised vectors),
    encoded without a cache.

    Args:
        model: the Hypencoder whose document route is wanted.
        doc_ids: document ids (part of the cache key).
        doc_texts: document texts, aligned with ``doc_ids``.
        cache_dir: cache root (default: ``$HYDRA_ST_CACHE_DIR`` or ``~/.cache/hydra_st``).
        show_progress_bar: show a progress bar while encoding.
        batch_size: documents encoded together.

    Returns:
        A float32 CPU tensor, one row per document, in ``doc_ids`` order.

    Example:
        >>> from hydra_st.hypencoder import Hypencoder
        >>> from hydra_st.hypencoder.encoding import document_vectors
        >>> model = Hypencoder.from_base("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> docs = document_vectors(model, ["d1", "d2"], ["Cats purr.", "Stocks fell."])  # doctest: +SKIP
        >>> docs.shape  # doctest: +SKIP
        torch.Size([2, 384])
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from hydra_st.teachers import DenseTeacher

    doc_route = route_modules(model, "document")
    kinds = (Transformer, Pooling, Normalize)  # the base sentence-transformer's modules: its cache (checked below)
    if len(doc_route) == 3 and all(isinstance(m, kind) for m, kind in zip(doc_route, kinds, strict=True)):
        base = SentenceTransformer(modules=doc_route, device=str(model.device))
        vecs = DenseTeacher(
            base, batch_size=batch_size, cache_dir=cache_dir, show_progress_bar=show_progress_bar
        ).encode_corpus(doc_ids, doc_texts)
        check = model.encode_document(doc_texts[:4], batch_size=batch_size, convert_to_numpy=True)
        if np.allclose(check, vecs[:4], atol=1e-4):
            return torch.from_numpy(np.array(vecs))
    if not any(isinstance(m, Normalize) for m in doc_route):  # the DenseTeacher cache holds normalised vectors
        return model.encode_document(
            doc_texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=show_progress_bar
        ).cpu()
    teacher = DenseTeacher(model, batch_size=batch_size, cache_dir=cache_dir, show_progress_bar=show_progress_bar)
    return torch.from_numpy(np.array(teacher.encode_corpus(doc_ids, doc_texts)))


def route_modules(model: Hypencoder, route: str) -> list[Any]:
    """The modules a ``route`` ("query" or "document") input passes through, the shared transformer included.

    Example:
        >>> from hydra_st.hypencoder import Hypencoder
        >>> model = Hypencoder.from_base("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> [type(m).__name__ for m in route_modules(model, "document")]  # doctest: +SKIP
        ['Transformer', 'Pooling', 'Normalize']
    """
    from sentence_transformers.sentence_transformer.modules import Router, Transformer

    router: Any = next(m for m in model if isinstance(m, Router))
    shared = [model[0]] if isinstance(model[0], Transformer) else []
    return [*shared, *router.sub_modules[route]]
