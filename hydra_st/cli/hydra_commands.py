"""``hydra-st`` commands of the Hydra family: ``quickstart``, ``hydra-evaluate`` and ``hydra-card``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from typing import Any

from hydra_st.cli.common import (
    add_data_args,
    check_model,
    depth_caption,
    model_not_found,
    positive_int,
    write_run_and_result,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the Hydra commands to the ``hydra-st`` parser."""
    qs = subparsers.add_parser(
        "quickstart",
        help="Hydra end to end: teachers, preferences, training on mixed tasks, per-task evaluation, saved model",
        description=(
            "Build the BM25 and dense teachers, derive preferences for the training queries, train one Hydra "
            "hypernet on the mixed tasks, evaluate every task (BM25, base, RRF teacher, Hydra with its card and "
            "with another task's card, and with --loto leave-one-task-out), print the table and save the model."
        ),
    )
    add_data_args(qs)
    qs.add_argument("--output-dir", default="outputs/hydra-quickstart", help="where the model and results go")
    qs.add_argument("--tasks", default=None, help="comma-separated dataset names (default: the quickstart mix)")
    qs.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: the recipe's)")
    qs.add_argument(
        "--loto", action="store_true", help="also train one leave-one-task-out hypernet per task (about 45 s each)"
    )
    qs.add_argument("--seed", type=int, default=0, help="seed of sampling, splits and initialisation (default 0)")
    qs.add_argument(
        "--no-gate",
        action="store_true",
        help="keep every task's trained head (default: a task whose dev queries show no gain gets the base model)",
    )
    qs.add_argument(
        "--gate-rule",
        choices=("confident", "positive"),
        default="confident",
        help="what opens a task's gate: a dev gain whose 95%% lower bound is above 0 (confident, the default) or any "
        "positive mean dev gain (positive, the published model's rule)",
    )
    qs.add_argument(
        "--query-shift",
        action="store_true",
        help="also fit a query-only shift toward the documents (an option: measured in hydra_findings.md)",
    )
    qs.add_argument(
        "--query-shift-gated", action="store_true", help="the query shift, closed on a task whose dev score it lowers"
    )
    qs.add_argument("--no-progress", action="store_true", help="hide progress bars")
    qs.set_defaults(func=quickstart)

    ev = subparsers.add_parser(
        "hydra-evaluate",
        help="score a saved Hydra model on a dataset with a task card (run file and metrics)",
        description=(
            "Rank a dataset's documents with a saved Hydra model and a task card (default: the bundled card of the "
            "dataset), using the base model's cached corpus embeddings; print the metrics beside the base model's "
            "and write TREC run files and JSON results."
        ),
    )
    ev.add_argument("--model", required=True, help="a saved Hydra model folder (or Hub id)")
    ev.add_argument("--dataset", required=True, help="dataset name under the data dir")
    ev.add_argument("--card", default=None, help="card file or bundled card name (default: the dataset's own card)")
    ev.add_argument("--split", default="test", help="qrels split to evaluate (default: test)")
    ev.add_argument("--top-k", type=positive_int, default=1000, help="documents retrieved per query (default: 1000)")
    ev.add_argument("--output-dir", default="outputs/hydra-evaluate", help="where run files and results go")
    add_data_args(ev)
    ev.set_defaults(func=hydra_evaluate)

    card = subparsers.add_parser("hydra-card", help="validate a task card file and print its rendering")
    card.add_argument("path", help="a .yaml/.yml/.json card file, or the name of a bundled card")
    card.set_defaults(func=show_card)


def quickstart_config(args: argparse.Namespace, tasks: tuple[str, ...]) -> Any:
    """The :class:`~hydra_st.hydra.pipeline.PipelineConfig` that ``hydra-st quickstart``'s flags ask for."""
    from hydra_st.hydra.pipeline import PipelineConfig

    config = PipelineConfig(
        tasks=tasks,
        loto=args.loto,
        gated=not args.no_gate,
        gate_rule=args.gate_rule,
        query_shift=args.query_shift or args.query_shift_gated,
        query_shift_gated=args.query_shift_gated,
    )
    training = replace(config.training, seed=args.seed)
    if args.epochs is not None:
        training = replace(training, epochs=args.epochs)
    return replace(config, training=training)


def gate_line(summary: dict[str, Any]) -> str | None:
    """Two lines on the calibrated gates of a training summary: which opened, and the dev evidence per task.

    Example:
        >>> print(gate_line({"gates": {"a": 1.0, "b": 0.0}, "gated_dev_gains": {"a": 0.03, "b": 0.01},
        ...                  "gated_dev_lower_bounds": {"a": 0.004, "b": -0.006}}))
        gates open: 1 of 2 (a); a closed task gets the base model exactly
        what decided each (the dev gain's 95% lower bound, open when above 0): a +0.0040, b -0.0060
    """
    gates = summary.get("gates")
    if not gates:
        return None
    opened = [t for t, g in gates.items() if g > 0.5]
    bounds = summary.get("gated_dev_lower_bounds")
    evidence = bounds if bounds is not None else summary.get("gated_dev_gains") or {}
    what = "the dev gain's 95% lower bound" if bounds is not None else "the dev gain"
    per_task = ", ".join(f"{t} {evidence[t]:+.4f}" if t in evidence else f"{t} (no dev queries)" for t in gates)
    return (
        f"gates open: {len(opened)} of {len(gates)} ({', '.join(opened) or 'none'}); a closed task gets the base "
        f"model exactly\nwhat decided each ({what}, open when above 0): {per_task}"
    )


def quickstart(args: argparse.Namespace) -> int:
    """Run the quickstart pipeline; prints the nDCG@10 table and where the model was saved."""
    from hydra_st.hydra.pipeline import QUICKSTART_TASKS, check_datasets, run_pipeline

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else QUICKSTART_TASKS
    data_dir = check_datasets(tasks, args.data_dir)
    config = quickstart_config(args, tasks)
    if args.no_progress:  # transformers' own bars too (loading and writing weights)
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    t0 = time.perf_counter()
    report = run_pipeline(
        config,
        args.output_dir,
        data_dir=str(data_dir),
        cache_dir=args.cache_dir,
        show_progress_bar=not args.no_progress,
    )
    print(report["table"])
    gates = gate_line(report["training"])
    if gates:
        print(f"\n{gates}")
    print(f"\nmodel saved to {args.output_dir}/model; results in {args.output_dir}/hydra_results.json")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


def hydra_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a saved Hydra model with a card on one dataset split, beside its base model."""
    from pathlib import Path

    from sentence_transformers import SentenceTransformer

    from hydra_st.data import load_dataset
    from hydra_st.evaluation import DEFAULT_METRICS, evaluate_run, format_table
    from hydra_st.hydra import Hydra
    from hydra_st.hydra.evaluate import hydra_run
    from hydra_st.hydra.task_card import coerce_card
    from hydra_st.retrieval import dense_run
    from hydra_st.teachers import DenseTeacher

    ds = load_dataset(args.dataset, split=args.split, data_dir=args.data_dir)
    card = coerce_card(args.card or ds.name)  # a dataset without a bundled card: the error lists the cards there are
    # a Hypencoder or a missing path is named here, not as sentence-transformers' trust_remote_code/Hub error
    check_model(args.model, "hydra", "hydra-st hydra-evaluate")
    try:
        model = Hydra(args.model)
    except OSError as exc:
        if Path(args.model).exists():
            raise
        raise model_not_found(args.model, exc) from exc
    base = SentenceTransformer(modules=model.base_modules(), device=str(model.device))
    # the frozen base's corpus embeddings come from (and go to) the shared embedding cache; the head is applied
    # on top, which equals model.encode_document(..., task_card=card)
    doc_emb = DenseTeacher(base, cache_dir=args.cache_dir).encode_corpus(ds.doc_ids, ds.doc_texts)
    qids = list(ds.judged_queries)
    texts = [ds.judged_queries[q].text for q in qids]
    q_emb = base.encode_query(texts, convert_to_numpy=True, show_progress_bar=False)
    runs = {
        "base": dense_run(q_emb, qids, doc_emb, ds.doc_ids, top_k=args.top_k),
        "hydra": hydra_run(model, card, qids, q_emb, ds.doc_ids, doc_emb, top_k=args.top_k),
    }
    out_dir = Path(args.output_dir) / ds.name / args.split
    rows: dict[str, dict[str, float | str | None]] = {}
    # what each run was made with, as `evaluate` records it; the card only shapes the Hydra run
    common = {
        "dataset": ds.name,
        "split": args.split,
        "model": args.model,
        "model_revision": model.model_card_data.base_model_revision,
        "top_k": args.top_k,
        "mode": "exhaustive",
    }
    card_meta = {"card": card.name, "card_fingerprint": card.fingerprint, "card_source": args.card or "bundled"}
    for name, run in runs.items():
        metadata = {**common, "retriever": name, **(card_meta if name == "hydra" else {})}
        result = evaluate_run(ds.qrels, run, metrics=DEFAULT_METRICS, metadata=metadata)
        rows[f"{ds.name} / {name}"] = write_run_and_result(run, result, out_dir, name)
    print(f"card: {card.name} ({card.fingerprint}); wrote runs and results to {out_dir}")
    print(format_table(rows, ["queries", *DEFAULT_METRICS], row_header=f"dataset / model ({args.split})"))
    if caption := depth_caption(args.top_k):
        print(caption)
    return 0


def show_card(args: argparse.Namespace) -> int:
    """Validate a card and print it rendered (exit 1 with the reason when it is malformed)."""
    from hydra_st.hydra.task_card import TaskCardError, coerce_card

    try:
        card = coerce_card(args.path)
    except TaskCardError as exc:
        print(f"hydra-st hydra-card: invalid card: {exc}", file=sys.stderr)
        return 1
    print(card.render())
    print(json.dumps({"fingerprint": card.fingerprint}))
    return 0
