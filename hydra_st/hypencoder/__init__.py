"""Hypencoder: queries become small neural networks (q-nets) that score document vectors.

The family's public surface: the model (:class:`Hypencoder`), its sentence-transformers module (:class:`HyperHead`),
the q-net converters, the loss (:class:`HypencoderLoss`, for ``SentenceTransformerTrainer``), the training loop
(:func:`train_hypencoder` with :class:`HypencoderTrainingConfig`) and the converter of released checkpoints
(:func:`convert_checkpoint`).

Example:
    >>> from hydra_st.hypencoder import HypencoderTrainingConfig
    >>> HypencoderTrainingConfig(qnet_width=64, qnet_hidden_layers=1).converter(384).vector_dimensions
    [384, 64, 1]
"""

from __future__ import annotations

from hydra_st.hypencoder.convert import convert_checkpoint
from hydra_st.hypencoder.losses import HypencoderLoss
from hydra_st.hypencoder.model import Hypencoder
from hydra_st.hypencoder.modules import HyperHead
from hydra_st.hypencoder.qnet import QNetConverter, QNetParams, converter_from_config, register_converter
from hydra_st.hypencoder.training import HypencoderTrainingConfig, train_hypencoder

__all__ = [
    "Hypencoder",
    "HypencoderLoss",
    "HypencoderTrainingConfig",
    "HyperHead",
    "QNetConverter",
    "QNetParams",
    "convert_checkpoint",
    "converter_from_config",
    "register_converter",
    "train_hypencoder",
]
