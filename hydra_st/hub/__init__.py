"""Hugging Face Hub helpers: offline availability of the base model, names of local models."""

from __future__ import annotations

from hydra_st.hub.naming import name_local_model
from hydra_st.hub.offline import ensure_base_model, load_base_model

__all__ = ["ensure_base_model", "load_base_model", "name_local_model"]
