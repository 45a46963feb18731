#!/usr/bin/env bash
# Create .venv (if needed) and install hydra_st with its test and evaluation extras.
# On CPU-only machines the constraints file pins torch to the local CPU build, so no CUDA wheels are pulled.
# Elsewhere, install torch for your platform first, or drop the constraint: the package itself does not pin it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints/cpu.txt -e ".[dev]"
.venv/bin/python - <<'PY'
import torch
assert not torch.version.cuda or torch.cuda.is_available(), "a CUDA torch build was installed on a machine without a GPU"
print(f"hydra_st installed: torch {torch.__version__}")
PY
