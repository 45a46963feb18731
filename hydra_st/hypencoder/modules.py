"""The hyper-head: a sentence-transformers module that turns token states into q-net parameters.

For every matrix ``i`` of shape ``(in, out)`` the q-net converter declares, ``out`` learned query vectors of width
``in`` attend over key/value projections of the token states (scale ``1/sqrt(out)``, padding masked), the attended
values go through ReLU, a non-affine LayerNorm and a linear projection, and a learned base matrix is added:
``W_i = (proj_i(LN(ReLU(softmax(Q_i K_i^T / sqrt(out)) V_i))) + Base_i)^T``. Biases use the same recipe with one
query vector and a base vector. The module writes the flat parameters (see :class:`QNetConverter`) to
``features["sentence_embedding"]``, so ``model.encode_query`` returns one flat q-net per query.

The classes saved models name by import path live here: :class:`HyperHead`, and :class:`BaseModelReference` (defined
in :mod:`hydra_st.hypencoder.base_reference`, re-exported under this module's path).
"""

from __future__ import annotations

import json
import math
import os
import types
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Module
from torch import Tensor, nn

from hydra_st.hypencoder.base_reference import BaseModelReference
from hydra_st.hypencoder.initialisation import initialise_hyper_head
from hydra_st.hypencoder.qnet import QNetConverter, QNetParams, converter_from_config

HYPER_HEAD_TYPE = "hydra_st.hypencoder.modules.HyperHead"
BASE_REFERENCE_TYPE = "hydra_st.hypencoder.modules.BaseModelReference"

__all__ = ["BASE_REFERENCE_TYPE", "HYPER_HEAD_TYPE", "BaseModelReference", "HyperHead"]


class HyperHead(Module):
    """Hyper-head writing one q-net per query from the transformer's token states.

    Args:
        hidden_size: width of the token states (384 for MiniLM, 768 for BERT-base).
        converter: q-net converter or its config dict; default ``[hidden_size, hidden_size, hidden_size, 1]``.
        skip_from_pooling: when the converter has ``linear_skip``, fill the skip vector with the L2-normalised
            mean of the token states (the frozen bi-encoder's query embedding), so training starts from it.
        init_seed: seed of a local generator used for the initialisation (never the global RNG).
        learned_skip: with ``skip_from_pooling``, add a generated correction to the skip vector, written exactly as
            a ``[hidden, 1]`` q-net weight is (attention, ReLU, LayerNorm, zero-initialised projection): the q-net
            then holds the matched bi-encoder's learnable inner product plus its nonlinear layers, and starts as the
            frozen base. Needs a converter with ``linear_skip=True`` and ``skip_from_pooling=True``.
        converter_config: the converter as a config dict; the name under which the converter is saved in the
            module's ``config.json`` (pass ``converter`` otherwise).

    Raises:
        ValueError: ``learned_skip=True`` with a converter without a linear skip, or without ``skip_from_pooling``.

    Example:
        >>> import torch
        >>> head = HyperHead(hidden_size=8, converter={"vector_dimensions": [8, 8, 1]})
        >>> out = head({"token_embeddings": torch.randn(2, 5, 8), "attention_mask": torch.ones(2, 5)})
        >>> out["sentence_embedding"].shape == (2, head.converter.num_parameters)
        True
    """

    config_keys = ["hidden_size", "converter_config", "skip_from_pooling", "init_seed", "learned_skip"]
    config_file_name = "config.json"

    def __init__(
        self,
        hidden_size: int,
        converter: QNetConverter | dict[str, Any] | None = None,
        skip_from_pooling: bool = True,
        init_seed: int = 1,
        converter_config: dict[str, Any] | None = None,
        learned_skip: bool = False,
    ) -> None:
        super().__init__()
        if converter is None:
            converter = converter_config
        if converter is None:
            converter = QNetConverter([hidden_size, hidden_size, hidden_size, 1])
        elif isinstance(converter, dict):
            converter = converter_from_config(converter)
        self.hidden_size = int(hidden_size)
        self.converter = converter
        self.skip_from_pooling = skip_from_pooling
        self.init_seed = init_seed
        w_shapes, b_shapes = converter.weight_shapes, converter.bias_shapes
        self.weight_query_embeddings = nn.ParameterList([nn.Parameter(torch.empty(1, o, i)) for i, o in w_shapes])
        self.bias_query_embeddings = nn.ParameterList([nn.Parameter(torch.empty(1, 1, o)) for o in b_shapes])
        self.hyper_base_matrices = nn.ParameterList([nn.Parameter(torch.empty(1, o, i)) for i, o in w_shapes])
        self.hyper_base_vectors = nn.ParameterList([nn.Parameter(torch.empty(1, o)) for o in b_shapes])
        widths = [i for i, _ in w_shapes] + list(b_shapes)
        self.key_projections = nn.ModuleList([nn.Linear(hidden_size, w) for w in widths])
        self.value_projections = nn.ModuleList([nn.Linear(hidden_size, w) for w in widths])
        self.weight_hyper_projection = nn.ModuleList([nn.Linear(i, i) for i, _ in w_shapes])
        self.bias_hyper_projection = nn.ModuleList([nn.Linear(o, o) for o in b_shapes])
        if learned_skip and not converter.linear_skip:
            raise ValueError(
                "learned_skip=True corrects the q-net's linear skip vector, but this converter has none: build it "
                "with linear_skip=True (e.g. QNetConverter([...], linear_skip=True)) or pass learned_skip=False"
            )
        if learned_skip and not skip_from_pooling:
            raise ValueError(
                "learned_skip=True corrects the pooled skip vector: pass skip_from_pooling=True, or learned_skip=False"
            )
        self.learned_skip = bool(learned_skip)
        if self.learned_skip:
            d = converter.input_dim
            self.skip_query_embedding = nn.Parameter(torch.empty(1, 1, d))
            self.skip_key_projection = nn.Linear(hidden_size, d)
            self.skip_value_projection = nn.Linear(hidden_size, d)
            self.skip_hyper_projection = nn.Linear(d, d)
            self.skip_base_vector = nn.Parameter(torch.zeros(1, d))
        initialise_hyper_head(self, init_seed)

    @property
    def converter_config(self) -> dict[str, Any]:
        """The converter's config (:meth:`QNetConverter.get_config`), as saved in the module's ``config.json``."""
        return self.converter.get_config()

    # ------------------------------------------------------------------ forward
    @staticmethod
    def _generated(
        tokens: Tensor, mask: Tensor, query: Tensor, key: nn.Module, value: nn.Module, projection: nn.Module,
        scale: float,
    ) -> Tensor:  # fmt: skip
        """``projection(LN(ReLU(attention(query, key(tokens), value(tokens)))))``, ``[B, n, w]`` for ``[1, n, w]``.

        The one recipe behind every generated matrix, bias and skip correction (mask ``[B, T]``, logits / ``scale``).
        """
        logits = torch.einsum("nw,btw->bnt", query[0], key(tokens)) / scale
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
        ctx = torch.softmax(logits, dim=-1) @ value(tokens)
        return projection(F.layer_norm(F.relu(ctx), (ctx.shape[-1],)))

    def generate(self, token_embeddings: Tensor, attention_mask: Tensor) -> QNetParams:
        """Unpacked q-net parameters for a batch of token states ``[B, T, hidden]``."""
        if token_embeddings.shape[-1] != self.hidden_size:
            raise ValueError(
                f"HyperHead expects token states of width {self.hidden_size}, got {token_embeddings.shape[-1]}: "
                "the hyper-head must sit on a transformer with that hidden size"
            )
        mask = attention_mask.bool()
        n_w = len(self.converter.weight_shapes)
        weights = []
        for i, (_, out) in enumerate(self.converter.weight_shapes):
            w = self._generated(
                token_embeddings, mask, self.weight_query_embeddings[i], self.key_projections[i],
                self.value_projections[i], self.weight_hyper_projection[i], math.sqrt(out),
            )  # fmt: skip
            weights.append((w + self.hyper_base_matrices[i]).transpose(1, 2))
        biases = []
        for j, _ in enumerate(self.converter.bias_shapes):
            b = self._generated(
                token_embeddings, mask, self.bias_query_embeddings[j], self.key_projections[n_w + j],
                self.value_projections[n_w + j], self.bias_hyper_projection[j], 1.0,
            )  # fmt: skip
            biases.append(b[:, 0] + self.hyper_base_vectors[j])
        skip = None
        if self.converter.linear_skip:
            m = attention_mask.to(token_embeddings.dtype).unsqueeze(-1)
            pooled = (token_embeddings * m).sum(1) / m.sum(1).clamp(min=1e-9)
            skip = F.normalize(pooled, dim=-1) if self.skip_from_pooling else torch.zeros_like(pooled)
            if self.learned_skip:
                correction = self._generated(
                    token_embeddings, mask, self.skip_query_embedding, self.skip_key_projection,
                    self.skip_value_projection, self.skip_hyper_projection, 1.0,
                )  # fmt: skip
                skip = skip + correction[:, 0] + self.skip_base_vector
        return QNetParams(weights, biases, skip)

    def forward(self, features: dict[str, Tensor], **kwargs: Any) -> dict[str, Tensor]:
        """Write each query's flat q-net parameters to ``features["sentence_embedding"]``.

        Args:
            features: the transformer's output, with ``token_embeddings`` ``[B, T, hidden]`` and
                ``attention_mask`` ``[B, T]``.
            **kwargs: ignored (sentence-transformers passes module keyword arguments).

        Returns:
            ``features`` with ``sentence_embedding`` ``[B, converter.num_parameters]`` added.
        """
        params = self.generate(features["token_embeddings"], features["attention_mask"])
        features["sentence_embedding"] = self.converter.pack(params)
        return features

    def get_embedding_dimension(self) -> int:
        """Length of the flat q-net parameter vector one query is encoded into (``converter.num_parameters``)."""
        return self.converter.num_parameters

    # -------------------------------------------------------------- model hook
    def on_model_ready(self, model: Any) -> None:
        """Make any SentenceTransformer holding this head score with the q-net.

        ``similarity_fn_name`` is a closed enum in sentence-transformers, so a plain
        ``SentenceTransformer(path, trust_remote_code=True)`` would otherwise fall back to cosine. A plain
        ``SentenceTransformer`` instance therefore has its class changed to :class:`Hypencoder` (a subclass with the
        same modules and no extra state; ``type(model) is Hypencoder`` afterwards), so q-net scoring survives pickle
        and copies. An instance of another ``SentenceTransformer`` subclass keeps its class and gets q-net
        ``similarity``/``similarity_pairwise`` methods bound on the instance; :class:`Hypencoder` already has them.
        """
        if getattr(type(model), "_is_hypencoder", False):
            return
        if type(model) is SentenceTransformer:
            # the instance already is a Hypencoder's (same modules, no extra state); giving it the class keeps
            # q-net scoring through pickle and copies, which instance-bound methods do not survive
            from hydra_st.hypencoder.model import Hypencoder

            model.__class__ = Hypencoder
            return
        head = self

        def similarity(_self: Any, embeddings1: Any, embeddings2: Any) -> Tensor:
            return head.converter.score(_to_tensor(embeddings1), _to_tensor(embeddings2))

        def similarity_pairwise(_self: Any, embeddings1: Any, embeddings2: Any) -> Tensor:
            return head.converter.score_pairwise(_to_tensor(embeddings1), _to_tensor(embeddings2))

        model.similarity = types.MethodType(similarity, model)
        model.similarity_pairwise = types.MethodType(similarity_pairwise, model)

    # ------------------------------------------------------------------ save/load
    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """Write ``config.json`` (hidden size, converter config, skip settings) and ``model.safetensors``.

        Args:
            output_path: the module's folder.
            *args: ignored (sentence-transformers' module ``save`` signature).
            safe_serialization: ignored: the weights are always written as safetensors.
            **kwargs: ignored.
        """
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=True)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        init_defaults: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> HyperHead:
        """Load a saved hyper-head (safetensors only), checking its config and weights.

        Args:
            model_name_or_path: the model's folder or Hub id.
            subfolder: the module's folder inside it.
            token: Hub token.
            cache_folder: Hub cache folder.
            revision: Hub revision.
            local_files_only: do not download.
            init_defaults: config values used where the saved config has none (the saved config wins).
            **kwargs: ignored (sentence-transformers passes loading options meant for other modules).

        Returns:
            The hyper-head with its saved weights.

        Raises:
            FileNotFoundError: ``config.json`` or ``model.safetensors`` is missing.
            ValueError: the config does not parse or describe a hyper-head, or the weights are damaged or do not
                match it.
        """
        hub: dict[str, Any] = {
            "subfolder": subfolder,
            "token": token,
            "cache_folder": cache_folder,
            "revision": revision,
            "local_files_only": local_files_only,
        }
        where = os.path.join(model_name_or_path, subfolder)
        if cls.load_file_path(model_name_or_path, "config.json", **hub) is None:
            raise FileNotFoundError(f"{where}: the hyper-head's config.json is missing; re-save or re-download it")
        try:
            config = cls.load_config(model_name_or_path=model_name_or_path, **hub)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}/config.json does not parse ({exc}); re-save or re-download the model") from exc
        if not isinstance(config, dict):
            raise ValueError(
                f"{where}/config.json holds a {type(config).__name__}, not a hyper-head config object; "
                "re-save or re-download the model"
            )
        for key, value in (init_defaults or {}).items():  # as in sentence-transformers: the saved config wins
            if key in cls.config_keys:
                config.setdefault(key, value)
        unknown = sorted(set(config) - set(cls.config_keys))
        if unknown:
            raise ValueError(f"{where}/config.json has unknown keys {unknown}; was it saved by a newer hydra_st?")
        try:
            model = cls(**config)
        except TypeError as exc:  # a missing key, or a converter config with keys its class does not take
            raise ValueError(f"{where}/config.json does not describe a hyper-head ({exc})") from exc
        path = cls.load_file_path(model_name_or_path, "model.safetensors", **hub)
        if path is None:
            raise FileNotFoundError(f"{where}: hyper-head weights model.safetensors missing")
        try:
            state = load_file(path)
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"{path}: corrupt hyper-head weights ({exc}); re-save or re-download the model") from exc
        broken = sorted(k for k, v in state.items() if not v.is_floating_point() or not bool(torch.isfinite(v).all()))
        if broken:  # safetensors has no checksum: damage that still parses shows up as NaNs or a wrong dtype
            raise ValueError(
                f"{path}: hyper-head weights {broken[:3]} are not finite floating-point numbers; the file is damaged: "
                "re-save or re-download the model"
            )
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = [k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape)]
        if missing or unexpected or wrong:
            raise ValueError(
                f"{path}: hyper-head weights do not match its config (missing {missing[:3]}, unexpected "
                f"{unexpected[:3]}, wrong shapes {sorted(wrong)[:3]}); the config.json and model.safetensors come "
                "from different models"
            )
        model.load_state_dict(state)
        return model


def _to_tensor(x: Any) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, list):
        return torch.stack([_to_tensor(v) for v in x])
    return torch.as_tensor(x)
