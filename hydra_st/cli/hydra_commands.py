"""``hydra-st`` commands of the Hydra family: ``quickstart`` and ``hydra-card``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

from hydra_st.cli.common import add_data_args


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
    qs.add_argument("--epochs", type=int, default=None, help="training epochs (default: the recipe's)")
    qs.add_argument(
        "--loto", action="store_true", help="also train one leave-one-task-out hypernet per task (about 45 s each)"
    )
    qs.add_argument("--seed", type=int, default=0)
    qs.add_argument(
        "--no-gate",
        action="store_true",
        help="keep every task's trained head (default: a task whose dev queries show no gain gets the base model)",
    )
    qs.add_argument("--no-progress", action="store_true", help="hide progress bars")
    qs.set_defaults(func=quickstart)

    card = subparsers.add_parser("hydra-card", help="validate a task card file and print its rendering")
    card.add_argument("path", help="a .yaml/.yml/.json card file, or the name of a bundled card")
    card.set_defaults(func=show_card)


def quickstart(args: argparse.Namespace) -> int:
    """Run the quickstart pipeline; prints the nDCG@10 table and where the model was saved."""
    from hydra_st.hydra.pipeline import QUICKSTART_TASKS, PipelineConfig, run_pipeline
    from hydra_st.settings import resolve_data_dir

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else QUICKSTART_TASKS
    data_dir = resolve_data_dir(args.data_dir)
    missing = [t for t in tasks if not (data_dir / t / "corpus.jsonl").is_file()]
    if missing:
        raise FileNotFoundError(
            f"dataset(s) {missing} not found under {data_dir}; set --data-dir or $HYDRA_ST_DATA_DIR to the folder "
            "holding BEIR-layout datasets"
        )
    config = PipelineConfig(tasks=tasks, loto=args.loto, gated=not args.no_gate)
    training = replace(config.training, seed=args.seed)
    if args.epochs is not None:
        training = replace(training, epochs=args.epochs)
    config = replace(config, training=training)
    t0 = time.perf_counter()
    report = run_pipeline(
        config,
        args.output_dir,
        data_dir=str(data_dir),
        cache_dir=args.cache_dir,
        show_progress_bar=not args.no_progress,
    )
    print(report["table"])
    print(f"\nmodel saved to {args.output_dir}/model; results in {args.output_dir}/hydra_results.json")
    print(f"total {time.perf_counter() - t0:.0f} s")
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
