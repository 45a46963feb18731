"""End-to-end Hydra pipeline: tasks → preferences → training → per-task evaluation → saved model.

Used by ``hydra-st quickstart``, ``evaluation/hydra_eval.py`` and the training recipes.
"""

from __future__ import annotations

import logging
import shutil
import time
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from hydra_st.utils.io import atomic_write_json, atomic_write_text

from .evaluate import (
    GATE_RULES,
    aggregate_gains,
    base_dev_scores,
    dev_gain_lower_bounds,
    dev_gains,
    evaluate_task,
    paired_against_base,
    results_table,
)
from .model import Hydra
from .preferences import PreferenceConfig, task_preferences
from .task_card import TaskCard
from .tasks import QueryEmbeddingCache, TaskData, build_task
from .trainer import HydraTrainer
from .training_config import TrainingConfig

logger = logging.getLogger(__name__)

QUICKSTART_TASKS = ("scifact", "nfcorpus", "cranfield", "med", "cacm", "adi")
ALL_TASKS = ("scifact", "nfcorpus", "cranfield", "med", "cacm", "vaswani", "adi", "msmarco-dl19-subset")


@dataclass
class PipelineConfig:
    """What to train on and how.

    Args:
        tasks: Dataset names (folders under the data dir) to train and evaluate on.
        out_dim: Head output dimension (384 with an identity-initialised W0: a PCA-initialised 256-d head was below
            the base model on 4-6 of 8 tasks, measured on test in evaluation/hydra_ablation.py; see
            evaluation/results/hydra_findings.md).
        rank: Rank of the card-dependent update.
        n_pseudo: Pseudo-queries per task without a train split.
        preferences: Pair sampling.
        training: Trainer hyper-parameters.
        loto: Also train one leave-one-task-out hypernet per task.
        dev_aggregate: Model selection on per-task dev gains over the base (see
            :func:`~hydra_st.hydra.evaluate.aggregate_gains`): ``"mean"``, ``"min"`` or ``"penalized"``.
        gated: Give the head a fallback gate and calibrate it after training: a task whose dev queries do not show
            a gain over the base gets exactly the base model (needs ``out_dim`` = the base dimension).
        gate_rule: What shows a gain (:data:`~hydra_st.hydra.evaluate.GATE_RULES`): ``"confident"``, the one-sided
            95% lower bound of the mean per-query dev gain is above 0; ``"positive"``, the mean is (the rule of
            the published model, which opened gates on noise: see evaluation/results/hydra_gate_rule.md).
        query_shift: Give the head a query-only shift toward the documents, calibrated after training (and after
            the gate) by :func:`calibrate_query_shift`.
        query_shift_gated: With ``query_shift``, close the shift on a task whose own dev score it lowers.

    Example:
        >>> config = PipelineConfig(tasks=["scifact", "adi"], loto=False)
        >>> config.out_dim, config.gated, config.preferences.candidates, config.training.init, config.training.epochs
        (384, True, 50, 'identity', 3)
    """

    tasks: Sequence[str] = QUICKSTART_TASKS
    out_dim: int = 384
    rank: int = 4
    n_pseudo: int = 400
    preferences: PreferenceConfig = field(default_factory=PreferenceConfig)
    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(init="identity", epochs=3, eval_every=40))
    loto: bool = True
    dev_aggregate: str = "penalized"
    gated: bool = True
    gate_rule: str = "confident"
    query_shift: bool = False
    query_shift_gated: bool = False

    def __post_init__(self) -> None:
        if self.gate_rule not in GATE_RULES:
            raise ValueError(f"gate_rule must be one of {GATE_RULES}, got {self.gate_rule!r}")
        if self.query_shift_gated and not self.query_shift:
            raise ValueError("query_shift_gated=True gates the query shift: set query_shift=True as well")


def _coerce_field(value: Any, hint: Any, name: str, source: str) -> Any:
    """``value`` checked against the type ``hint`` of field ``name``; numeric strings are read as numbers for float
    fields (YAML 1.1 reads ``1e-3`` as a string), a string for a list of names is split at commas."""
    where = f"{source}: {name}"
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{where} must be a whole number, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{where} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{where} must be a string, got {value!r}")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Sequence, list, tuple) and args and args[0] is str:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
            raise ValueError(f"{where} must be a list of names (or one comma-separated string), got {value!r}")
        return tuple(v.strip() for v in items if v.strip())
    if origin is dict and args == (str, float):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"{where} must be a mapping of names to numbers, got {value!r}")
        return {k: _coerce_field(v, float, f"{name}.{k}", source) for k, v in value.items()}
    return value  # a type without a check here: the dataclass validates it


def config_from_mapping(cls: Any, data: Any, source: str, section: str = "", also_valid: Sequence[str] = ()) -> Any:
    """Build the config dataclass ``cls`` from a recipe mapping, with one-line errors that name ``source`` (the
    recipe file) and the field: an unknown key lists the valid keys, a wrong type names the expected one, and a value
    the dataclass refuses keeps its message. Nested :class:`PreferenceConfig` and :class:`TrainingConfig` sections
    are read the same way.

    Args:
        cls: :class:`PipelineConfig`, :class:`PreferenceConfig` or :class:`TrainingConfig`.
        data: The mapping (``None``: all defaults).
        source: What to name in errors (the recipe file's path).
        section: The mapping's key in the recipe (``"training"``), for the errors; empty at the top level.
        also_valid: Keys the caller handles itself, listed among the valid keys of an unknown-key error.

    Example:
        >>> config_from_mapping(TrainingConfig, {"learning_rate": "1e-3", "epochs": 2}, "r.yaml").learning_rate
        0.001
        >>> config_from_mapping(TrainingConfig, {"epoch": 2}, "r.yaml")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: r.yaml: unknown key 'epoch' in training; valid keys: batch_size, checkpoint_every, epochs, ...
    """
    section = section or {TrainingConfig: "training", PreferenceConfig: "preferences"}.get(cls, "")
    prefix = f"{section}." if section else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{source}: {section or 'a recipe'} must be a mapping (key: value lines), got {data!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls) if f.init]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in valid:
            where = f" in {section}" if section else ""
            raise ValueError(
                f"{source}: unknown key {key!r}{where}; valid keys: {', '.join(sorted({*valid, *also_valid}))}"
            )
        hint = hints[key]
        if hint in (PreferenceConfig, TrainingConfig):
            kwargs[key] = config_from_mapping(hint, value, source, key)
        else:
            kwargs[key] = _coerce_field(value, hint, prefix + key, source)
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a value out of range (the dataclass's own check)
        raise ValueError(f"{source}: {section + ': ' if section else ''}{exc}") from None


def check_datasets(names: Sequence[str], data_dir: str | Path | None = None) -> Path:
    """Check that every dataset in ``names`` is under the data dir (a ``corpus.jsonl`` in its folder); return the dir.

    Raises:
        FileNotFoundError: Some are not; the message names them and the data dir.
    """
    from hydra_st.settings import resolve_data_dir

    root = resolve_data_dir(data_dir)
    missing = [name for name in names if not (root / name / "corpus.jsonl").is_file()]
    if missing:
        raise FileNotFoundError(
            f"dataset(s) {missing} not found under {root}; set --data-dir or $HYDRA_ST_DATA_DIR to the folder "
            "holding BEIR-layout datasets"
        )
    return root


RUN_OUTPUTS = ("model", "training", "training_summary.json", "hydra_results.json", "hydra_results.md")
"""What a training run writes in its output dir (:func:`prepare_output_dir` checks for and clears these only)."""


def prepare_output_dir(output_dir: str | Path, overwrite: bool = False, resume_from: str | Path | None = None) -> Path:
    """Make ``output_dir`` ready for a run, never mixing two runs' files.

    An output dir that holds none of :data:`RUN_OUTPUTS` is used as it is, and so is one that ``resume_from``
    points into (the run it holds carries on). Otherwise the earlier run's outputs are removed first with
    ``overwrite`` (other files are left alone), and refused without.

    Raises:
        FileExistsError: ``output_dir`` holds another run's outputs and ``overwrite`` is off.
    """
    out = Path(output_dir)
    found = [name for name in RUN_OUTPUTS if (out / name).exists() or (out / name).is_symlink()]
    if not found:
        return out
    if resume_from is not None and out.resolve() in Path(resume_from).resolve().parents:
        return out
    if not overwrite:
        raise FileExistsError(
            f"output dir {out} already holds a run ({', '.join(found)}); give a new --output-dir, pass --overwrite "
            "to delete that run's outputs first, or continue that run with "
            f"--resume-from {out / 'training'}/checkpoint-<step>"
        )
    logger.warning("replacing the earlier run's outputs in %s: %s", out, ", ".join(found))
    for name in found:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return out


def load_tasks(
    names: Sequence[str],
    base: Any,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    n_pseudo: int = 400,
    seed: int = 0,
    show_progress_bar: bool = True,
    cards: Mapping[str, TaskCard] | None = None,
) -> list[TaskData]:
    """Build :class:`TaskData` for each name (corpus embeddings from the foundation's cache).

    ``cards`` gives the card of a dataset by name; the others get their bundled card.
    """
    from tqdm.auto import tqdm

    from hydra_st.teachers import DenseTeacher

    teacher = DenseTeacher(base, cache_dir=cache_dir, show_progress_bar=show_progress_bar)
    qcache = QueryEmbeddingCache(base, teacher.model_fingerprint, cache_dir, show_progress_bar=show_progress_bar)
    tasks = []
    for name in tqdm(list(names), desc="hydra tasks", disable=not show_progress_bar):
        card = (cards or {}).get(name)
        tasks.append(build_task(name, teacher, qcache, card=card, data_dir=data_dir, n_pseudo=n_pseudo, seed=seed))
    return tasks


def resume_identity(config: PipelineConfig) -> dict[str, Any]:
    """The pipeline settings a resumed run must share with the run that wrote its checkpoint, so that a resume from
    another recipe's checkpoint is refused. Tasks and training settings are checked on their own; ``loto`` and
    ``gate_rule`` act after training, so a resume may change them."""
    return {k: v for k, v in asdict(config).items() if k not in ("tasks", "training", "loto", "gate_rule")}


def train_model(
    base: Any,
    tasks: Sequence[TaskData],
    config: PipelineConfig,
    cache_dir: str | None = None,
    output_dir: str | Path | None = None,
    show_progress_bar: bool = True,
    resume_from: str | Path | None = None,
) -> tuple[Hydra, dict[str, Any]]:
    """Build preferences, then train a fresh hypernet on ``tasks`` (or resume); returns the model and a summary."""
    import torch

    from hydra_st.teachers import BM25Teacher

    torch.manual_seed(config.training.seed)  # the hypernet's initialisation is part of the run's determinism
    model = Hydra.from_base(
        base, out_dim=config.out_dim, rank=config.rank, gated=config.gated, query_shift=config.query_shift
    )
    prefs = {t.name: task_preferences(t, BM25Teacher, config.preferences, cache_dir) for t in tasks}
    base_dev = base_dev_scores(tasks)
    training = TrainingConfig(**{**asdict(config.training), "show_progress_bar": show_progress_bar})
    trainer = HydraTrainer(
        model,
        list(tasks),
        prefs,
        training,
        output_dir=output_dir,
        dev_evaluator=lambda m: dev_gains(m, tasks, base_dev),
        dev_aggregate=lambda g: aggregate_gains(g, config.dev_aggregate),
        run_config=resume_identity(config),
    )
    summary = trainer.train(resume_from=resume_from)
    if config.gated:  # after state selection: the gate follows each task's dev gain in the kept state
        # those gains were measured when the state was kept; only a resume that ran no dev step has to re-measure
        gains = trainer.best_dev_per_task or dev_gains(model, tasks, base_dev)
        bounds = dev_gain_lower_bounds(model, tasks) if config.gate_rule == "confident" else None
        trainer.calibrate_gate(gains, lower_bounds=bounds)
        summary = trainer.summary()
    if config.query_shift:
        summary["query_shift"] = calibrate_query_shift(model, tasks, gated=config.query_shift_gated)
    summary["base_dev"] = base_dev
    return model, summary


QUERY_SHIFT_STEPS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)
"""The steps α :func:`calibrate_query_shift` chooses from (0: no shift)."""


def query_gap(task: TaskData) -> np.ndarray:
    """The corpus's mean embedding minus the mean of ``task``'s training queries (base model space)."""
    queries = task.train.embeddings
    if queries is None or not len(queries):
        raise ValueError(f"{task.name}: no training queries to estimate the query-to-corpus gap from")
    return np.asarray(task.doc_embeddings.mean(0) - queries.mean(0), dtype=np.float32)


def calibrate_query_shift(
    model: Hydra, tasks: Sequence[TaskData], steps: Sequence[float] = QUERY_SHIFT_STEPS, gated: bool = False
) -> dict:
    """Fit the head's query shift: task ``t`` gets ``α ·`` :func:`query_gap` ``(t)``, one ``α`` for all tasks.

    ``α`` is the step whose mean dev nDCG@10 over the tasks is highest (the first on ties, so no shift unless it
    helps). With ``gated``, a task whose own dev nDCG@10 is lower at ``α`` than with no shift gets no shift (a task
    whose dev cannot tell, as on saturated pseudo-query dev sets, keeps it). A new card gets the ridge prediction of
    :func:`~hydra_st.hydra.generator.calibrate_query_shift`, about the mean of the training tasks' shifts. Reads the
    training queries' embeddings and the dev qrels only.

    Returns:
        ``{"step": α, "dev_by_step": {step: mean dev nDCG@10}, "shift_open": {task: bool}}``.
    """
    import torch

    from .evaluate import dev_scores
    from .generator import calibrate_query_shift as fit

    if gated and 0.0 not in steps:
        raise ValueError(f"a gated query shift compares each task with no shift, so steps must hold 0.0, got {steps}")
    head = model.head
    with torch.no_grad():
        conds = torch.stack([head.conditioning(t.card) for t in tasks]).float().cpu()
    gaps = torch.from_numpy(np.stack([query_gap(t) for t in tasks]))
    by_task = {}
    for step in steps:
        fit(head.generator, conds, step * gaps)
        head.clear_cache()
        by_task[step] = dev_scores(model, tasks)
        if not by_task[step]:
            raise ValueError("no task has dev queries to choose the query shift on")
    dev = {step: float(np.mean(list(scores.values()))) for step, scores in by_task.items()}
    best = max(dev, key=dev.__getitem__)
    unshifted = by_task[0.0] if gated else {}
    shift_open = {
        t.name: not gated or t.name not in unshifted or by_task[best][t.name] >= unshifted[t.name] for t in tasks
    }
    open_mask = torch.tensor([shift_open[t.name] for t in tasks], dtype=gaps.dtype).view(-1, 1)
    fit(head.generator, conds, best * gaps * open_mask)
    head.clear_cache()
    return {"step": best, "dev_by_step": dev, "shift_open": shift_open}


def run_pipeline(
    config: PipelineConfig,
    output_dir: str | Path,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    show_progress_bar: bool = True,
    overwrite: bool = True,
) -> dict[str, Any]:
    """Train on all tasks (+ LOTO models), evaluate per task, save the model, results JSON and Markdown.

    An earlier run's outputs in ``output_dir`` (see :func:`prepare_output_dir`) are deleted first, so that none of
    its files stay mixed with the new run's; ``overwrite=False`` refuses such an ``output_dir`` instead.
    """
    from hydra_st.hub.offline import load_base_model

    t0 = time.perf_counter()
    output_dir = prepare_output_dir(output_dir, overwrite=overwrite)
    base = load_base_model()
    tasks = load_tasks(
        config.tasks, base, data_dir, cache_dir, config.n_pseudo, config.training.seed, show_progress_bar
    )
    t_tasks = time.perf_counter() - t0
    model, summary = train_model(base, tasks, config, cache_dir, output_dir / "training", show_progress_bar)
    loto_models: dict[str, Any] = {}
    if config.loto:
        for task in tasks:
            others = [t for t in tasks if t.name != task.name]
            loto_models[task.name], _ = train_model(base, others, config, cache_dir, None, show_progress_bar)
    t_train = time.perf_counter() - t0 - t_tasks
    cards = {t.name: t.card for t in tasks}
    per_query: dict[str, dict[str, dict[str, float]]] = {t.name: {} for t in tasks}
    results = {
        t.name: evaluate_task(t, model, cards, loto_models.get(t.name), per_query=per_query[t.name]) for t in tasks
    }
    paired = {name: paired_against_base(by_system) for name, by_system in per_query.items()}
    t_eval = time.perf_counter() - t0 - t_tasks - t_train
    md = "\n\n".join(results_table(results, m) for m in ("ndcg@10", "mrr@10", "recall@100"))
    report: dict[str, Any] = {
        "config": asdict(config),
        "results": results,
        "training": summary,
        "train_sources": {t.name: t.train_source for t in tasks},
        # per task: Hydra (and LOTO) − base over the test queries, with a paired bootstrap CI and randomization p
        "paired_vs_base": paired,
        "timing_s": {"tasks": t_tasks, "train": t_train, "evaluate": t_eval, "total": time.perf_counter() - t0},
    }
    from .model_card import measured_limitations

    limitations = measured_limitations(results, paired=paired)
    save_trained_model(model, output_dir / "model", config, tasks, summary, results_md=md, limitations=limitations)
    atomic_write_json(output_dir / "hydra_results.json", report)
    atomic_write_text(output_dir / "hydra_results.md", md + "\n")
    report["table"] = md
    return report


def kept_untrained_note(best_dev: dict[str, Any] | None, config: PipelineConfig) -> str | None:
    """The flag a results report puts next to its targets when training kept step 0 (None otherwise).

    Example:
        >>> kept_untrained_note({"score": 0.0, "step": 0}, PipelineConfig())
        'training kept step 0 (no improvement on dev): Hydra equals the base model'
        >>> kept_untrained_note({"score": 0.01, "step": 40}, PipelineConfig()) is None
        True
    """
    if not best_dev or best_dev.get("step") != 0:
        return None
    note = "training kept step 0 (no improvement on dev): "
    if config.training.init != "identity":  # the untrained head is W0, a PCA projection: not the base model
        return note + f"Hydra is its untrained head ({config.training.init}-initialised), not a trained one"
    if config.query_shift:
        return note + "Hydra equals the base model apart from the calibrated query shift"
    return note + "Hydra equals the base model"


def save_trained_model(
    model: Hydra,
    model_dir: str | Path,
    config: PipelineConfig,
    tasks: Sequence[TaskData],
    summary: dict[str, Any],
    results_md: str | None = None,
    evaluation: str | None = None,
    limitations: str | None = None,
    model_name: str = "hydra-st/hydra-minilm-l6",
) -> Path:
    """Save a trained model with its records: the weights, ``hydra_training.json`` (the recipe, the training
    sources, the steps, the kept dev state, what model selection left out, and the calibrated gates with their dev
    evidence), ``hydra_results.md`` (with
    ``results_md``), the model card, and the task cards it was trained on under ``cards/``.

    Args:
        model: The trained model.
        model_dir: The folder to save into.
        config: The pipeline config (recipe) it was trained with.
        tasks: The tasks it was trained on.
        summary: The trainer's summary (:meth:`~hydra_st.hydra.trainer.HydraTrainer.summary`).
        results_md: The evaluation tables (Markdown), for ``hydra_results.md`` and the card's Evaluation section.
        evaluation: The card's Evaluation section when there is no ``results_md``.
        limitations: The card's Limitations section (default: a generic paragraph).
        model_name: The name (and usage path) in the card: the Hub id, so the card names no local folder.

    Returns:
        ``model_dir``.
    """
    from .model_card import write_model_card

    model_dir = Path(model_dir)
    model.save(str(model_dir), create_model_card=False)
    record = {
        "config": asdict(config),
        "train_sources": {t.name: t.train_source for t in tasks},
        "steps": summary["steps"],
        "best_dev": summary["best_dev"],
    }
    # why each task's gate is open or closed: the gates and the dev evidence they were calibrated on
    for key in ("selection_warnings", "gates", "gated_dev_gains", "gated_dev_lower_bounds"):
        if summary.get(key):
            record[key] = summary[key]
    atomic_write_json(model_dir / "hydra_training.json", record)
    if results_md is not None:
        atomic_write_text(model_dir / "hydra_results.md", results_md + "\n")
    write_model_card(model, model_dir, model_name=model_name, evaluation=evaluation, limitations=limitations)
    for t in tasks:
        t.card.save(model_dir / "cards" / f"{t.name}.yaml")
    return model_dir
