"""Checkpoints of :class:`~hydra_st.hydra.trainer.HydraTrainer`: write, check and restore.

A checkpoint folder (``checkpoint-<step>`` or ``checkpoint-final``) holds ``training_state.safetensors`` (the head,
the flattened AdamW state, the best-dev state and each process's view-dropout generator state) and
``trainer_state.json`` (step, config, dev history, the tasks and settings of the run, the fp16 scaler state), so a
resumed run ends with the uninterrupted run's weights. The folder is written whole or not at all (built aside, then
renamed into place). A checkpoint of another run (other config, tasks, cards, seed
or number of processes) is refused with :class:`CheckpointError`, which names what differs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hydra_st.utils.io import atomic_save_safetensors, atomic_write_json, replacing_folder

if TYPE_CHECKING:  # the trainer imports this module; its class is only needed for the annotations
    from .trainer import HydraTrainer

logger = logging.getLogger(__name__)

CHECKPOINT_FILES = ("training_state.safetensors", "trainer_state.json")
"""The files of one checkpoint folder."""


def check_checkpoint_folder(path: Path) -> None:
    """Raise ``FileNotFoundError`` unless ``path`` holds a Hydra checkpoint's files (:data:`CHECKPOINT_FILES`);
    cheap, so a command can check ``--resume-from`` before it loads a model."""
    if not all((path / name).is_file() for name in CHECKPOINT_FILES):
        raise FileNotFoundError(f"{path} is not a Hydra checkpoint (needs {' and '.join(CHECKPOINT_FILES)})")


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed from: corrupt, of another head, or written by another run (the message says
    which, and the fix)."""


RUN_INDEPENDENT_FIELDS = ("show_progress_bar", "checkpoint_every", "eval_final")
""":class:`~hydra_st.hydra.trainer.TrainingConfig` fields that do not change the training trajectory: a resume may
change them (a resumed run then computes what an uninterrupted run with the new values computes); the others must
equal those the checkpoint was written with."""


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so saved and current settings compare equal."""
    return json.loads(json.dumps(value))


def save_checkpoint(
    trainer: HydraTrainer, accelerator: Any, optimizer: Any, epoch: int, gen: torch.Generator, final: bool = False
) -> None:
    """Write ``checkpoint-<step>`` (or ``checkpoint-final``); called on every process, written by the main one.

    Besides the head, the optimizer and the best-dev state, a checkpoint holds what the step loop carries from
    one step to the next, so that a resumed run continues exactly as the uninterrupted one: every process's
    view-dropout generator state (``rng.view_dropout``, uint8 ``[processes, n]``; batch order needs none, it is
    re-derived from the seed per epoch) and, under fp16, the gradient scaler's state (in the JSON).
    """
    if trainer.output_dir is None:
        return
    rng = gen.get_state()[None]  # [1, n] uint8
    if accelerator.num_processes > 1:  # a collective: every process's generator, in process order
        rng = accelerator.gather(rng.to(accelerator.device)).cpu()
    if not accelerator.is_main_process:
        return
    ckpt = trainer.output_dir / ("checkpoint-final" if final else f"checkpoint-{trainer.global_step}")
    state = {f"head.{k}": v.detach().cpu() for k, v in trainer.head.state_dict().items()}
    if trainer.best is not None:  # the kept state, so a resumed run ends on the same model selection
        state.update({f"best.{k}": v.detach().cpu() for k, v in trainer.best[2].items()})
    state["rng.view_dropout"] = rng
    scaler = getattr(accelerator, "scaler", None)
    opt_state = optimizer.state_dict()
    for pid, pstate in opt_state["state"].items():
        for key, value in pstate.items():
            state[f"optim.{pid}.{key}"] = (
                torch.as_tensor(value).detach().cpu().reshape(-1) if key == "step" else value.detach().cpu()
            )
    # built aside and renamed into place, so a crash never leaves a checkpoint with half its files
    with replacing_folder(ckpt) as folder:
        atomic_save_safetensors(folder / "training_state.safetensors", state)
        atomic_write_json(
            folder / "trainer_state.json",
            {
                "global_step": trainer.global_step,
                "epoch": epoch,
                "config": asdict(trainer.config),
                "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in opt_state["param_groups"]],
                "best": None if trainer.best is None else {"score": trainer.best[0], "step": trainer.best[1]},
                "best_dev_per_task": trainer.best_dev_per_task,
                "history": trainer.history,
                "processes": accelerator.num_processes,
                # what else the trajectory depends on: a resume from this checkpoint needs the same (_check_same_run)
                "tasks": task_identity(trainer),
                "run_config": trainer.run_config,
                "grad_scaler": scaler.state_dict() if scaler is not None else None,
            },
        )


def task_identity(trainer: HydraTrainer) -> list[dict[str, Any]]:
    """The tasks in training order, with their training-query counts and card fingerprints."""
    return [
        {"name": meta["name"], "train_queries": meta["train_queries"], "card": card}
        for meta, card in zip(trainer.task_meta, trainer._card_fingerprints, strict=True)
    ]


def check_same_run(trainer: HydraTrainer, path: Path, meta: dict[str, Any], processes: int) -> None:
    """Refuse a checkpoint written with another training config, task list, seed or number of processes."""
    differences = []
    saved = meta.get("config")
    if isinstance(saved, dict):
        # a field the checkpoint's config lacks (added to TrainingConfig later) had its default then
        there = _jsonable({**asdict(type(trainer.config)()), **saved})
        here = _jsonable(asdict(trainer.config))
        for key in sorted(set(here) | set(there)):
            if key not in RUN_INDEPENDENT_FIELDS and here.get(key) != there.get(key):
                differences.append(f"training.{key} is {there.get(key)!r} there and {here.get(key)!r} here")
    here_tasks = task_identity(trainer)
    names = [t["name"] for t in here_tasks]
    saved_tasks = meta.get("tasks")
    if isinstance(saved_tasks, list):
        saved_names = [t.get("name") for t in saved_tasks]
        if saved_names != names:
            differences.append(f"the tasks are {saved_names} there and {names} here")
        else:
            for old, new in zip(saved_tasks, here_tasks, strict=True):
                for key, what in (("train_queries", "training queries"), ("card", "card fingerprint")):
                    if key in old and old[key] != new[key]:
                        differences.append(f"{new['name']}: {what} {old[key]!r} there and {new[key]!r} here")
    else:  # older checkpoints name the tasks only in their loss history
        trained = sorted({h["task"] for h in meta.get("history", []) if "task" in h} - set(names))
        if trained:
            differences.append(f"it trained on task(s) {trained}, which this run (tasks {names}) does not have")
    saved_run = meta.get("run_config")
    if saved_run is not None and trainer.run_config is not None:
        there, here = _jsonable(saved_run), _jsonable(trainer.run_config)
        for key in sorted(set(here) | set(there)):
            if here.get(key) != there.get(key):
                differences.append(f"{key} is {there.get(key)!r} there and {here.get(key)!r} here")
    if meta.get("processes") is not None and int(meta["processes"]) != processes:
        differences.append(f"it was written by {meta['processes']} process(es) and this run has {processes}")
    if differences:
        raise CheckpointError(
            f"checkpoint {path} was written by another run ({'; '.join(differences)}), so resuming from it "
            "would not continue that run. Resume with the same recipe, tasks, seed and number of processes as "
            "the run that wrote it, or train afresh in a new output dir (train.py: a fresh --output-dir, "
            "without --resume-from)"
        )


def _corrupt(path: Path, what: str) -> CheckpointError:
    """The error for a damaged checkpoint: what is wrong, and the fix."""
    return CheckpointError(f"checkpoint {path} is corrupt ({what}); resume from an earlier checkpoint or start over")


def _check_meta(path: Path, meta: Any) -> None:
    """Refuse a ``trainer_state.json`` whose fields the resume reads are missing or of the wrong type.

    Checked before anything is restored, so a damaged file fails as a :class:`CheckpointError` naming the
    checkpoint instead of an ``AttributeError``/``KeyError`` halfway through the restore.
    """
    if not isinstance(meta, dict):
        raise _corrupt(path, f"trainer_state.json holds a {type(meta).__name__}, not an object")
    if "global_step" not in meta:
        raise _corrupt(path, "trainer_state.json has no global_step")
    step = meta["global_step"]
    if not _is_int(step) or step < 0:
        raise _corrupt(path, f"trainer_state.json: global_step is {step!r}, not a non-negative integer")
    best = meta.get("best")
    well_formed_best = isinstance(best, dict) and _is_number(best.get("score")) and _is_int(best.get("step"))
    if best is not None and not well_formed_best:
        raise _corrupt(path, f"trainer_state.json: best is {best!r}, not {{'score': <number>, 'step': <int>}}")
    if not isinstance(meta.get("history", []), list):
        raise _corrupt(path, "trainer_state.json: history is not a list")
    tasks = meta.get("tasks")
    if tasks is not None and not (isinstance(tasks, list) and all(isinstance(t, dict) for t in tasks)):
        raise _corrupt(path, "trainer_state.json: tasks is not a list of objects")
    processes = meta.get("processes")
    if processes is not None and not _is_int(processes):
        raise _corrupt(path, f"trainer_state.json: processes is {processes!r}, not an integer")


def _is_int(value: Any) -> bool:
    """An int as JSON gives one: ``True``/``False`` are ints in Python but not a step count."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


def _optimizer_state(path: Path, state: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> dict[int, Any]:
    """The per-parameter AdamW state stored in ``state`` (``optim.<pid>.<key>``), checked against ``optimizer``.

    ``Optimizer.load_state_dict`` takes any tensors: a missing moment or one of the wrong shape would only fail
    inside the first ``optimizer.step`` (or, broadcast, train on silently), so keys and shapes are checked here.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    # AdamW keeps these per parameter; amsgrad adds the running maximum
    expected = {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if optimizer.defaults.get("amsgrad") else set())
    found: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in state.items():
        if not name.startswith("optim."):
            continue
        pid_text, _, key = name[len("optim.") :].partition(".")
        if not pid_text.isdigit() or int(pid_text) >= len(params):
            raise _corrupt(path, f"{name}: this optimizer has {len(params)} parameters")
        found.setdefault(int(pid_text), {})[key] = value
    if found and len(found) != len(params):  # every trained parameter gets a gradient, so each has a state
        missing = sorted(set(range(len(params))) - set(found))
        raise _corrupt(path, f"no optimizer state for parameter(s) {missing}")
    for pid, keys in sorted(found.items()):
        if set(keys) != expected:
            raise _corrupt(path, f"optimizer state of parameter {pid} has {sorted(keys)}, expected {sorted(expected)}")
        if keys["step"].numel() != 1:
            raise _corrupt(path, f"optim.{pid}.step has shape {tuple(keys['step'].shape)}, expected one value")
        keys["step"] = keys["step"].reshape(())
        for key in expected - {"step"}:
            if keys[key].shape != params[pid].shape:
                raise _corrupt(
                    path,
                    f"optim.{pid}.{key} has shape {tuple(keys[key].shape)}, its parameter {tuple(params[pid].shape)}",
                )
    return found


def _check_finite(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Refuse NaN or infinite weights or optimizer moments: resumed, they would train on (or evaluate) silently
    to a NaN model."""
    for name, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise _corrupt(path, f"{name} holds NaN or infinite values")


def load_checkpoint(trainer: HydraTrainer, path: Path, optimizer: torch.optim.Optimizer, processes: int = 1) -> None:
    """Restore the head, the optimizer, the step and the best-dev state of checkpoint ``path`` into ``trainer``.

    Raises:
        CheckpointError: The checkpoint is corrupt (unreadable files, a damaged ``trainer_state.json``,
            optimizer state that does not fit the parameters, non-finite tensors), of another head, or written
            by another run.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    check_checkpoint_folder(path)
    st_path, js_path = (path / name for name in CHECKPOINT_FILES)
    try:
        state = load_file(str(st_path))
        meta = json.loads(js_path.read_text(encoding="utf-8"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _corrupt(path, str(exc)) from exc
    _check_meta(path, meta)
    check_same_run(trainer, path, meta, processes)
    _check_finite(path, state)
    head_state = {k[5:]: v for k, v in state.items() if k.startswith("head.")}
    try:
        trainer.head.load_state_dict(head_state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {path} does not match this model's head ({exc}); resume from a checkpoint of this run "
            "or start over"
        ) from exc
    opt_state = optimizer.state_dict()
    opt_state["state"].update(_optimizer_state(path, state, optimizer))
    optimizer.load_state_dict(opt_state)
    trainer.global_step = int(meta["global_step"])
    # the step loop's own state, restored by _restore_step_state once the generator and the scaler exist
    trainer._resumed_step_state = (state.get("rng.view_dropout"), meta.get("grad_scaler"))
    # checkpoints from before the best state was stored resume without it (the dev history starts afresh)
    trainer.history = list(meta.get("history", []))
    best_state = {k[5:]: v for k, v in state.items() if k.startswith("best.")}
    if meta.get("best") is not None and best_state:
        trainer.best = (float(meta["best"]["score"]), int(meta["best"]["step"]), best_state)
        trainer.best_dev_per_task = meta.get("best_dev_per_task")


def restore_step_state(trainer: HydraTrainer, path: Path, gen: torch.Generator, accelerator: Any) -> None:
    """Restore the view-dropout generator (and the fp16 gradient scaler) saved with checkpoint ``path``."""
    rng, scaler_state = trainer._resumed_step_state
    world, rank = accelerator.num_processes, accelerator.process_index
    if rng is None:
        if trainer.config.view_dropout:  # the generator only draws the dropout masks: without dropout nothing differs
            logger.warning(
                "checkpoint %s holds no view-dropout generator state (it was written by an older hydra_st): the "
                "resumed run draws other dropout masks than the uninterrupted run, so its weights will differ",
                path,
            )
    elif rng.ndim != 2 or rng.shape[0] != world:
        logger.warning(
            "checkpoint %s was written by %s process(es), this run has %d: the view-dropout masks (and the "
            "batches each process gets) differ from the uninterrupted run's",
            path,
            rng.shape[0] if rng.ndim == 2 else "?",
            world,
        )
    else:
        try:
            # a copy: a row of the stacked [processes, n] tensor is a view at an offset, which set_state ignores
            gen.set_state(rng[rank].to(torch.uint8).clone())
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {path}: its view-dropout generator state is damaged ({exc})") from exc
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None:
        if scaler_state:
            scaler.load_state_dict(scaler_state)
        else:
            logger.warning("checkpoint %s holds no fp16 gradient-scaler state: the scale starts afresh", path)
