#!/usr/bin/env bash
# Create .venv (if needed) and install hydra_st with its test and evaluation extras.
#
# Without an NVIDIA GPU, a CPU build of torch goes in first, so that nothing pulls PyPI's CUDA wheels (several GB):
# from a local wheelhouse when pip is configured with one (find-links), else from the PyTorch CPU index. With a GPU,
# the package installs into whatever torch is there (the package itself only asks for torch>=2.2).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_CPU_VERSION=${TORCH_CPU_VERSION:-$(sed -n 's/^torch==//p' constraints/cpu.txt)}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip)
"${pip[@]}" install --quiet --upgrade pip
if ! command -v nvidia-smi >/dev/null 2>&1; then
    # exit 0: a CPU build is installed (kept, whatever its version); 1: a CUDA build; other: no torch
    if ! .venv/bin/python -c "import sys, torch; sys.exit(bool(torch.version.cuda))" 2>/dev/null; then
        # --no-deps: a wheelhouse may hold torch alone; its dependencies come with the package below
        "${pip[@]}" install --quiet --force-reinstall --no-deps --no-index "torch==${TORCH_CPU_VERSION}" 2>/dev/null \
            || "${pip[@]}" install --quiet --force-reinstall --index-url https://download.pytorch.org/whl/cpu \
                "torch==${TORCH_CPU_VERSION}"
    fi
    # pin the package's install to the torch now present, so no resolver step swaps it for a CUDA wheel
    pinned=$(mktemp)
    trap 'rm -f "$pinned"' EXIT
    .venv/bin/python -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" >"$pinned"
    "${pip[@]}" install --quiet -c "$pinned" -e ".[dev]"
else
    "${pip[@]}" install --quiet -e ".[dev]"
fi
.venv/bin/python - <<'PY'
import torch
assert not torch.version.cuda or torch.cuda.is_available(), "a CUDA torch build was installed on a machine without a GPU"
print(f"hydra_st installed: torch {torch.__version__}")
PY
