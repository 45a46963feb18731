"""Loading saved models safely: safetensors only, errors that name the folder, names for local folders."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def safetensors_only(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``SentenceTransformer`` keyword arguments that make transformers read only safetensors weights.

    Without it, a folder holding a ``pytorch_model.bin`` is unpickled; a user may still opt in explicitly with
    ``model_kwargs={"use_safetensors": False}``.

    Args:
        kwargs: the keyword arguments meant for ``SentenceTransformer(...)`` (not modified).

    Returns:
        A copy of ``kwargs`` whose ``model_kwargs`` ask for safetensors, unless they already say otherwise.

    Example:
        >>> safetensors_only({"device": "cpu"})["model_kwargs"]
        {'use_safetensors': True}
    """
    model_kwargs = dict(kwargs.get("model_kwargs") or {})
    model_kwargs.setdefault("use_safetensors", True)
    return {**kwargs, "model_kwargs": model_kwargs}


@contextmanager
def explained_load_errors(model_name_or_path: Any) -> Iterator[None]:
    """Re-raise a damaged weights file or config as a ValueError that names the model and the fix.

    safetensors' own errors ("header too large") and json's ("Expecting value: line 1 column 1") name neither.

    Args:
        model_name_or_path: the model being loaded, for the message.

    Returns:
        A context manager; wrap the loading call in it.

    Example:
        >>> import json
        >>> with explained_load_errors("models/broken"):  # doctest: +ELLIPSIS
        ...     json.loads("{not json")
        Traceback (most recent call last):
        ...
        ValueError: models/broken: a JSON config file does not parse (...); re-save or re-download the model
    """
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as exc:
        raise ValueError(
            f"{model_name_or_path}: a weights file is damaged ({exc}); re-save or re-download the model"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{model_name_or_path}: a JSON config file does not parse ({exc}); re-save or re-download the model"
        ) from exc


def check_tokenizers(model: Any, model_name_or_path: Any) -> None:
    """Refuse a model whose tokenizer holds nothing but special tokens.

    transformers builds such a tokenizer, without an error, when ``tokenizer.json`` / ``vocab.txt`` is missing, and
    every word then encodes as ``[UNK]``: the embeddings would be silently meaningless.

    Args:
        model: a loaded model; every submodule with a ``tokenizer`` is checked.
        model_name_or_path: the model's name or folder, for the message.

    Raises:
        ValueError: a tokenizer holds nothing but its special tokens.

    Example:
        >>> from types import SimpleNamespace
        >>> class Tokenizer(list):
        ...     all_special_tokens = ["[CLS]", "[SEP]"]
        >>> model = SimpleNamespace(modules=lambda: [SimpleNamespace(tokenizer=Tokenizer(["[CLS]", "[SEP]"]))])
        >>> check_tokenizers(model, "models/no-vocab")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: models/no-vocab: the tokenizer holds only its 2 special tokens, so every word would encode as ...
    """
    for module in model.modules():
        tokenizer = getattr(module, "tokenizer", None)
        special = getattr(tokenizer, "all_special_tokens", None)
        if tokenizer is None or special is None:
            continue
        if len(tokenizer) <= len(set(special)):
            raise ValueError(
                f"{model_name_or_path}: the tokenizer holds only its {len(tokenizer)} special tokens, so every word "
                "would encode as unknown; tokenizer.json (or vocab.txt) is missing or empty: re-save or re-download "
                "the model"
            )


def weights_revision(model: Any) -> str | None:
    """A revision string that identifies a loaded model's weights: :func:`~hydra_st.utils.hashing.fingerprint_model`.

    Two folders with the same weights (and encode settings) get the same revision, wherever they are; a retrained
    model gets another. Hashing MiniLM-sized weights takes about 0.1 s. ``None`` for an object that is no torch
    module (nothing to hash).

    Example:
        >>> import torch
        >>> weights_revision(torch.nn.Linear(2, 2)) == weights_revision(torch.nn.Linear(2, 2))
        False
        >>> weights_revision(object()) is None
        True
    """
    import torch

    from hydra_st.utils.hashing import fingerprint_model

    return fingerprint_model(model) if isinstance(model, torch.nn.Module) else None


def name_local_model(model: Any, model_name_or_path: str | os.PathLike[str] | None) -> None:
    """Give a model loaded from a local folder the name ``local/<folder>`` and a revision naming its weights.

    sentence-transformers leaves ``model_card_data.model_name`` unset for local folders, and MTEB keys its result
    cache on ``name/revision`` (falling back to placeholders shared by every unnamed model, and to the revision
    ``no_revision_available``), so two local models would read each other's cached scores. The name is
    ``local/<folder>``; the revision is :func:`weights_revision` of the loaded weights, so two folders of the same
    name with different weights, or a model retrained in place, get separate MTEB cache entries. MTEB reads a
    sentence-transformer's revision from ``model_card_data.base_model_revision`` (there is no other field for it),
    so that is where the revision goes. A name or revision that is already set (from the Hub) is kept. The revision
    describes the weights as loaded: a model trained further in memory keeps it, so evaluate such a model with
    ``cache=None`` or save and reload it.

    Args:
        model: a loaded model (its ``model_card_data.model_name`` and ``base_model_revision`` are set in place).
        model_name_or_path: what the model was loaded from; only a local folder gives a name and a revision.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> model = torch.nn.Linear(2, 2)
        >>> model.model_card_data = SimpleNamespace(model_name=None, base_model_revision=None)
        >>> name_local_model(model, ".")
        >>> model.model_card_data.model_name.startswith("local/")
        True
        >>> model.model_card_data.base_model_revision == weights_revision(model)
        True
    """
    card_data = getattr(model, "model_card_data", None)
    if card_data is None or model_name_or_path is None:
        return
    path = Path(model_name_or_path)
    if not path.is_dir():
        return
    if not getattr(card_data, "model_name", None):
        card_data.model_name = f"local/{path.resolve().name}"
    if not getattr(card_data, "base_model_revision", None):
        revision = weights_revision(model)
        if revision is not None:
            card_data.base_model_revision = revision
