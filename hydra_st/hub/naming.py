"""Names for models loaded from local folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


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
