"""Task cards: a structured, validated, deterministic description of a retrieval task.

A :class:`TaskCard` is what Hydra conditions on. It says what the task is (a description, a domain, the kind
of query), shows a few example queries and documents, and says what counts as relevant. The card is rendered
to a single text deterministically, so the same card always gives the same conditioning vector and the same
cache key.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .card_encoder import card_fingerprint, render_card

MAX_NAME_CHARS = 64
MAX_DESCRIPTION_CHARS = 2000
MAX_FIELD_CHARS = 500
MAX_EXAMPLES = 8
MAX_EXAMPLE_CHARS = 1000
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")  # used with fullmatch: '$' would pass "name\n"
_FIELDS = ("name", "description", "domain", "query_type", "example_queries", "example_documents", "relevance")
_YAML_SUFFIXES = (".yaml", ".yml")
_CARD_SUFFIXES = (*_YAML_SUFFIXES, ".json")


class TaskCardError(ValueError):
    """A task card is malformed; the message names the field and the fix."""


@cache
def _unique_key_yaml_loader() -> type:
    """A ``yaml.SafeLoader`` that rejects duplicate mapping keys (PyYAML keeps the last one silently)."""
    import yaml

    class UniqueKeySafeLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # a complex key is rejected later, as an unknown field
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise TaskCardError(f"duplicate key {key!r} in task card YAML (line {line}); keep only one")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeySafeLoader


@dataclass(frozen=True)
class TaskCard:
    """A retrieval task description that Hydra turns into a task-specific embedding head.

    Args:
        name: Short identifier (letters, digits, ``_ . -``), e.g. ``"scifact"``.
        description: What the task is, in one or a few sentences. Must not be empty.
        domain: The subject area of the documents, e.g. ``"biomedical literature"``.
        query_type: What a query looks like, e.g. ``"a scientific claim"``.
        example_queries: Up to 8 example queries (each at most 1,000 characters).
        example_documents: Up to 8 example documents (each at most 1,000 characters).
        relevance: What makes a document relevant to a query.

    Example:
        >>> card = TaskCard(name="toy", description="Find recipes for a dish.", domain="cooking",
        ...                 query_type="a dish name", example_queries=["pancakes"],
        ...                 example_documents=["Mix flour, eggs and milk."], relevance="the recipe makes the dish")
        >>> TaskCard.from_json(card.to_json()) == card
        True
        >>> card.render().splitlines()[0]
        'Task: toy'
    """

    name: str
    description: str
    domain: str = ""
    query_type: str = ""
    example_queries: tuple[str, ...] = field(default_factory=tuple)
    example_documents: tuple[str, ...] = field(default_factory=tuple)
    relevance: str = ""

    def __post_init__(self) -> None:
        for list_field in ("example_queries", "example_documents"):
            value = getattr(self, list_field)
            if isinstance(value, list):
                object.__setattr__(self, list_field, tuple(value))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`TaskCardError` naming the first problem found."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise TaskCardError("TaskCard.name must be a non-empty string, e.g. name='scifact'")
        if len(self.name) > MAX_NAME_CHARS or not _NAME_RE.fullmatch(self.name):
            raise TaskCardError(
                f"TaskCard.name {self.name!r} must be at most {MAX_NAME_CHARS} characters of letters, digits, "
                "'_', '.', '-', starting with a letter or digit"
            )
        if not isinstance(self.description, str):
            raise TaskCardError(f"TaskCard.description must be a string, got {type(self.description).__name__}")
        if not self.description.strip():
            raise TaskCardError("TaskCard.description is empty: describe the task in at least one sentence")
        if len(self.description) > MAX_DESCRIPTION_CHARS:
            raise TaskCardError(
                f"TaskCard.description has {len(self.description)} characters; shorten it to at most "
                f"{MAX_DESCRIPTION_CHARS}"
            )
        for name in ("domain", "query_type", "relevance"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TaskCardError(f"TaskCard.{name} must be a string, got {type(value).__name__}")
            if len(value) > MAX_FIELD_CHARS:
                raise TaskCardError(
                    f"TaskCard.{name} has {len(value)} characters; shorten it to at most {MAX_FIELD_CHARS}"
                )
        for name in ("example_queries", "example_documents"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                raise TaskCardError(f"TaskCard.{name} must be a list of strings, got {type(value).__name__}")
            if len(value) > MAX_EXAMPLES:
                raise TaskCardError(f"TaskCard.{name} has {len(value)} items; keep at most {MAX_EXAMPLES}")
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    raise TaskCardError(f"TaskCard.{name}[{i}] must be a string, got {type(item).__name__}")
                if not item.strip():
                    raise TaskCardError(f"TaskCard.{name}[{i}] is empty: remove it or give its text")
                if len(item) > MAX_EXAMPLE_CHARS:
                    raise TaskCardError(
                        f"TaskCard.{name}[{i}] has {len(item)} characters; cut it to at most {MAX_EXAMPLE_CHARS}"
                    )

    # ------------------------------------------------------------------ rendering
    def render(self) -> str:
        """Render the card to one text, deterministically (same card → same bytes)."""
        return render_card(self.to_dict())

    @property
    def fingerprint(self) -> str:
        """A content hash of the card (every field counts); the key of the compiled-head cache."""
        return card_fingerprint(self.to_dict())

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (lists, not tuples)."""
        data = asdict(self)
        data["example_queries"] = list(self.example_queries)
        data["example_documents"] = list(self.example_documents)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> TaskCard:
        """Build a card from a mapping, rejecting unknown keys and wrong types with a clear error."""
        if not isinstance(data, dict):
            raise TaskCardError(f"a task card must be a mapping of fields, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_FIELDS), key=str)  # YAML keys may be numbers: `1: x`
        if unknown:
            raise TaskCardError(f"unknown task card field(s) {unknown}; allowed fields are {list(_FIELDS)}")
        missing = [k for k in ("name", "description") if k not in data]
        if missing:
            raise TaskCardError(f"task card is missing required field(s) {missing}")
        kwargs = dict(data)
        for key in ("example_queries", "example_documents"):
            if key in kwargs:
                value = kwargs[key]
                if value is None:
                    value = []
                if isinstance(value, str) or not isinstance(value, list | tuple):
                    raise TaskCardError(f"TaskCard.{key} must be a list of strings, got {type(value).__name__}")
                kwargs[key] = tuple(value)
        for key in ("domain", "query_type", "relevance"):
            if kwargs.get(key) is None and key in kwargs:
                kwargs[key] = ""
        return cls(**kwargs)

    def to_json(self, indent: int | None = 2) -> str:
        """Serialise to JSON (keys in a fixed order)."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> TaskCard:
        """Parse a card from JSON text."""
        from hydra_st.utils.io import DuplicateKeyError, reject_duplicate_keys

        try:
            # json.loads would keep the last of two equal keys silently, so a card edited twice reads as one edit
            data = json.loads(text, object_pairs_hook=reject_duplicate_keys)
        except json.JSONDecodeError as exc:
            raise TaskCardError(f"task card JSON does not parse: {exc}") from exc
        except DuplicateKeyError as exc:
            raise TaskCardError(f"duplicate key {exc.key!r} in task card JSON; keep only one") from None
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        """Serialise to YAML (block style, keys in a fixed order)."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=110)

    @classmethod
    def from_yaml(cls, text: str) -> TaskCard:
        """Parse a card from YAML text (a ``yaml.SafeLoader``: no arbitrary objects; duplicate keys rejected)."""
        import yaml

        try:
            data = yaml.load(text, Loader=_unique_key_yaml_loader())  # a SafeLoader subclass: safe
        except yaml.YAMLError as exc:
            raise TaskCardError(f"task card YAML does not parse: {exc}") from exc
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the card atomically; ``.yaml``/``.yml`` gives YAML, anything else JSON."""
        from hydra_st.utils.io import atomic_write_text

        path = Path(path)
        atomic_write_text(path, self.to_yaml() if path.suffix.lower() in _YAML_SUFFIXES else self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TaskCard:
        """Read a card from a ``.yaml``/``.yml`` or ``.json`` file (any case), UTF-8 with or without a BOM."""
        path = Path(path)
        if path.is_dir():
            raise TaskCardError(f"task card file {path} is a directory; give the path of the card file")
        if not path.is_file():
            raise FileNotFoundError(f"task card file {path} does not exist")
        try:
            # utf-8-sig: editors on Windows add a BOM, which the JSON parser would otherwise reject.
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise TaskCardError(
                f"{path}: not valid UTF-8 (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                "re-save the card as UTF-8"
            ) from None
        try:
            return cls.from_yaml(text) if path.suffix.lower() in _YAML_SUFFIXES else cls.from_json(text)
        except TaskCardError as exc:
            raise TaskCardError(f"{path}: {exc}") from exc


def coerce_card(card: TaskCard | dict[str, Any] | str | os.PathLike[str]) -> TaskCard:
    """Accept a :class:`TaskCard`, a dict, a card file path, or the name of a bundled card."""
    if isinstance(card, TaskCard):
        return card
    if isinstance(card, dict):
        return TaskCard.from_dict(card)
    if isinstance(card, str | os.PathLike):
        path = Path(card)
        has_card_suffix = path.suffix.lower() in _CARD_SUFFIXES
        if has_card_suffix and path.exists():
            return TaskCard.load(path)
        from hydra_st.hydra.cards import available_cards, load_card

        if str(card) in available_cards():
            return load_card(str(card))
        # A value that looks like a path was meant as a file: saying so beats listing the bundled names.
        if has_card_suffix or isinstance(card, os.PathLike) or "/" in str(card) or os.sep in str(card):
            if not path.exists():
                raise TaskCardError(f"card file {str(card)!r} does not exist; check the path")
            raise TaskCardError(f"{str(card)!r} is not a task card file: give a .yaml, .yml or .json file")
        raise TaskCardError(
            f"{card!r} is neither a task card file nor a bundled card name ({', '.join(available_cards())})"
        )
    raise TaskCardError(f"expected a TaskCard, dict, card file or bundled card name, got {type(card).__name__}")
