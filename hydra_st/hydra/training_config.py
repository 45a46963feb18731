"""The hyper-parameters of a Hydra training run (:class:`TrainingConfig`), checked when it is built."""

from __future__ import annotations

from dataclasses import dataclass, field

from .losses import HydraLoss

_ZERO_MEANS = {
    "eval_every": "once per epoch",
    "patience": "never stop early",
    "checkpoint_every": "only checkpoint-final",
    "max_queries_per_task": "all",
}


@dataclass
class TrainingConfig:
    """Hyper-parameters of a Hydra training run.

    Args:
        epochs: Passes over all tasks' training queries.
        batch_size: Queries per step (one task per step).
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        loss_weights: Weights of the loss terms (see :class:`HydraLoss`).
        view_dropout: Probability of zeroing each card view during training.
        init: ``"pca"`` (W0 = principal directions of the training corpora, centred) or ``"identity"``.
        eval_every: Steps between dev evaluations (0: once per epoch). Only evaluated states compete in model
            selection (the untrained state at step 0 too): the steps after the last multiple of ``eval_every`` are
            trained but not kept, unless ``eval_final`` is on (the trainer warns, and says so in its summary).
        patience: Dev evaluations without improvement before stopping (0: never stop early).
        seed: Seed of batch order and dropout.
        checkpoint_every: Steps between checkpoints (0: only at the end).
        max_queries_per_task: Training queries drawn per task per epoch (0: all); balances tasks and time.
        show_progress_bar: Show a tqdm bar.
        eval_final: Also evaluate the last step's state on dev when it is not an ``eval_every`` step, so that it
            competes in model selection too. Off by default (the published models were selected without it); a
            config saved before this option existed loads with it off.

    Example:
        >>> config = TrainingConfig(epochs=2, init="identity")
        >>> config.batch_size, config.learning_rate, config.loss_weights
        (32, 0.001, {'pairwise': 1.0, 'anchor': 2.0})
        >>> TrainingConfig(init="random")
        Traceback (most recent call last):
        ...
        ValueError: TrainingConfig.init must be 'pca' or 'identity', got 'random'
    """

    epochs: int = 4
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    loss_weights: dict[str, float] = field(default_factory=lambda: {"pairwise": 1.0, "anchor": 2.0})
    view_dropout: float = 0.25
    init: str = "pca"
    eval_every: int = 0
    patience: int = 0
    seed: int = 0
    checkpoint_every: int = 0
    max_queries_per_task: int = 400
    show_progress_bar: bool = True
    eval_final: bool = False

    def __post_init__(self) -> None:
        if self.init not in ("pca", "identity"):
            raise ValueError(f"TrainingConfig.init must be 'pca' or 'identity', got {self.init!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ValueError("epochs and batch_size must be >= 1 and learning_rate > 0")
        for name in ("eval_every", "patience", "checkpoint_every", "max_queries_per_task"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"TrainingConfig.{name} must be >= 0 (0: {_ZERO_MEANS[name]}), got {getattr(self, name)}"
                )
        if not 0 <= self.view_dropout < 1:
            raise ValueError(f"view_dropout must be in [0, 1), got {self.view_dropout}")
        HydraLoss(self.loss_weights)  # validates the names and weights
