"""``Hypencoder``: a SentenceTransformer whose queries are small neural networks (q-nets).

Module layout (shared transformer, the published configuration)::

    0: Transformer                      token states for queries and documents
    1: Router
         query:    HyperHead            -> flat q-net parameters per query
         document: Pooling (+Normalize) -> document vectors

With ``shared_transformer=False`` the Router holds a transformer per route instead. ``encode_query`` returns the
flat q-net parameters, ``encode_document`` the document vectors, and :meth:`Hypencoder.similarity` runs the q-nets
(batched) on the documents.

Loading: ``Hypencoder(path)`` resolves its own module class, so no ``trust_remote_code`` is needed. A plain
``SentenceTransformer(path, trust_remote_code=True)`` also loads the model (the class ref is the installed
``hydra_st`` package) and scores with the q-net, because :meth:`HyperHead.on_model_ready` changes that instance's
class to :class:`Hypencoder` (the similarity name itself is a closed enum in sentence-transformers).
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Router, Transformer
from torch import Tensor

from hydra_st.hypencoder.modules import BASE_REFERENCE_TYPE, HYPER_HEAD_TYPE, BaseModelReference, HyperHead
from hydra_st.hypencoder.qnet import QNetConverter


class Hypencoder(SentenceTransformer):
    """Hypencoder retrieval model (query -> q-net, document -> vector, score = q-net(document)).

    Build one on a base sentence-transformer with :meth:`from_base`, or load a saved one with ``Hypencoder(path)``.

    Loading a saved Hypencoder with plain sentence-transformers,
    ``SentenceTransformer(path, trust_remote_code=True)``, returns a :class:`Hypencoder`: the hyper-head's
    ``on_model_ready`` hook changes the loaded instance's class (``type(model) is Hypencoder`` afterwards), so
    ``model.similarity`` runs the q-nets instead of cosine, also after pickling or copying. The instance has the
    same modules and no extra state; only its methods (q-net similarity, the ``encode_query`` checks) change.

    Args:
        model_name_or_path: folder or Hub id of a saved Hypencoder; ``None`` with ``modules=[...]`` builds one from
            modules (what :meth:`from_base` does).
        *args: passed on to ``SentenceTransformer`` (its positional arguments after ``model_name_or_path``).
        **kwargs: passed on to ``SentenceTransformer`` (``modules``, ``device``, ``cache_folder``, ...). Weights are
            read as safetensors only.

    Raises:
        ValueError: the loaded model has no :class:`HyperHead`, or its files are damaged.

    Example:
        >>> from hydra_st.hypencoder import Hypencoder, QNetConverter
        >>> model = Hypencoder.from_base("sentence-transformers/all-MiniLM-L6-v2",
        ...                              converter=QNetConverter([384, 384, 1], linear_skip=True))  # doctest: +SKIP
        >>> q = model.encode_query(["what is a q-net?"])  # doctest: +SKIP
        >>> d = model.encode_document(["A q-net is a per-query MLP.", "Bananas are yellow."])  # doctest: +SKIP
        >>> model.similarity(q, d).shape  # doctest: +SKIP
        torch.Size([1, 2])
    """

    _is_hypencoder = True
    _module_classes = {HYPER_HEAD_TYPE: HyperHead, BASE_REFERENCE_TYPE: BaseModelReference}
    # sentence-transformers' similarity names are a closed enum; this one is stored, and the q-net scores regardless
    PLACEHOLDER_SIMILARITY = "cosine"

    def __init__(self, model_name_or_path: str | None = None, *args: Any, **kwargs: Any) -> None:
        from hydra_st.hub import check_tokenizers, explained_load_errors, name_local_model, safetensors_only

        with explained_load_errors(model_name_or_path):
            super().__init__(model_name_or_path, *args, **safetensors_only(kwargs))
        if model_name_or_path is not None:
            check_tokenizers(self, model_name_or_path)
            if not any(isinstance(m, HyperHead) for m in self.modules()):
                raise ValueError(
                    f"{model_name_or_path}: it has no HyperHead module, so this is not a Hypencoder (load it with "
                    "SentenceTransformer, or re-save the Hypencoder)"
                )
        name_local_model(self, model_name_or_path)
        # a model loaded whole from the Hub has this id as its transformer's name: it is not the base's (model card)
        self._loaded_name = os.fspath(model_name_or_path) if model_name_or_path is not None else None

    @property
    def similarity_fn_name(self) -> Any:
        """The stored similarity name (a placeholder: :meth:`similarity` always runs the q-nets)."""
        return SentenceTransformer.similarity_fn_name.fget(self)  # type: ignore[attr-defined]

    @similarity_fn_name.setter
    def similarity_fn_name(self, value: Any) -> None:
        name = getattr(value, "value", value)
        if name is not None and name != self.PLACEHOLDER_SIMILARITY:
            warnings.warn(
                f"similarity_fn_name={name!r} has no effect on a Hypencoder: its similarity is the q-net. For a "
                "bi-encoder baseline, train one with the same script (--bi-encoder)",
                UserWarning,
                stacklevel=2,
            )
        SentenceTransformer.similarity_fn_name.fset(self, value)  # type: ignore[attr-defined]

    def get_embedding_dimension(self) -> int | None:
        """Dimension of the document vectors (what a document index stores).

        The query side is not a vector of that size but a q-net: :attr:`query_dimension` flat parameters.
        """
        return self.converter.input_dim

    @property
    def query_dimension(self) -> int:
        """Number of flat q-net parameters that ``encode_query`` returns per query."""
        return self.converter.num_parameters

    def encode_query(self, *args: Any, **kwargs: Any) -> Any:
        """Encode queries into flat q-net parameters, ``[num_queries, query_dimension]``.

        Accepts sentence-transformers' ``encode_query`` arguments except those that would change a q-net's
        weights: ``precision`` other than ``"float32"`` (quantized weights score garbage), ``normalize_embeddings``
        (rescales each query's scores) and ``truncate_dim`` (cuts the weight vector).
        """
        if kwargs.get("precision", "float32") != "float32":
            raise ValueError(
                f"precision={kwargs['precision']!r} would quantize the q-nets' weights; a Hypencoder's queries must "
                "stay float32"
            )
        if kwargs.get("normalize_embeddings"):
            raise ValueError("normalize_embeddings=True would rescale each q-net's weights; drop it for queries")
        if kwargs.get("truncate_dim") is not None or self.truncate_dim is not None:
            raise ValueError("truncate_dim cannot apply to q-net parameters; drop it (or set model.truncate_dim=None)")
        return super().encode_query(*args, **kwargs)

    def _create_model_card(self, path: str, model_name: str | None = None, *args: Any, **kwargs: Any) -> None:
        # a loaded card is kept as sentence-transformers does, naming the repository it is pushed to (push_to_hub
        # passes model_name); a new model gets the Hypencoder card, not ST's generic one (which would call it a
        # cosine model of the q-net's size)
        from hydra_st.hub.model_cards import retarget_card
        from hydra_st.utils.io import atomic_write_text

        if self._model_card_text:
            if not model_name:
                return super()._create_model_card(path, model_name, *args, **kwargs)
            text = retarget_card(self._model_card_text, "Hypencoder", model_name)
        else:
            from .model_card import render_model_card

            text = render_model_card(self, model_id=model_name or Path(path).name)
        atomic_write_text(Path(path) / "README.md", text)

    @classmethod
    def from_base(
        cls,
        base: str | SentenceTransformer,
        converter: QNetConverter | None = None,
        shared_transformer: bool = True,
        document_pooling: str = "mean",
        normalize_documents: bool = True,
        device: str | None = None,
        init_seed: int = 1,
        learned_skip: bool = False,
    ) -> Hypencoder:
        """Build an untrained Hypencoder on a base model's transformer.

        Args:
            base: a SentenceTransformer or a model id/path (loaded offline through ``hydra_st.hub`` when it is the
                default base).
            converter: q-net shape; default ``[h, h, h, 1]`` with a linear skip (h = the transformer width).
            shared_transformer: one transformer for both routes (the published model) or one per route.
            document_pooling: ``"mean"`` (matches the base sentence-transformer) or ``"cls"`` (the published model).
            normalize_documents: L2-normalise document vectors (keeps them equal to the base's embeddings).
            device: torch device.
            init_seed: seed of the hyper-head initialisation.
            learned_skip: let the hyper-head also correct the skip vector (see :class:`HyperHead`).
        """
        if isinstance(base, str):
            from hydra_st.hub.offline import load_base_model

            base = load_base_model(base, device=device or "cpu")
        transformer = next((m for m in base if isinstance(m, Transformer)), None)
        if transformer is None:
            raise ValueError("the base model has no Transformer module; pass a transformer sentence-transformer")
        hidden = transformer.get_embedding_dimension()
        if converter is None:
            converter = QNetConverter([hidden, hidden, hidden, 1], linear_skip=True)
        if converter.input_dim != hidden:
            raise ValueError(
                f"the q-net reads {converter.input_dim}-d document vectors but the transformer gives {hidden}-d: "
                f"use QNetConverter([{hidden}, ..., 1])"
            )
        if document_pooling not in ("mean", "cls"):
            raise ValueError(f"document_pooling must be 'mean' or 'cls', got {document_pooling!r}")
        head = HyperHead(hidden, converter=converter, init_seed=init_seed, learned_skip=learned_skip)
        doc_modules: list[Any] = [Pooling(hidden, pooling_mode=document_pooling)]
        if normalize_documents:
            doc_modules.append(Normalize())
        if shared_transformer:
            router = Router.for_query_document(query_modules=[head], document_modules=doc_modules)
            modules: list[Any] = [transformer, router]
        else:
            router = Router.for_query_document(
                query_modules=[copy.deepcopy(transformer), head], document_modules=[transformer, *doc_modules]
            )
            modules = [router]
        model = cls(modules=modules, device=device or str(base.device))
        model.prompts = {"query": "", "document": ""}
        return model

    # ------------------------------------------------------------------ parts
    @property
    def hyper_head(self) -> HyperHead:
        """The hyper-head module (found inside the Router)."""
        for module in self.modules():
            if isinstance(module, HyperHead):
                return module
        raise ValueError("this model has no HyperHead module; build it with Hypencoder.from_base(...)")

    @property
    def converter(self) -> QNetConverter:
        """The q-net converter (shapes + batched scoring)."""
        return self.hyper_head.converter

    @property
    def activation_width(self) -> int:
        """The q-net's widest hidden layer (see :attr:`QNetConverter.activation_width`), for search chunk sizes."""
        return self.converter.activation_width

    def reference_base(self, model_id: str) -> None:
        """Save the (frozen, shared) transformer as a reference to ``model_id`` instead of copying its weights."""
        if not isinstance(self[0], Transformer):
            raise ValueError("only a shared transformer (module 0) can be saved as a base reference")
        if any(p.requires_grad for p in self[0].parameters()):
            raise ValueError("the transformer is trainable; freeze it (freeze_transformer()) before referencing it")
        self._modules["0"] = BaseModelReference.from_transformer(self[0], model_id)

    def transformers(self) -> list[Transformer]:
        """Every Transformer module (one if shared, two otherwise)."""
        return [m for m in self.modules() if isinstance(m, Transformer)]

    def freeze_transformer(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the transformer(s); only the hyper-head trains when frozen."""
        for t in self.transformers():
            for p in t.parameters():
                p.requires_grad_(not frozen)

    # ------------------------------------------------------------- similarity
    def similarity(self, embeddings1: Any, embeddings2: Any) -> Tensor:
        """Q-net scores: ``[Nq, P]`` q-nets x ``[Nd, d]`` documents -> ``[Nq, Nd]`` (batched, no loop)."""
        q = _to_tensor(embeddings1)
        d = _to_tensor(embeddings2)
        with torch.inference_mode(mode=not (q.requires_grad or d.requires_grad)):
            return self.converter.score(q, d)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> Tensor:
        """Q-net ``i`` scores document ``i``: ``[N, P]`` x ``[N, d]`` -> ``[N]``."""
        q = _to_tensor(embeddings1)
        d = _to_tensor(embeddings2)
        with torch.inference_mode(mode=not (q.requires_grad or d.requires_grad)):
            return self.converter.score_pairwise(q, d)


def _to_tensor(x: Any) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, list):
        return torch.stack([_to_tensor(v) for v in x])
    return torch.as_tensor(x)
