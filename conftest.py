"""Root pytest configuration: docstring examples of the package run as doctests (see ``[tool.pytest.ini_options]``).

Modules that import an optional extra at import time are left out of doctest collection when that extra is
missing, so a minimal install can still run the suite.
"""

from __future__ import annotations

import importlib.util

_OPTIONAL_MODULES = {
    "hydra_st/hydra/mteb.py": "mteb",
    "hydra_st/hypencoder/mteb.py": "mteb",
    "hydra_st/retrieval/beir_search.py": "beir",
}

collect_ignore = [path for path, module in _OPTIONAL_MODULES.items() if importlib.util.find_spec(module) is None]
