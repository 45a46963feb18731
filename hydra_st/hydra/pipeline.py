"""End-to-end Hydra pipeline: tasks → preferences → training → per-task evaluation → saved model.

Used by ``hydra-st quickstart``, ``evaluation/hydra_eval.py`` and the training recipes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hydra_st.utils.io import atomic_write_json, atomic_write_text

from .evaluate import (
    aggregate_gains,
    base_dev_scores,
    dev_gains,
    evaluate_task,
    paired_against_base,
    results_table,
)
from .model import Hydra
from .preferences import PreferenceConfig, task_preferences
from .tasks import QueryEmbeddingCache, TaskData, build_task
from .trainer import HydraTrainer, TrainingConfig

logger = logging.getLogger(__name__)

QUICKSTART_TASKS = ("scifact", "nfcorpus", "cranfield", "med", "cacm", "adi")
ALL_TASKS = ("scifact", "nfcorpus", "cranfield", "med", "cacm", "vaswani", "adi", "msmarco-dl19-subset")


@dataclass
class PipelineConfig:
    """What to train on and how.

    Args:
        tasks: Dataset names (folders under the data dir) to train and evaluate on.
        out_dim: Head output dimension (384 with an identity-initialised W0: measured, a PCA-initialised 256-d
            head is below the base model on 4-6 of 8 tasks; see evaluation/results/hydra_findings.md).
        rank: Rank of the card-dependent update.
        n_pseudo: Pseudo-queries per task without a train split.
        preferences: Pair sampling.
        training: Trainer hyper-parameters.
        loto: Also train one leave-one-task-out hypernet per task.
        dev_aggregate: Model selection on per-task dev gains over the base (see
            :func:`~hydra_st.hydra.evaluate.aggregate_gains`): ``"mean"``, ``"min"`` or ``"penalized"``.
        gated: Give the head a fallback gate and calibrate it after training: a task whose dev gain over the base
            is not positive gets exactly the base model (needs ``out_dim`` = the base dimension).
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
    query_shift: bool = False
    query_shift_gated: bool = False

    def __post_init__(self) -> None:
        if self.query_shift_gated and not self.query_shift:
            raise ValueError("query_shift_gated=True gates the query shift: set query_shift=True as well")


def load_tasks(
    names: Sequence[str],
    base: Any,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    n_pseudo: int = 400,
    seed: int = 0,
    show_progress_bar: bool = True,
) -> list[TaskData]:
    """Build :class:`TaskData` for each name (corpus embeddings from the foundation's cache)."""
    from tqdm.auto import tqdm

    from hydra_st.teachers import DenseTeacher

    teacher = DenseTeacher(base, cache_dir=cache_dir, show_progress_bar=show_progress_bar)
    qcache = QueryEmbeddingCache(base, teacher.model_fingerprint, cache_dir)
    tasks = []
    for name in tqdm(list(names), desc="hydra tasks", disable=not show_progress_bar):
        tasks.append(build_task(name, teacher, qcache, data_dir=data_dir, n_pseudo=n_pseudo, seed=seed))
    return tasks


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
    )
    summary = trainer.train(resume_from=resume_from)
    if config.gated:  # after state selection: the gate follows each task's dev gain in the kept state
        # those gains were measured when the state was kept; only a resume that ran no dev step has to re-measure
        trainer.calibrate_gate(trainer.best_dev_per_task or dev_gains(model, tasks, base_dev))
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
) -> dict[str, Any]:
    """Train on all tasks (+ LOTO models), evaluate per task, save the model, results JSON and Markdown."""
    from hydra_st.hub.offline import load_base_model

    t0 = time.perf_counter()
    output_dir = Path(output_dir)
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
    model_dir = output_dir / "model"
    model.save(str(model_dir), create_model_card=False)
    atomic_write_json(
        model_dir / "hydra_training.json",
        {k: report[k] for k in ("config", "train_sources")}
        | {"steps": summary["steps"], "best_dev": summary["best_dev"]},
    )
    atomic_write_text(model_dir / "hydra_results.md", md + "\n")
    from .model_card import measured_limitations, write_model_card

    limitations = measured_limitations(results, paired=paired)
    write_model_card(model, model_dir, model_name="hydra-st/hydra-minilm-l6", limitations=limitations)
    cards_dir = model_dir / "cards"
    for t in tasks:
        t.card.save(cards_dir / f"{t.name}.yaml")
    atomic_write_json(output_dir / "hydra_results.json", report)
    atomic_write_text(output_dir / "hydra_results.md", md + "\n")
    report["table"] = md
    return report
