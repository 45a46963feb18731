"""Up-front checks of a Hypencoder training run: the settings' types and ranges, the machine, the process count.

:meth:`~hydra_st.hypencoder.HypencoderTrainingConfig.check` calls :func:`check_fields`, and
:func:`~hydra_st.hypencoder.train_hypencoder` calls :func:`check_machine` next, both before any model, teacher or
cache is built, so a wrong setting fails in a second with a message naming the field, not deep in torch after the
data preparation. Values that YAML 1.1 (``yaml.safe_load``) reads as strings are converted where the meaning is
clear: ``learning_rate: 1e-4`` (a string to YAML 1.1) becomes ``0.0001``, ``datasets: adi`` (or ``adi,med``)
becomes ``["adi"]`` (``["adi", "med"]``), ``freeze_base: "no"`` becomes ``False``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

RUN_MECHANICS = ("data_dir", "cache_dir", "checkpoint_every", "resume_from")
"""Training settings that say where files are and how a run is checkpointed, not what it computes: a resumed run
may change them, and a model card leaves them out."""

# Smallest allowed value of each whole-number setting.
INT_MINIMUM = {
    "num_pseudo_queries": 1,
    "qnet_hidden_layers": 0,
    "qnet_width": 1,
    "steps": 1,
    "batch_size": 1,
    "num_negatives": 1,
    "warmup_steps": 0,
    "depth": 2,  # a positive and at least one negative candidate
    "max_queries_per_dataset": 1,
    "seed": 0,
    "checkpoint_every": 0,
}
# Number settings: True = must be > 0, False = must be >= 0.
FLOAT_POSITIVE = {
    "learning_rate": True,
    "qnet_lr_scale": True,
    "base_learning_rate": True,
    "label_scale": True,
    "weight_decay": False,
    "margin_weight": False,
    "in_batch_weight": False,
    "rrf_k": False,
}
STR_CHOICES = {"document_pooling": ("mean", "cls"), "mixed_precision": ("no", "bf16", "fp16")}
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
# Environment variables through which launchers (torchrun, accelerate launch, MPI) give the process count.
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


class TrainingSetupError(ValueError):
    """A setting, the machine, the output folder or a checkpoint does not allow the run; raised before training.

    Attributes:
        field: the setting to blame (a :class:`~hydra_st.hypencoder.HypencoderTrainingConfig` field), or ``None``.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def check_fields(config: Any) -> None:
    """Check (and convert in place) every field of a ``HypencoderTrainingConfig``, then the cross-field rules.

    Raises:
        TrainingSetupError: the first bad field, named in the message and in ``field``.

    Example:
        >>> from hydra_st.hypencoder import HypencoderTrainingConfig
        >>> config = HypencoderTrainingConfig(learning_rate="1e-4", datasets="adi,med", freeze_base="yes")
        >>> check_fields(config)
        >>> config.learning_rate, config.datasets, config.freeze_base
        (0.0001, ['adi', 'med'], True)
        >>> check_fields(HypencoderTrainingConfig(steps=0))
        Traceback (most recent call last):
        ...
        hydra_st.hypencoder.config_checks.TrainingSetupError: steps must be >= 1, got 0
    """
    for f in dataclasses.fields(config):
        setattr(config, f.name, checked_value(f.name, str(f.type), getattr(config, f.name)))
    if config.split == "test":
        raise TrainingSetupError("split: Hypencoder training never reads the test split; use split=train", "split")
    if config.query_side_only and (config.freeze_base or config.shared_transformer):
        raise TrainingSetupError(
            "query_side_only trains the query route's own transformer: set freeze_base=False and "
            "shared_transformer=False (a shared transformer would change the cached document vectors too)",
            "query_side_only",
        )
    if not config.margin_weight and not config.in_batch_weight:
        raise TrainingSetupError(
            "margin_weight and in_batch_weight are both 0: the loss would be 0; make at least one > 0", "margin_weight"
        )


def checked_value(name: str, kind: str, value: Any) -> Any:
    """``value`` of field ``name`` (annotated ``kind``, e.g. ``"int | None"``), converted and range-checked.

    Example:
        >>> checked_value("steps", "int", "300"), checked_value("rrf_k", "float", 60)
        (300, 60)
        >>> checked_value("datasets", "list[str]", "scifact")
        ['scifact']
    """
    optional = kind.endswith(" | None")
    base = kind.removesuffix(" | None")
    if value is None and (optional or base == "list[str]"):
        return [] if base == "list[str]" else None
    if base == "int":
        return _whole_number(name, value)
    if base == "float":
        return _number(name, value)
    if base == "bool":
        return _flag(name, value)
    if base == "list[str]":
        return _names(name, value)
    if base == "str":
        return _text(name, value, optional)
    raise TypeError(f"check_fields has no rule for {name}: {kind}")  # a new field of a new type: add its rule


def _whole_number(name: str, value: Any) -> int:
    minimum = INT_MINIMUM.get(name, 0)
    original = value
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)  # "1e4": a string to YAML 1.1
            except ValueError:
                raise TrainingSetupError(f"{name} must be a whole number, got {original!r}", name) from None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TrainingSetupError(f"{name} must be a whole number, got {original!r}", name)
    if value < minimum:
        raise TrainingSetupError(f"{name} must be >= {minimum}, got {original!r}", name)
    return value


def _number(name: str, value: Any) -> float | int:
    positive = FLOAT_POSITIVE.get(name, False)
    original = value
    if isinstance(value, str):  # "1e-4" and "2e-5" are strings to YAML 1.1
        try:
            value = float(value.strip())
        except ValueError:
            raise TrainingSetupError(f"{name} must be a number, got {original!r}", name) from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TrainingSetupError(f"{name} must be a (finite) number, got {original!r}", name)
    if value < 0 or (positive and value == 0):
        raise TrainingSetupError(f"{name} must be {'>' if positive else '>='} 0, got {original!r}", name)
    return value  # an int stays an int (what the run computes and records does not change)


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise TrainingSetupError(f"{name} must be true or false, got {value!r}", name)


def _names(name: str, value: Any) -> list[str]:
    if isinstance(value, str):  # datasets=adi (or adi,med): a bare string, not a list of letters
        value = [part.strip() for part in value.split(",")] if value.strip() else []
    if not isinstance(value, list | tuple):
        raise TrainingSetupError(f"{name} must be a list of dataset names, e.g. [scifact, med], got {value!r}", name)
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise TrainingSetupError(f"{name}: each entry must be a dataset name, got {item!r} in {value!r}", name)
    return [item.strip() for item in value]


def _text(name: str, value: Any, optional: bool) -> str:
    if optional and isinstance(value, os.PathLike):
        value = os.fspath(value)  # a Path: recorded as text in training_config.json
    if not isinstance(value, str) or not value.strip():
        raise TrainingSetupError(f"{name} must be a non-empty string, got {value!r}", name)
    if name in STR_CHOICES and value not in STR_CHOICES[name]:
        raise TrainingSetupError(f"{name} must be one of {list(STR_CHOICES[name])}, got {value!r}", name)
    if name == "device":
        import torch

        try:
            torch.device(value)
        except RuntimeError as exc:
            raise TrainingSetupError(f"device: {value!r} is not a torch device ({exc}); e.g. cpu, cuda", name) from exc
    return value


def world_size() -> int:
    """The process count a launcher (torchrun, ``accelerate launch``, MPI) gave this process; 1 without one."""
    for variable in WORLD_SIZE_VARIABLES:
        raw = os.environ.get(variable, "").strip()
        if raw.isdigit():
            return int(raw)
    return 1


def check_machine(config: Any) -> None:
    """Refuse, before any work, a run this machine cannot do: a GPU device without one, fp16 on the CPU, bf16 on a
    GPU without bf16, or several processes (the loop is single-process).

    Raises:
        TrainingSetupError: naming the setting and the fix.
    """
    import torch

    if world_size() > 1:
        raise TrainingSetupError(
            f"train_hypencoder runs in one process (one GPU or the CPU), this launch has {world_size()}; launch it "
            "without multi-process accelerate/torchrun, or use HypencoderLoss with SentenceTransformerTrainer for "
            "data parallelism"
        )
    device = torch.device(config.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "none found" if torch.version.cuda else f"torch {torch.__version__} is built without CUDA"
            raise TrainingSetupError(
                f"device={config.device} but no CUDA device is available ({why}): this recipe "
                "needs a GPU; to train on the CPU set device=cpu and mixed_precision=no (a trainable BERT-base is "
                "very slow there: see training_recipes/hypencoder/README.md)",
                "device",
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TrainingSetupError(
                f"device={config.device} but this machine has {torch.cuda.device_count()} CUDA device(s)", "device"
            )
        if config.mixed_precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise TrainingSetupError(
                "mixed_precision=bf16 but this GPU has no bfloat16 support; use mixed_precision=fp16 or no",
                "mixed_precision",
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise TrainingSetupError(f"device={config.device} but MPS is not available; set device=cpu", "device")
    if config.mixed_precision == "fp16" and device.type == "cpu":
        raise TrainingSetupError(
            "mixed_precision=fp16 needs a GPU (on the CPU accelerate does no float16 autocast or loss scaling); "
            "use mixed_precision=bf16 or no with device=cpu",
            "mixed_precision",
        )


def read_cli_settings(config_path: str | None, overrides: list[str], known: set[str], sources: dict[str, str]) -> dict:
    """The settings of a recipe file and ``key=value`` overrides (values parsed as YAML); ``sources`` gets, per
    setting, the recipe file or the override it came from, for error messages.

    Raises:
        TrainingSetupError: an unreadable recipe, an override without ``=``, or an unknown setting.
    """
    import yaml

    values: dict[str, Any] = {}
    if config_path:
        try:
            loaded = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise TrainingSetupError(f"--config {config_path}: cannot read it ({' '.join(str(exc).split())})") from exc
        if not isinstance(loaded, dict | None):
            raise TrainingSetupError(f"--config {config_path}: a recipe maps settings to values, not a {type(loaded)}")
        values.update(loaded or {})
        sources.update({key: f"{config_path} ({key})" for key in values})
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise TrainingSetupError(f"override {item!r}: expected key=value, e.g. steps=100")
        try:
            values[key] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise TrainingSetupError(f"override {item!r}: not a YAML value ({' '.join(str(exc).split())})") from exc
        sources[key] = f"override {item!r}"
    unknown = sorted(set(values) - known)
    if unknown:
        where = ", ".join(sources[key] for key in unknown)
        raise TrainingSetupError(f"unknown training settings {unknown} ({where}); known: {sorted(known)}")
    return values
