"""Where hydra_st reads data and keeps its caches.

Every location can be set three ways, strongest first: an explicit argument (the CLI's ``--data-dir`` /
``--cache-dir``), an environment variable, and a default under ``~/.cache/hydra_st``.

Example:
    >>> import os
    >>> from unittest import mock
    >>> from hydra_st.settings import resolve_data_dir
    >>> with mock.patch.dict(os.environ, {"HYDRA_ST_DATA_DIR": "/tmp/beir"}):  # restored after the block
    ...     str(resolve_data_dir()), str(resolve_data_dir("/data/mine"))
    ('/tmp/beir', '/data/mine')
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""The frozen base encoder of both model families."""

DATA_DIR_ENV = "HYDRA_ST_DATA_DIR"
CACHE_DIR_ENV = "HYDRA_ST_CACHE_DIR"


def _default_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "hydra_st"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the cache directory: ``cache_dir`` > ``$HYDRA_ST_CACHE_DIR`` > ``~/.cache/hydra_st``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else _default_root()


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder holding BEIR-layout datasets, one sub-folder per dataset.

    ``data_dir`` > ``$HYDRA_ST_DATA_DIR`` > ``<cache dir>/datasets`` (where downloads go when online).
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else resolve_cache_dir() / "datasets"


def set_default_dirs(
    data_dir: str | os.PathLike[str] | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> None:
    """Make ``data_dir`` / ``cache_dir`` this process's defaults, for scripts whose ``--data-dir`` / ``--cache-dir``
    must reach every loader they call (and the processes they start).

    It sets the environment variables that :func:`resolve_data_dir` and :func:`resolve_cache_dir` read; ``None``
    leaves a variable as it is.

    Example:
        >>> import os
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {}):  # restored after the block
        ...     set_default_dirs("/data/beir")
        ...     str(resolve_data_dir())
        '/data/beir'
    """
    if data_dir is not None:
        os.environ[DATA_DIR_ENV] = os.fspath(Path(data_dir).expanduser())
    if cache_dir is not None:
        os.environ[CACHE_DIR_ENV] = os.fspath(Path(cache_dir).expanduser())
