"""Evaluate a Hydra model with MTEB: each MTEB task's card reaches ``encode_query`` / ``encode_document``.

MTEB calls ``model.encode_query(texts, prompt=..., **encode_kwargs)`` with no notion of a task card, so a plain
Hydra under MTEB would use its default (generic) head. :class:`HydraMTEBWrapper` picks a card per MTEB task and
passes it as ``task_card=``. The card is, in order of preference:

1. the one given for that task in ``cards`` (keyed by the MTEB task name);
2. the bundled card of the dataset: local tasks from :func:`hydra_st.evaluation.mteb_tasks.beir_retrieval_task`
   record it in their dataset path (``local/<name>``), and official tasks match by lower-cased name
   (``SciFact`` → ``scifact``, ``NFCorpus`` → ``nfcorpus``);
3. a card written from the task's own metadata (its name, description and domains), so any MTEB retrieval task
   gets a task-specific head, as an unseen task would.

MTEB's results cache keys on the model's name and revision (for a local folder, a digest of its weights). Given
``cards`` (or ``use_bundled_cards=False``), the wrapper also sets ``experiment_kwargs={"task_cards": <digest of the
cards>}``, which MTEB files under ``<revision>/experiments/``, so a run with other cards never returns the cached
scores of another card.

Importing this module needs the ``mteb`` extra (``pip install "hydra_st[mteb]"``).

Example:
    >>> import mteb  # doctest: +SKIP
    >>> from hydra_st import Hydra
    >>> from hydra_st.evaluation.mteb_tasks import beir_retrieval_task
    >>> from hydra_st.hydra.mteb import HydraMTEBWrapper
    >>> wrapper = HydraMTEBWrapper(Hydra("models/hydra-minilm-l6"))  # doctest: +SKIP
    >>> task = beir_retrieval_task("scifact", data_dir="/path/to/beir")  # doctest: +SKIP
    >>> mteb.evaluate(wrapper, task, cache=None).task_results[0].get_score()  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hydra_st.utils.hashing import fingerprint_texts
from hydra_st.utils.imports import require

from .cards import available_cards, load_card
from .task_card import MAX_DESCRIPTION_CHARS, MAX_FIELD_CHARS, MAX_NAME_CHARS, TaskCard, coerce_card

require("mteb", extra="mteb")

from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper  # noqa: E402


def card_from_metadata(task_metadata: Any) -> TaskCard:
    """A task card written from an MTEB task's metadata (name, description, domains).

    Example:
        >>> from types import SimpleNamespace
        >>> meta = SimpleNamespace(name="SciFact", description="Find evidence for a claim.",
        ...                        domains=["Academic", "Medical"], dataset={"path": "mteb/scifact"})
        >>> card_from_metadata(meta).domain
        'Academic, Medical'
    """
    name = re.sub(r"[^A-Za-z0-9_.\-]", "-", str(task_metadata.name)).strip("-_.")[:MAX_NAME_CHARS] or "mteb-task"
    description = " ".join(str(task_metadata.description or "").split())[:MAX_DESCRIPTION_CHARS]
    domains = ", ".join(str(d) for d in (getattr(task_metadata, "domains", None) or ()))[:MAX_FIELD_CHARS]
    return TaskCard(name=name, description=description or f"Retrieval task {name}.", domain=domains)


def bundled_card_name(task_metadata: Any) -> str | None:
    """The bundled card that describes an MTEB task's dataset, or None."""
    cards = set(available_cards())
    path = str((getattr(task_metadata, "dataset", None) or {}).get("path", ""))
    candidates = [path.removeprefix("local/"), path.rsplit("/", 1)[-1].lower(), str(task_metadata.name).lower()]
    return next((c for c in candidates if c in cards), None)


def card_experiment(cards: Mapping[str, TaskCard], use_bundled_cards: bool = True) -> dict[str, str]:
    """MTEB ``experiment_kwargs`` that tell apart runs of one model with other cards (empty for the default cards).

    Example:
        >>> card_experiment({})
        {}
        >>> card_experiment({}, use_bundled_cards=False)
        {'task_cards': 'metadata'}
        >>> sorted(card_experiment({"SciFact": load_card("scifact")}))
        ['task_cards']
    """
    experiment = {}
    if cards:
        names = sorted(cards)
        experiment["task_cards"] = fingerprint_texts(names, [cards[name].fingerprint for name in names])
    elif not use_bundled_cards:
        experiment["task_cards"] = "metadata"
    return experiment


class HydraMTEBWrapper(SentenceTransformerEncoderWrapper):
    """MTEB encoder wrapper for :class:`~hydra_st.hydra.model.Hydra` that passes each task's card.

    Args:
        model: A Hydra model (or any SentenceTransformer whose ``encode`` takes ``task_card``).
        cards: Cards by MTEB task name (a :class:`TaskCard`, a dict, a card file, or a bundled card name); they win
            over the bundled cards and the metadata cards.
        use_bundled_cards: Look up the bundled card of the task's dataset before writing one from metadata.
        **kwargs: Passed to ``SentenceTransformerEncoderWrapper`` (e.g. ``model_prompts``).

    Example:
        >>> from types import SimpleNamespace
        >>> from sentence_transformers import SentenceTransformer
        >>> from sentence_transformers.sentence_transformer.modules import Normalize
        >>> stand_in = SentenceTransformer(modules=[Normalize()], device="cpu")  # pass a Hydra model in real use
        >>> wrapper = HydraMTEBWrapper(stand_in, cards={"MyTask": "scifact"})
        >>> [wrapper.card_for(SimpleNamespace(name=n, dataset={"path": p})).name
        ...  for n, p in [("MyTask", "x/y"), ("NFCorpus", "mteb/nfcorpus")]]
        ['scifact', 'nfcorpus']
        >>> wrapper.cards_used
        {'MyTask': 'given', 'NFCorpus': 'bundled:nfcorpus'}
    """

    def __init__(
        self,
        model: Any,
        cards: Mapping[str, Any] | None = None,
        use_bundled_cards: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.cards = {name: coerce_card(card) for name, card in (cards or {}).items()}
        self.use_bundled_cards = use_bundled_cards
        self.cards_used: dict[str, str] = {}  # MTEB task name -> where its card came from (for reports)
        # MTEB files results under name / revision / experiment: the revision names the weights, the experiment
        # names the cards, so one model run with other cards never reads another run's cached scores
        experiment = card_experiment(self.cards, use_bundled_cards)
        if experiment:
            merged = {**(self.mteb_model_meta.experiment_kwargs or {}), **experiment}
            self.mteb_model_meta = self.mteb_model_meta.model_copy(update={"experiment_kwargs": merged})

    def card_for(self, task_metadata: Any) -> TaskCard:
        """The card used for an MTEB task (see the module docstring for the order)."""
        name = str(task_metadata.name)
        if name in self.cards:
            self.cards_used[name] = "given"
            return self.cards[name]
        bundled = bundled_card_name(task_metadata) if self.use_bundled_cards else None
        if bundled is not None:
            self.cards_used[name] = f"bundled:{bundled}"
            return load_card(bundled)
        self.cards_used[name] = "metadata"
        return card_from_metadata(task_metadata)

    def encode(self, inputs: Any, *, task_metadata: Any, hf_split: str, hf_subset: str, **kwargs: Any) -> Any:
        """Encode with the task's card (an explicit ``task_card`` in ``encode_kwargs`` is kept)."""
        kwargs.setdefault("task_card", self.card_for(task_metadata))
        return super().encode(inputs, task_metadata=task_metadata, hf_split=hf_split, hf_subset=hf_subset, **kwargs)
