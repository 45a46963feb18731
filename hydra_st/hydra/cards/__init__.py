"""Bundled task cards, one per dataset under the shared BEIR data folder.

Each card was written from what its dataset is (its README and a look at its texts), never tuned on scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the card module imports this one lazily, so the import at run time stays local
    from hydra_st.hydra.task_card import TaskCard

_CARD_DIR = Path(__file__).resolve().parent


def available_cards() -> list[str]:
    """Names of the bundled cards, sorted.

    Example:
        >>> {"scifact", "nfcorpus", "adi"} <= set(available_cards())
        True
    """
    return sorted(p.stem for p in _CARD_DIR.glob("*.yaml"))


def card_path(name: str) -> Path:
    """Path of the bundled card ``name``.

    Raises:
        TaskCardError: (a ``ValueError``) there is no bundled card of that name; the message lists the available
            ones.
    """
    path = _CARD_DIR / f"{name}.yaml"
    if not path.is_file():
        from hydra_st.hydra.task_card import TaskCardError  # local: the card module imports this one lazily

        hint = ""
        if Path(name).suffix in {".yaml", ".yml", ".json"} or "/" in name:  # a file was meant, not a bundled name
            hint = "; to read a card file, use TaskCard.load(path) (or coerce_card, which takes either)"
        raise TaskCardError(f"no bundled task card {name!r}; available: {', '.join(available_cards())}{hint}")
    return path


def load_card(name: str) -> TaskCard:
    """Load the bundled card ``name``.

    Args:
        name: A bundled card's name (see :func:`available_cards`), e.g. ``"scifact"``.

    Returns:
        The :class:`~hydra_st.hydra.task_card.TaskCard`.

    Raises:
        TaskCardError: (a ``ValueError``) there is no bundled card of that name.

    Example:
        >>> load_card("scifact").name
        'scifact'
    """
    from hydra_st.hydra.task_card import TaskCard

    return TaskCard.load(card_path(name))
