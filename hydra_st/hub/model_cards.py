"""What the model cards of both families share: the base model's Hub id, and a loaded card moved to a new repo.

A card's ``base_model`` metadata links a model to its base on the Hub, so it must be a real Hub id or absent:
never a local folder, never a guess. And a loaded card pushed to another repository must name that repository in
its title and usage lines, where sentence-transformers only replaces its own placeholder id.

Example:
    >>> hub_model_id("sentence-transformers/all-MiniLM-L6-v2"), hub_model_id("/models/my-base")
    ('sentence-transformers/all-MiniLM-L6-v2', None)
"""

from __future__ import annotations

import os
import re
from typing import Any


def hub_model_id(value: Any) -> str | None:
    """``value`` if it can be a Hub model id (``owner/name``), else ``None``: a local folder, a path, or nothing.

    A relative path that does not exist here (``models/my-base`` from another working directory) cannot be told
    apart from a Hub id, and is taken as one.

    Example:
        >>> [hub_model_id(v) for v in ("org/model", "C:\\\\models\\\\x", "a/b/c", "model", None)]
        ['org/model', None, None, None, None]
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(value, str) or value.count("/") != 1 or os.path.isdir(value):
        return None
    try:
        validate_repo_id(value)
    except HFValidationError:
        return None
    return value


def transformer_base_id(model: Any) -> str | None:
    """The Hub id the model's (first) transformer was loaded from, unless it is the id of the whole model.

    A model built on a Hub id (``from_base("owner/name")``) knows its base this way. A model loaded whole from the
    Hub has that repository's id there instead; its class records the id it was loaded by as ``_loaded_name``.

    Example:
        >>> from sentence_transformers import SentenceTransformer
        >>> from sentence_transformers.sentence_transformer.modules import Pooling
        >>> transformer_base_id(SentenceTransformer(modules=[Pooling(8)])) is None
        True
    """
    for module in model.modules():
        config = getattr(getattr(module, "auto_model", None), "config", None)
        if config is not None:
            name_or_path = getattr(config, "_name_or_path", None)
            if name_or_path == getattr(model, "_loaded_name", None):
                return None
            return hub_model_id(name_or_path)
    return None


def card_base_model(card_text: str | None) -> str | None:
    """The one Hub id that a model card's YAML front matter gives as ``base_model``, else ``None``.

    Only the front matter counts (not a ``base_model:`` line in the card's text or code), a one-item list is that
    item, and a list of several (a merge) or an unreadable front matter gives ``None``.

    Example:
        >>> card_base_model("---\\nbase_model:\\n- org/base\\n---\\n# my model\\n")
        'org/base'
        >>> card_base_model("# no front matter\\nbase_model: org/base\\n") is None
        True
    """
    import yaml
    from huggingface_hub import ModelCard

    if not card_text or not card_text.lstrip().startswith("---"):
        return None
    try:
        base = ModelCard(card_text).data.to_dict().get("base_model")
    except (yaml.YAMLError, ValueError, TypeError):  # a front matter that does not parse: no metadata to trust
        return None
    if isinstance(base, list):
        base = base[0] if len(base) == 1 else None
    return hub_model_id(base)


def base_model_fields(base: str | None) -> dict[str, str]:
    """The template fields of a card's base model: ``base_model`` (as its text names it) and ``base_model_line``
    (the front-matter line, empty when no Hub id is known: the Hub would link the card to a wrong model).

    Example:
        >>> base_model_fields(None)
        {'base_model': '(a local model with no recorded Hub id)', 'base_model_line': ''}
    """
    if not base:
        return {"base_model": "(a local model with no recorded Hub id)", "base_model_line": ""}
    return {"base_model": f"`{base}`", "base_model_line": f"base_model: {base}\n"}


def retarget_card(card_text: str, model_class: str, model_id: str) -> str:
    """``card_text`` with the repository it names replaced by ``model_id``: its ``# title`` and every quoted
    occurrence of the id its ``model = <model_class>("...")`` usage line loads (``SentenceTransformer(...)`` too).

    A card without such a usage line is returned unchanged.

    Example:
        >>> card = '# old-name\\n\\nmodel = Hydra("org/old-name")\\nSentenceTransformer("org/old-name")\\n'
        >>> print(retarget_card(card, "Hydra", "me/new-name"))
        # new-name
        <BLANKLINE>
        model = Hydra("me/new-name")
        SentenceTransformer("me/new-name")
        <BLANKLINE>
    """
    found = re.search(rf'\b{re.escape(model_class)}\("([^"\n]+)"', card_text)
    if found is None or found.group(1) == model_id:
        return card_text
    old_id = found.group(1)
    text = card_text.replace(f'"{old_id}"', f'"{model_id}"')
    old_title, new_title = old_id.rstrip("/").split("/")[-1], model_id.rstrip("/").split("/")[-1]
    return re.sub(rf"^# {re.escape(old_title)}$", f"# {new_title}", text, count=1, flags=re.M)
