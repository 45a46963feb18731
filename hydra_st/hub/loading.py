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


def name_local_model(model: Any, model_name_or_path: str | os.PathLike[str] | None) -> None:
    """Give a model loaded from a local folder the name ``local/<folder>`` when it has none.

    sentence-transformers leaves ``model_card_data.model_name`` unset for local folders, and MTEB keys its result
    cache on that name (falling back to a placeholder shared by every unnamed model), so two local models would
    read each other's cached scores. A name the user set, or one from the Hub, is kept.

    Example:
        >>> from types import SimpleNamespace
        >>> model = SimpleNamespace(model_card_data=SimpleNamespace(model_name=None))
        >>> name_local_model(model, ".")
        >>> model.model_card_data.model_name.startswith("local/")
        True
    """
    card_data = getattr(model, "model_card_data", None)
    if card_data is None or getattr(card_data, "model_name", None) or model_name_or_path is None:
        return
    path = Path(model_name_or_path)
    if path.is_dir():
        card_data.model_name = f"local/{path.resolve().name}"
