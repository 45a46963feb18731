"""hydra_st: hypernetwork retrieval models (Hydra, Hypencoder) as sentence-transformers models.

The model classes are imported lazily, so ``import hydra_st`` stays cheap and the data, teacher and evaluation
layers can be used without loading the model families.

Example:
    >>> import hydra_st
    >>> hydra_st.__version__
    '0.1.0'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Hydra": "hydra_st.hydra",
    "TaskCard": "hydra_st.hydra",
    "Hypencoder": "hydra_st.hypencoder",
    "load_dataset": "hydra_st.data",
    "evaluate_run": "hydra_st.evaluation",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hydra_st' has no attribute {name!r}")
