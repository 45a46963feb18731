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
