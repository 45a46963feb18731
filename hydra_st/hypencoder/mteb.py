"""Evaluate a Hypencoder with MTEB under metadata that describes it: q-net scoring, its real parameter count.

MTEB scores a Hypencoder correctly without any wrapper: it ranks with ``model.similarity``, which runs the q-nets.
But the metadata MTEB writes beside the scores (``model_meta.json``, the leaderboard fields) is read from the
sentence-transformers config, whose similarity names are a closed enum: it would call the model a cosine
bi-encoder and leave its parameter count empty. :class:`HypencoderMTEBWrapper` corrects that:

* ``similarity_fn_name``: ``custom`` (MTEB's name for a model-defined score; the q-net);
* ``n_parameters``: every parameter of the model (shared transformer, hyper-head, document route);
* ``embed_dim``: the document vectors' width (what an index stores); a query is a q-net of
  :attr:`~hydra_st.hypencoder.model.Hypencoder.query_dimension` flat parameters, which MTEB's schema (one
  embedding width per model) cannot express;
* ``model_type`` stays ``dense``: MTEB's vocabulary (dense, sparse, late-interaction, cross-encoder, router, hybrid)
  has no type for a query that is a network;
* name and revision as for any model (a local folder: ``local/<folder>`` and a digest of its weights, see
  :func:`hydra_st.hub.loading.name_local_model`).

Importing this module needs the ``mteb`` extra (``pip install "hydra_st[mteb]"``).

Example:
    >>> import mteb  # doctest: +SKIP
    >>> from hydra_st import Hypencoder
    >>> from hydra_st.evaluation.mteb_tasks import beir_retrieval_task
    >>> from hydra_st.hypencoder.mteb import HypencoderMTEBWrapper
    >>> wrapper = HypencoderMTEBWrapper(Hypencoder("models/hypencoder-minilm-l6"))  # doctest: +SKIP
    >>> wrapper.mteb_model_meta.similarity_fn_name  # doctest: +SKIP
    <ScoringFunction.CUSTOM: 'custom'>
    >>> task = beir_retrieval_task("scifact", data_dir="/path/to/beir")  # doctest: +SKIP
    >>> mteb.evaluate(wrapper, task, cache=None).task_results[0].get_score()  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from hydra_st.utils.imports import require

require("mteb", extra="mteb")

from mteb.models.model_meta import ScoringFunction  # noqa: E402
from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper  # noqa: E402


def hypencoder_meta_updates(model: Any) -> dict[str, Any]:
    """The ModelMeta fields that differ for a Hypencoder from what MTEB reads off a sentence-transformer.

    Example:
        >>> import torch
        >>> class StandIn(torch.nn.Linear):
        ...     def get_embedding_dimension(self):
        ...         return 3
        >>> updates = hypencoder_meta_updates(StandIn(3, 2))
        >>> updates["similarity_fn_name"].value, updates["n_parameters"], updates["embed_dim"]
        ('custom', 8, 3)
    """
    return {
        "similarity_fn_name": ScoringFunction.CUSTOM,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "embed_dim": model.get_embedding_dimension(),
    }


class HypencoderMTEBWrapper(SentenceTransformerEncoderWrapper):
    """MTEB encoder wrapper for a :class:`~hydra_st.hypencoder.model.Hypencoder` with corrected metadata.

    Encoding and scoring are sentence-transformers' (``encode_query`` gives the q-nets, ``encode_document`` the
    document vectors, ``similarity`` runs the q-nets); only ``mteb_model_meta`` changes (see the module docstring).

    Args:
        model: a Hypencoder.
        **kwargs: passed to ``SentenceTransformerEncoderWrapper`` (e.g. ``model_prompts``).

    Raises:
        TypeError: ``model`` is not a Hypencoder (a plain bi-encoder needs no wrapper).
    """

    def __init__(self, model: Any, **kwargs: Any) -> None:
        if not getattr(type(model), "_is_hypencoder", False):
            raise TypeError(
                f"HypencoderMTEBWrapper wraps a Hypencoder, not a {type(model).__name__}; pass other models to "
                "mteb.evaluate directly"
            )
        super().__init__(model, **kwargs)
        self.mteb_model_meta = self.mteb_model_meta.model_copy(update=hypencoder_meta_updates(model))
