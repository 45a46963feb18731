"""Hydra: task-card hypernetwork heads on a frozen sentence-transformer.

Example:
    >>> from hydra_st.hydra import TaskCard, load_card
    >>> load_card("scifact").name
    'scifact'
"""

from __future__ import annotations

from .card_encoder import TaskCardEncoder
from .cards import available_cards, load_card
from .generator import ProjectionHeadGenerator
from .losses import HydraLoss
from .model import Hydra
from .modules import HydraHead
from .preferences import PreferenceConfig, build_preferences
from .task_card import TaskCard, TaskCardError
from .trainer import HydraTrainer
from .training_config import TrainingConfig

__all__ = [
    "Hydra",
    "HydraHead",
    "HydraLoss",
    "HydraTrainer",
    "PreferenceConfig",
    "ProjectionHeadGenerator",
    "TaskCard",
    "TaskCardEncoder",
    "TaskCardError",
    "TrainingConfig",
    "available_cards",
    "build_preferences",
    "load_card",
]
