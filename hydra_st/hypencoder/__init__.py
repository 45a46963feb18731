"""Hypencoder: queries become small neural networks (q-nets) that score document vectors."""

from __future__ import annotations

from hydra_st.hypencoder.model import Hypencoder
from hydra_st.hypencoder.modules import HyperHead
from hydra_st.hypencoder.qnet import QNetConverter, QNetParams, converter_from_config, register_converter

__all__ = ["Hypencoder", "HyperHead", "QNetConverter", "QNetParams", "converter_from_config", "register_converter"]
