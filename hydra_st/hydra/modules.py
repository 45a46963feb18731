"""HydraHead: the sentence-transformers module that applies a task-card-generated projection head.

This file is Hydra's self-contained remote code: a saved model carries a copy of it at its root as
``hydra_head.py`` (with ``card_encoder.py`` and ``generator.py`` beside it), so the model also loads with plain
``SentenceTransformer(path, trust_remote_code=True)``. It therefore imports only torch, sentence-transformers,
the standard library and its two sibling files; ``hydra_st`` is used only when it is installed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modules import Module

from .card_encoder import TaskCardEncoder, card_fingerprint
from .generator import HeadParams, ProjectionHeadGenerator, apply_head

REMOTE_FILES = {"hydra_head.py": "modules.py", "card_encoder.py": "card_encoder.py", "generator.py": "generator.py"}
REMOTE_CLASS_REF = "hydra_head.HydraHead"

logger = logging.getLogger(__name__)


def card_to_mapping(card: Any) -> dict[str, Any]:
    """Accept a TaskCard (anything with ``to_dict``), a mapping, or a bundled card name / card file path."""
    if hasattr(card, "to_dict"):
        return dict(card.to_dict())
    if isinstance(card, Mapping):
        try:
            from hydra_st.hydra.task_card import TaskCard
        except ImportError:  # remote-code use without hydra_st installed: minimal checks only
            if not str(card.get("description") or "").strip() or not str(card.get("name") or "").strip():
                raise ValueError("a task card needs a non-empty 'name' and 'description'") from None
            return dict(card)
        return TaskCard.from_dict(dict(card)).to_dict()
    if isinstance(card, str | os.PathLike):
        try:
            from hydra_st.hydra.task_card import coerce_card
        except ImportError:
            raise ValueError(
                f"task_card={card!r}: card names and files need the hydra_st package (pip install hydra_st); "
                "pass the card as a dict instead"
            ) from None
        return coerce_card(card).to_dict()
    raise TypeError(
        f"task_card must be a TaskCard, a dict, a card file or a bundled card name, not {type(card).__name__}"
    )


class HydraHead(Module):
    """Apply a projection head generated from a task card to the base model's sentence embeddings.

    The card is given at encode time, ``model.encode_query(texts, task_card=card)``; it is compiled to head
    parameters once and cached by its content (the cache is dropped whenever the hypernet's weights change).
    With no card, ``default_card`` is used, or else the generic head (zero conditioning vector: the shared base
    projection ``W0``). The card texts are embedded by the modules before this one in the model (the frozen
    base), so this module must sit after the base's pooling/normalisation.

    Args:
        in_dim: Base embedding dimension (384 for all-MiniLM-L6-v2).
        out_dim: Output dimension of the generated head.
        cond_dim: Conditioning vector dimension.
        rank: Rank of the card-dependent update of ``W``.
        hidden_dim: Hidden size of the card encoder's projection MLP.
        layer_norm: Apply LayerNorm (with generated scale/shift) after the linear map.
        default_card: A card mapping used when ``encode`` gets no ``task_card``.
        gated: Also generate a gate that falls back to the base embedding (needs ``out_dim == in_dim``; see
            :class:`ProjectionHeadGenerator`).
        query_shift: Also generate a shift applied to query embeddings only (``encode_query``; see
            :class:`ProjectionHeadGenerator`).

    Example:
        >>> head = HydraHead(in_dim=384, out_dim=256)
        >>> head.get_embedding_dimension()
        256
    """

    config_keys: list[str] = [
        "in_dim", "out_dim", "cond_dim", "rank", "hidden_dim", "layer_norm", "default_card", "gated", "query_shift",
    ]  # fmt: skip
    # "task" is "query" under encode_query and "document" under encode_document (sentence-transformers sets it)
    forward_kwargs: set[str] = {"task_card", "task"}

    def __init__(
        self,
        in_dim: int = 384,
        out_dim: int = 256,
        cond_dim: int = 64,
        rank: int = 4,
        hidden_dim: int = 128,
        layer_norm: bool = True,
        default_card: dict[str, Any] | None = None,
        gated: bool = False,
        query_shift: bool = False,
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.cond_dim, self.rank, self.gated = in_dim, out_dim, cond_dim, rank, gated
        self.query_shift = bool(query_shift)
        self.hidden_dim, self.layer_norm = hidden_dim, bool(layer_norm)
        self.default_card = card_to_mapping(default_card) if default_card is not None else None
        self.card_encoder = TaskCardEncoder(embed_dim=in_dim, cond_dim=cond_dim, hidden_dim=hidden_dim)
        self.generator = ProjectionHeadGenerator(
            in_dim=in_dim, out_dim=out_dim, cond_dim=cond_dim, rank=rank, gated=bool(gated),
            query_shift=self.query_shift,
        )  # fmt: skip
        self._head_cache: dict[str, tuple[tuple[int, ...], HeadParams]] = {}
        self._warned_no_card = False

    # ------------------------------------------------------------------ model wiring
    def on_model_ready(self, model: Any) -> None:
        """Remember the owning model, whose earlier modules embed card texts.

        A plain reference kept out of ``nn.Module``'s registry (it would otherwise become a submodule of itself),
        so that ``pickle`` (sentence-transformers' multi-process pool) and ``copy.deepcopy`` carry it along and
        point the copy at the copied model.
        """
        self.__dict__["_owner"] = model

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Embed texts with the frozen modules before this head (the base model), ``[n, in_dim]``."""
        model = self.__dict__.get("_owner")
        modules = list(model._modules.values()) if model is not None else []
        idx = next((i for i, m in enumerate(modules) if m is self), None)
        if model is None or idx is None:
            raise RuntimeError(
                "HydraHead is not attached to a model: build it inside a SentenceTransformer (hydra_st.Hydra does "
                "this) or call head.on_model_ready(model) after appending it"
            )
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), 32):
                features = model.preprocess(texts[start : start + 32])
                features = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in features.items()}
                for module in modules[:idx]:
                    features = module(features)
                out.append(features["sentence_embedding"].float())
        return torch.cat(out).cpu()

    # ------------------------------------------------------------------ compiling cards
    def _weights_version(self) -> tuple[int, ...]:
        # in-place updates bump _version; replaced or moved tensors (.to, .half, param.data = ...) change data_ptr
        return tuple(v for p in self.parameters() for v in (p._version, p.data_ptr(), p.dtype.itemsize))

    def clear_cache(self) -> None:
        """Forget compiled heads (card features stay: they depend only on the frozen base)."""
        self._head_cache.clear()

    def train(self, mode: bool = True) -> HydraHead:
        """Set training mode (as ``nn.Module.train``); entering it drops the compiled heads, which training changes."""
        if mode:  # eval() runs on every encode call; the version check already guards the cache there
            self.clear_cache()
        return super().train(mode)

    def conditioning(self, task_card: Any) -> torch.Tensor:
        """The conditioning vector of a card (zeros, the generic head, when there is no card)."""
        device = self.generator.base_weight.device
        card = task_card if task_card is not None else self.default_card
        if card is None:
            if not self._warned_no_card:
                self._warned_no_card = True
                logger.warning(
                    "Hydra got no task_card and the model has no default card, so it applies the generic head "
                    "(for the published models: the base model's embeddings). Pass task_card=... to encode_query / "
                    "encode_document to get the task's head."
                )
            return torch.zeros(self.cond_dim, device=device)
        return self.card_encoder(card_to_mapping(card), self.embed_texts)

    def compile_card(self, task_card: Any = None) -> HeadParams:
        """Head parameters for ``task_card``; cached by card content while weights are unchanged and no grad."""
        cacheable = not torch.is_grad_enabled() or not self.training
        mapping = card_to_mapping(task_card) if task_card is not None else self.default_card
        key = card_fingerprint(mapping) if mapping is not None else "<generic>"
        if cacheable:
            hit = self._head_cache.get(key)
            if hit is not None and hit[0] == self._weights_version():
                return hit[1]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not cacheable):
            params = self.generator(self.conditioning(mapping))
        if cacheable:
            params = {k: v.detach() for k, v in params.items()}
            self._head_cache[key] = (self._weights_version(), params)
        return params

    def forward(
        self, features: dict[str, torch.Tensor], task_card: Any = None, task: str | None = None, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Replace ``features["sentence_embedding"]`` by its image under the head generated from ``task_card``.

        Args:
            features: The base model's features; ``sentence_embedding`` is ``[batch, in_dim]``.
            task_card: A TaskCard, a card dict, a bundled card name or a card file (None: ``default_card``, else the
                generic head).
            task: ``"query"`` under ``encode_query`` (the query shift applies), ``"document"`` under
                ``encode_document``; set by sentence-transformers.
            **kwargs: Other encode keyword arguments (ignored).

        Returns:
            ``features`` with a normalised ``[batch, out_dim]`` ``sentence_embedding`` of the input's dtype.
        """
        emb = features["sentence_embedding"]
        if emb.shape[-1] != self.in_dim:
            raise ValueError(
                f"HydraHead expects {self.in_dim}-d embeddings but got {emb.shape[-1]}-d; build the head with "
                f"in_dim={emb.shape[-1]} to match the base model"
            )
        params = self.compile_card(task_card)
        params = {k: v.to(device=emb.device, dtype=torch.float32) for k, v in params.items()}
        features["sentence_embedding"] = apply_head(
            params, emb.float(), layer_norm=self.layer_norm, is_query=task == "query"
        ).to(emb.dtype)
        return features

    def get_embedding_dimension(self) -> int:
        """The output dimension, ``out_dim``."""
        return self.out_dim

    def trainable_parameter_count(self) -> int:
        """Number of trainable hypernet parameters (card projection + generator)."""
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ persistence
    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """Write ``config.json`` and ``model.safetensors`` to ``output_path``, and the remote code to its parent.

        The other arguments are sentence-transformers' and are ignored: the weights are always safetensors.
        """
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=True)
        write_remote_code(Path(output_path).parent)

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
    ) -> HydraHead:
        """Load a saved head (``config.json`` and ``model.safetensors``; never a pickled file).

        Args:
            model_name_or_path: The model folder or Hub id.
            subfolder: The head's folder in it (e.g. ``3_HydraHead``).
            token: Hub token.
            cache_folder: Hub cache folder.
            revision: Hub revision.
            local_files_only: Do not download.
            init_defaults: Config values used where the saved config has none.
            **kwargs: Other sentence-transformers loading arguments (ignored).

        Returns:
            The head with its saved weights.

        Raises:
            FileNotFoundError: ``config.json`` or ``model.safetensors`` is missing.
            ValueError: The config or the weights are damaged, or from another head configuration.
        """
        hub_kwargs: dict[str, Any] = {
            "subfolder": subfolder,
            "token": token,
            "cache_folder": cache_folder,
            "revision": revision,
            "local_files_only": local_files_only,
        }
        where = os.path.join(model_name_or_path, subfolder)
        if cls.load_file_path(model_name_or_path, filename="config.json", **hub_kwargs) is None:
            raise FileNotFoundError(f"{where}: the HydraHead's config.json is missing: re-save or re-download it")
        try:
            config = cls.load_config(model_name_or_path=model_name_or_path, **hub_kwargs)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}/config.json does not parse ({exc}): re-save or re-download the model") from exc
        if not isinstance(config, dict):
            raise ValueError(
                f"{where}/config.json holds a {type(config).__name__}, not a HydraHead config object: "
                "re-save or re-download the model"
            )
        for key, value in (init_defaults or {}).items():  # as in sentence-transformers: the saved config wins
            if key in cls.config_keys:
                config.setdefault(key, value)
        unknown = sorted(set(config) - set(cls.config_keys))
        if unknown:
            raise ValueError(f"HydraHead config has unknown keys {unknown}; was it saved by a newer hydra_st?")
        try:
            model = cls(**config)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}/config.json does not describe a HydraHead ({exc})") from exc
        # safetensors only: sentence-transformers would fall back to a pickled pytorch_model.bin
        path = cls.load_file_path(model_name_or_path, filename="model.safetensors", **hub_kwargs)
        if path is None:
            raise FileNotFoundError(
                f"{where}: the HydraHead weights model.safetensors are missing (only safetensors "
                "are read): re-save or re-download the model"
            )
        from safetensors.torch import load_file

        try:
            state = load_file(path)
            # safetensors has no checksum: damage that still parses shows up as NaNs or a wrong dtype
            broken = sorted(k for k, v in state.items() if not v.is_floating_point() or not torch.isfinite(v).all())
            if broken:
                raise ValueError(f"tensors {broken[:3]} are not finite floating-point numbers")
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # safetensors raises its own SafetensorError; torch a RuntimeError on bad keys
            raise ValueError(
                f"{where}: the HydraHead weights cannot be loaded ({type(exc).__name__}: {exc}). The file is damaged "
                "or from a head with another config.json: re-save or re-download the model"
            ) from exc
        return model


def write_remote_code(root: str | os.PathLike[str]) -> None:
    """Copy this file and its two siblings to a saved model's root (``hydra_head.py`` etc.).

    Done on every save of the head, whichever class saves it, so a model re-saved by plain sentence-transformers
    still has the code at its root (the re-save pitfall: ST copies remote code only into the module subfolder).
    """
    here = Path(__file__).resolve().parent
    root = Path(root)
    for target, source in REMOTE_FILES.items():
        src = here / source
        if not src.is_file():  # loaded as remote code: this file is hydra_head.py
            src = here / target
        dst = root / target
        if src.resolve() != dst.resolve():
            _atomic_copy(src, dst)


def _atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` over ``dst`` through a uniquely named, fsynced temporary sibling, so that two processes saving
    into the same folder never write the same temporary file (self-contained: this file is remote code)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
            out.flush()
            os.fsync(out.fileno())
        mask = os.umask(0)  # mkstemp makes the file 0600; give it what a plain open() would (0666 & ~umask)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
