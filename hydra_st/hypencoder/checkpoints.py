"""Checkpoints of :func:`~hydra_st.hypencoder.train_hypencoder`, and the output folder it saves the model into.

A checkpoint is a folder ``<output>/checkpoints/checkpoint-<step>/`` (``step`` = optimizer steps done) of three
files, with no pickle anywhere:

- ``training_state.safetensors``: the trained parameters (``model.<name>``), their values at the best validation
  step so far (``best.<name>``), the optimizer's per-parameter state (``optimizer.<index>.<key>``: AdamW's
  ``exp_avg``, ``exp_avg_sq`` and ``step``) and the torch random generators (``rng.torch``, ``rng.cuda``; uint8).
- ``trainer_state.json``: the step, the run's settings and a fingerprint of its training data, the optimizer's
  parameter groups, the learning-rate scheduler's and the fp16 gradient scaler's state, the batch sampler's
  ``random.Random`` state (numpy's generator draws nothing in the loop), the best validation step and score, the
  progress bar's running loss and the training seconds so far.
- ``training_log.json``: the log so far (the loss of every step, the validation scores).

Resuming restores all of it after the model, data and optimizer are built as in the original run, so the resumed
run ends with the weights of the uninterrupted run, bit for bit (same machine, same library versions). A checkpoint
of another run (other settings, other training data, other validation interval) is refused; only
:data:`RESUMABLE_CHANGES` may differ.

The model is saved into a temporary sibling of the output folder that then replaces the folder, so an old model
in it is never left half-replaced, and never replaced at all unless training succeeded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hydra_st.hypencoder.config_checks import RUN_MECHANICS, TrainingSetupError
from hydra_st.utils.io import (
    atomic_save_safetensors,
    atomic_write_json,
    replace_folder,
    replacing_folder,
    staging_folder,
)

CHECKPOINTS = "checkpoints"
STATE, META, LOG = "training_state.safetensors", "trainer_state.json", "training_log.json"
FORMAT = 1
RESUMABLE_CHANGES = RUN_MECHANICS  # the settings a resumed run may change


@dataclass
class LoopState:
    """What the training loop carries from one step to the next, besides the model, optimizer and scheduler.

    Attributes:
        step: optimizer steps done.
        log: the training log (``losses``, ``validation``, ...).
        best: ``(step, score, trained parameters by name)`` of the best validation so far, or ``None``.
        running: the progress bar's running loss.
        seconds: training seconds so far.
    """

    step: int
    log: dict[str, Any]
    best: tuple[int, float, dict[str, Tensor]] | None
    running: float | None
    seconds: float


def data_fingerprint(data: list[Any]) -> str:
    """A digest of the training examples (names, ids, query texts, candidates, teacher scores, positives)."""
    digest = hashlib.sha256()
    for ex in data:
        digest.update(json.dumps([ex.name, ex.doc_ids, ex.query_ids, ex.query_texts]).encode("utf-8"))
        for arrays in (ex.candidates, ex.teacher_scores, ex.positives):
            for array in arrays:
                array = np.ascontiguousarray(array)
                digest.update(f"{array.dtype}{array.shape}".encode())
                digest.update(array.tobytes())
    return digest.hexdigest()


def frozen_fingerprint(model: torch.nn.Module, trained: list[str]) -> str:
    """A digest of the model's tensors that do not train (a frozen base, a frozen document route): they are not in
    a checkpoint, so a resumed run must start from the same ones."""
    digest = hashlib.sha256()
    skip = set(trained)
    for key, value in sorted(model.state_dict().items()):
        if key not in skip:
            flat = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{key}{value.dtype}{tuple(value.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_folder(output: str | Path, step: int) -> Path:
    """``<output>/checkpoints/checkpoint-<step>``."""
    return Path(output) / CHECKPOINTS / f"checkpoint-{step}"


def save_checkpoint(
    output: str | Path,
    state: LoopState,
    *,
    model: torch.nn.Module,
    names: list[str],
    optimizer: Any,
    scheduler: Any,
    accelerator: Any,
    sampler: Any,
    config: Any,
    identity: dict[str, Any],
) -> Path:
    """Write ``<output>/checkpoints/checkpoint-<state.step>`` (atomically: a temporary folder renamed into place).

    Args:
        output: the run's output folder.
        state: the loop's state after ``state.step`` steps.
        model: the model being trained.
        names: names (``model.named_parameters()``) of the trained parameters.
        optimizer: the (prepared) optimizer.
        scheduler: the (prepared) learning-rate scheduler.
        accelerator: the run's accelerator (its fp16 gradient scaler, if any, is saved).
        sampler: the batch sampler's ``random.Random``.
        config: the run's ``HypencoderTrainingConfig``.
        identity: what else a resumed run must share (:func:`check_identity`).

    Returns:
        The checkpoint folder.
    """
    params = dict(model.named_parameters())
    tensors: dict[str, Tensor] = {f"model.{n}": params[n].detach() for n in names}
    if state.best is not None:
        tensors.update({f"best.{n}": state.best[2][n] for n in names})
    opt = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for index, entry in opt["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach()
            else:
                scalars[f"{index}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    version, internal, gauss = sampler.getstate()
    scaler = getattr(accelerator, "scaler", None)
    meta = {
        "format": FORMAT,
        "step": state.step,
        "config": asdict(config),
        "identity": identity,
        "trained_parameters": names,
        "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
        "scheduler": scheduler.state_dict(),
        "grad_scaler": scaler.state_dict() if scaler is not None else None,
        "sampler_rng": [version, list(internal), gauss],
        "best": None if state.best is None else {"step": state.best[0], "score": state.best[1]},
        "running_loss": state.running,
        "train_seconds": state.seconds,
    }
    folder = checkpoint_folder(output, state.step)
    with replacing_folder(folder) as tmp:
        atomic_save_safetensors(tmp / STATE, {k: v.cpu() for k, v in tensors.items()})
        atomic_write_json(tmp / META, meta)
        atomic_write_json(tmp / LOG, {**state.log, "train_seconds": state.seconds})
    return folder


@dataclass
class Checkpoint:
    """A checkpoint read from disk: its folder, ``trainer_state.json`` and ``training_log.json``."""

    path: Path
    meta: dict[str, Any]
    log: dict[str, Any]


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder ``path`` names: a checkpoint itself, or the latest ``checkpoint-<step>`` of an output
    folder (under ``checkpoints/``) or of a ``checkpoints`` folder."""
    path = Path(path)
    if (path / META).is_file():
        return path
    for folder in (path / CHECKPOINTS, path):
        found = [
            (int(m.group(1)), p)
            for p in (folder.iterdir() if folder.is_dir() else [])
            if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / META).is_file()
        ]
        if found:
            return max(found)[1]
    raise TrainingSetupError(
        f"resume_from={path}: not a Hypencoder checkpoint (no {META}) nor a folder of checkpoint-<step> folders",
        "resume_from",
    )


def read_checkpoint(path: str | Path, config: Any) -> Checkpoint:
    """Read the checkpoint ``path`` names (see :func:`find_checkpoint`) and refuse one of a run with other settings.

    Raises:
        TrainingSetupError: not a checkpoint, a damaged one, or one whose settings differ (named in the message).
    """
    folder = find_checkpoint(path)
    missing = [name for name in (STATE, META, LOG) if not (folder / name).is_file()]
    if missing:
        raise TrainingSetupError(f"checkpoint {folder} is incomplete (no {', '.join(missing)})", "resume_from")
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        log = json.loads((folder / LOG).read_text(encoding="utf-8"))
        saved = meta["config"]
        step = int(meta["step"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrainingSetupError(
            f"checkpoint {folder} is damaged ({exc!r}); resume from an earlier checkpoint or start over", "resume_from"
        ) from exc
    if meta.get("format") != FORMAT:
        raise TrainingSetupError(f"checkpoint {folder} has format {meta.get('format')!r}, not {FORMAT}", "resume_from")
    current = asdict(config)
    differences = [
        f"{key}: {saved.get(key, '(unset)')!r} in the checkpoint, {current.get(key, '(unset)')!r} now"
        for key in sorted(set(saved) | set(current))
        if key not in RESUMABLE_CHANGES and saved.get(key, "(unset)") != current.get(key, "(unset)")
    ]
    if differences:
        raise TrainingSetupError(
            f"checkpoint {folder} belongs to a run with other settings ({'; '.join(differences)}); resume with the "
            f"settings its {META} records, or start a new run",
            "resume_from",
        )
    if not 0 < step <= config.steps:
        raise TrainingSetupError(f"checkpoint {folder} is at step {step}, not in 1..{config.steps}", "resume_from")
    return Checkpoint(folder, meta, log)


def check_identity(checkpoint: Checkpoint, identity: dict[str, Any]) -> None:
    """Refuse a checkpoint whose training data, frozen weights or validation interval differ from this run's."""
    saved = checkpoint.meta.get("identity", {})
    digests = {"data": "training data", "frozen": "weights that do not train (e.g. a frozen base)"}
    counts = {"num_queries": "training queries", "eval_every": "validation interval"}
    differences = [
        f"{digests[key]}: other than the checkpoint's"
        if key in digests
        else f"{counts.get(key, key)}: {saved.get(key)!r} in the checkpoint, {value!r} now"
        for key, value in identity.items()
        if saved.get(key) != value
    ]
    if differences:
        raise TrainingSetupError(
            f"checkpoint {checkpoint.path} belongs to another run ({'; '.join(differences)})", "resume_from"
        )


def restore_checkpoint(
    checkpoint: Checkpoint,
    *,
    model: torch.nn.Module,
    names: list[str],
    optimizer: Any,
    scheduler: Any,
    accelerator: Any,
    sampler: Any,
) -> LoopState:
    """Load a checkpoint's trained parameters, optimizer, scheduler, gradient scaler and random generators into a
    run built as the original was; returns the loop's state at the checkpoint's step."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = checkpoint.meta
    try:
        tensors = load_file(str(checkpoint.path / STATE))
    except (SafetensorError, OSError) as exc:
        raise TrainingSetupError(f"checkpoint {checkpoint.path} is damaged ({exc})", "resume_from") from exc
    if meta.get("trained_parameters") != names:
        raise TrainingSetupError(
            f"checkpoint {checkpoint.path} trained other parameters than this model trains "
            f"({len(meta.get('trained_parameters') or [])} vs {len(names)} tensors)",
            "resume_from",
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in names:
            saved = tensors[f"model.{n}"]
            if saved.shape != params[n].shape or saved.dtype != params[n].dtype:
                raise TrainingSetupError(
                    f"checkpoint {checkpoint.path}: {n} is {tuple(saved.shape)} {saved.dtype}, the model's is "
                    f"{tuple(params[n].shape)} {params[n].dtype}",
                    "resume_from",
                )
            params[n].copy_(saved)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["optimizer"]["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["optimizer"]["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scheduler.load_state_dict(meta["scheduler"])
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None and meta.get("grad_scaler"):
        scaler.load_state_dict(meta["grad_scaler"])
    version, internal, gauss = meta["sampler_rng"]
    sampler.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        states = list(tensors["rng.cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    best = None
    if meta.get("best") is not None:
        saved_best = {n: tensors[f"best.{n}"].to(params[n].device) for n in names}
        best = (int(meta["best"]["step"]), float(meta["best"]["score"]), saved_best)
    return LoopState(int(meta["step"]), checkpoint.log, best, meta.get("running_loss"), float(meta["train_seconds"]))


def check_output_folder(output: Path, overwrite: bool, resume: Path | None) -> None:
    """Refuse, before any work, an output folder the run must not write into.

    An empty or missing folder is fine, as is the folder of the run being resumed (``resume`` lies in it). A folder
    that holds a model (``modules.json``) or another run's checkpoints needs ``overwrite`` (it is then replaced as a
    whole once training has succeeded); a non-empty folder that holds neither is refused (its files are not ours to
    delete).

    Raises:
        TrainingSetupError: naming the folder and the fix.
    """
    if output.exists() and not output.is_dir():
        raise TrainingSetupError(f"output {output} is a file, not a folder")
    entries = sorted(p.name for p in output.iterdir()) if output.is_dir() else []
    if not entries or (resume is not None and resume.resolve().is_relative_to(output.resolve())):
        return
    holds_model = (output / "modules.json").is_file()
    if not holds_model and not (output / CHECKPOINTS).is_dir():
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise TrainingSetupError(
            f"output folder {output} is not empty ({shown}) and holds no model: refusing to write a model into it "
            "or to delete its files; choose a new or empty folder"
        )
    if not overwrite:
        what = "a model (modules.json)" if holds_model else "another run's checkpoints"
        raise TrainingSetupError(
            f"output folder {output} already holds {what}; pass overwrite=True (CLI: --overwrite) to replace it once "
            "training has succeeded, resume_from=<its checkpoint> to continue that run, or choose another folder"
        )
    real, cwd = output.resolve(), Path.cwd().resolve()
    if real == Path(real.anchor) or real == Path.home().resolve() or cwd.is_relative_to(real):
        raise TrainingSetupError(f"refusing to replace {output}: it is the root, the home or the working folder")


def save_run(model: Any, output: Path, config: Any, log: dict[str, Any], own_checkpoints: bool) -> None:
    """Save the trained model, its card, ``training_config.json`` and ``training_log.json`` into a temporary
    sibling of ``output``, move this run's ``checkpoints/`` (if ``own_checkpoints``) into it, and swap it in for
    ``output`` (whose old content, e.g. a replaced model, is then deleted)."""
    from hydra_st.hypencoder.model_card import save_with_card

    tmp = staging_folder(output)
    moved = False
    try:
        save_with_card(model, tmp, model_id=output.name, config=asdict(config))
        atomic_write_json(tmp / "training_log.json", log)
        if own_checkpoints and (output / CHECKPOINTS).is_dir():
            os.replace(output / CHECKPOINTS, tmp / CHECKPOINTS)
            moved = True
        replace_folder(tmp, output)
    except BaseException:
        if moved and (tmp / CHECKPOINTS).is_dir() and not (output / CHECKPOINTS).exists():
            os.replace(tmp / CHECKPOINTS, output / CHECKPOINTS)  # keep the checkpoints where the run can resume
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_checkpoints(output: Path) -> None:
    """Delete ``<output>/checkpoints`` (a replaced run's), before this run writes its first checkpoint there."""
    folder = output / CHECKPOINTS
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder)
