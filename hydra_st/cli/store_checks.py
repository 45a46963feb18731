"""Whether a store's document vectors belong to a ``--model``: the fingerprints ``hydra-st encode`` records.

``hydra-st encode`` writes two fingerprints into a store's ``meta.json`` (:func:`document_fingerprint` and the
whole model's); ``hydra-st retrieve`` checks them with :func:`check_store_model` before it scores anything.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra_st.hub.loading import weights_revision as model_fingerprint  # the whole model's weight fingerprint

logger = logging.getLogger(__name__)


def document_fingerprint(model: Any) -> str | None:
    """The fingerprint of what encodes a model's documents, which ``encode`` records and ``retrieve`` checks.

    Only the document side determines a store's vectors. For a model with a ``Router`` (a Hypencoder, or an
    asymmetric bi-encoder) that is the document route's modules, the shared transformer included
    (:func:`~hydra_st.hypencoder.encoding.route_modules`): a Hypencoder retrained on the query side only (its
    hyper-head, or a query-side transformer) keeps the fingerprint and can search the same store. For any other
    model it is the whole model (:func:`model_fingerprint`). ``None`` for a model that is no torch module.

    Example:
        >>> import torch
        >>> document_fingerprint(torch.nn.Linear(2, 2)) == model_fingerprint(torch.nn.Linear(2, 2))
        False
    """
    import torch
    from sentence_transformers.sentence_transformer.modules import Router

    from hydra_st.utils.hashing import fingerprint_model

    if not isinstance(model, torch.nn.Module):
        return None
    router = next((m for m in model.children() if isinstance(m, Router)), None)
    if router is None or "document" not in getattr(router, "sub_modules", {}):
        return fingerprint_model(model)
    from hydra_st.hypencoder.encoding import route_modules

    modules = route_modules(model, "document")  # type: ignore[arg-type]  # any model with a Router
    route: Any = torch.nn.Sequential(*modules)
    # what fingerprint_model reads of a sentence-transformer: the document transformer's truncation
    route.max_seq_length = getattr(modules[0], "max_seq_length", None)
    return fingerprint_model(route)


def check_store_model(meta: dict[str, Any], model: Any, model_name: str, store: str) -> None:
    """Refuse to score a store's documents with queries of a model whose documents encode differently.

    ``hydra-st encode`` records in the store's ``meta.json`` the fingerprint of what encoded the documents
    (``document_fingerprint``, see :func:`document_fingerprint`) and of the whole model (``model_fingerprint``).
    Queries of a model whose document side differs (even one of the same width) would be scored against document
    vectors they have nothing to do with, and the rankings would be silently meaningless. A model that differs
    only on the query side (a Hypencoder whose hyper-head was retrained) is accepted. A store from an earlier
    hydra_st that records only ``model_fingerprint`` is checked against the whole model. A store without a
    fingerprint gets a warning instead, as does a model that cannot be fingerprinted.

    Args:
        meta: the store's ``meta.json`` (:meth:`~hydra_st.retrieval.EmbeddingStore.load_meta`).
        model: the loaded ``--model``.
        model_name: the ``--model`` value, for the message.
        store: the ``--store`` value, for the message.

    Raises:
        ValueError: the store records another fingerprint; the message names the ``hydra-st encode`` run that
            rebuilds it.
    """
    encoded_by = meta.get("model", "an unknown model")
    if meta.get("document_fingerprint") is not None:
        key, current, side = "document_fingerprint", document_fingerprint(model), "document encoder"
    else:
        key, current, side = "model_fingerprint", model_fingerprint(model), "model"
    recorded = meta.get(key)
    if recorded is None:
        logger.warning(
            "the store %s records no model fingerprint (written by an older hydra_st, or not by `hydra-st encode`), "
            "so it cannot be checked that --model %s encoded its documents (the store names %s); re-run "
            "`hydra-st encode` to record one",
            store,
            model_name,
            encoded_by,
        )
        return
    if current is None:
        logger.warning("--model %s has no weights to fingerprint: it cannot be checked against %s", model_name, store)
        return
    if recorded != current:
        raise ValueError(
            f"the store {store} was encoded by another {side} ({encoded_by}) than --model {model_name}'s: its "
            f"document vectors do not match this model's queries; re-run `hydra-st encode --model {model_name} "
            f"--output {store} ...` or pass the --model that encoded it"
        )


def check_store_width(model: Any, dim: int, model_name: str, store: str) -> None:
    """Refuse a store whose vectors have another width than ``--model``'s document vectors.

    A store without fingerprints (an older hydra_st, or written through the
    :class:`~hydra_st.retrieval.EmbeddingStore` API) escapes :func:`check_store_model`; its width still tells that
    another model encoded it, and scoring would otherwise fail inside torch with a bare shape error.

    Args:
        model: the loaded ``--model``.
        dim: the width of the store's vectors.
        model_name: the ``--model`` value, for the message.
        store: the ``--store`` value, for the message.

    Raises:
        ValueError: the widths differ; the message names the ``hydra-st encode`` run that rebuilds the store.
    """
    if getattr(type(model), "_is_hypencoder", False):
        width = model.converter.input_dim  # what its q-nets take: the document route's output
    else:
        # None when the model cannot tell (no such method, or an unknown width): the scorer checks the queries then
        width = getattr(model, "get_sentence_embedding_dimension", lambda: None)()
    if width is not None and int(width) != dim:
        raise ValueError(
            f"the store {store} holds {dim}-d document vectors but --model {model_name} scores {width}-d ones: "
            f"another model encoded it; re-run `hydra-st encode --model {model_name} --output {store} ...` or pass "
            "the --model that encoded it"
        )


def biencoder_similarity(model: Any) -> str:
    """The similarity a bi-encoder ranks by: ``"cosine"`` (sentence-transformers' default), ``"dot"``, ...

    Example:
        >>> from types import SimpleNamespace
        >>> biencoder_similarity(SimpleNamespace(similarity_fn_name="dot")), biencoder_similarity(object())
        ('dot', 'cosine')
    """
    return str(getattr(model, "similarity_fn_name", None) or "cosine")


def ends_normalised(model: Any) -> bool:
    """Whether a model's last module is ``Normalize``: its embeddings are unit vectors already.

    Example:
        >>> import torch
        >>> from sentence_transformers.sentence_transformer.modules import Normalize
        >>> ends_normalised(torch.nn.Sequential(torch.nn.Identity(), Normalize()))
        True
    """
    from sentence_transformers.sentence_transformer.modules import Normalize

    children = list(model.children()) if hasattr(model, "children") else []
    return bool(children) and isinstance(children[-1], Normalize)


def _unit_vectors(emb: Any, chunk_rows: int = 1 << 16) -> bool:
    # read in chunks: a store is a memmap that may not fit in memory
    import numpy as np

    for start in range(0, len(emb), chunk_rows):
        norms = np.linalg.norm(np.asarray(emb[start : start + chunk_rows], dtype=np.float32), axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            return False
    return True


def biencoder_scoring(model: Any, meta: dict[str, Any], emb: Any, mode: str) -> tuple[Any, bool]:
    """How ``hydra-st retrieve`` ranks a store with a bi-encoder so that the ranking follows its similarity.

    ``hydra-st encode`` stores unit vectors for a cosine model (``"normalized": true`` in ``meta.json``), so its
    cosine is the inner product of unit queries and the store's vectors, which faiss's inner-product index and
    the neighbour graph also use. A store that does not record this (an older hydra_st) is checked for unit
    vectors; if they are not, exhaustive and graph search normalise each chunk (faiss cannot). ``dot`` ranks by
    the raw inner product; ``euclidean`` and ``manhattan`` by ``model.similarity``, which faiss mode cannot.

    Args:
        model: the loaded bi-encoder.
        meta: the store's ``meta.json``.
        emb: the store's ``[N, d]`` vectors (read only when ``meta`` does not say whether they are unit vectors).
        mode: ``"exhaustive"``, ``"graph"`` or ``"faiss"``.

    Returns:
        ``(scorer, normalise_queries)``: the scorer for exhaustive and graph search (faiss mode ranks by the inner
        product), and whether queries must be L2-normalised first.

    Raises:
        ValueError: faiss mode with a similarity that no inner product gives (the message names the modes that
            work), or the store records another similarity than the model's.
    """
    from hydra_st.retrieval.exhaustive import cosine_scorer, dot_scorer

    similarity = biencoder_similarity(model)
    recorded = meta.get("similarity")
    if recorded is not None and recorded != similarity:
        # same weights, another similarity setting: the stored vectors were prepared (normalised or not) for that one
        raise ValueError(
            f"the store was encoded for {recorded} similarity but --model ranks by {similarity}: re-run "
            "`hydra-st encode` with this --model"
        )
    if similarity == "dot":
        return dot_scorer, False
    if similarity == "cosine":
        normalise_queries = not ends_normalised(model)  # a Normalize module already returns unit vectors
        unit = meta["normalized"] if isinstance(meta.get("normalized"), bool) else _unit_vectors(emb)
        if unit:
            return dot_scorer, normalise_queries
        if mode == "faiss":
            raise ValueError(
                "faiss mode ranks by inner product, which is cosine only for unit vectors, and this store's are not: "
                "re-run `hydra-st encode` (it stores unit vectors for a cosine model), or use --mode exhaustive"
            )
        return cosine_scorer, normalise_queries
    if mode == "faiss":
        raise ValueError(
            f"faiss mode ranks by inner product, but --model's similarity is {similarity}: use --mode exhaustive "
            "(or graph), which rank by the model's own similarity"
        )
    return model.similarity, False
