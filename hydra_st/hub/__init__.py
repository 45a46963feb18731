"""Hugging Face Hub helpers: offline availability of the base model; loading saved models safely."""

from __future__ import annotations

from hydra_st.hub.loading import (
    check_tokenizers,
    explained_load_errors,
    name_local_model,
    safetensors_only,
    weights_revision,
)
from hydra_st.hub.offline import ensure_base_model, load_base_model

__all__ = [
    "check_tokenizers",
    "ensure_base_model",
    "explained_load_errors",
    "load_base_model",
    "name_local_model",
    "safetensors_only",
    "weights_revision",
]
