"""Train a Hydra hypernet from a recipe (YAML), with accelerate: CPU, one GPU, or several processes.

    python training_recipes/hydra/train.py --recipe training_recipes/hydra/recipe.yaml --output-dir outputs/hydra
    accelerate launch --config_file training_recipes/hydra/accelerate_config.yaml training_recipes/hydra/train.py
    torchrun --standalone --nproc_per_node 2 training_recipes/hydra/train.py --output-dir outputs/hydra-ddp
    python training_recipes/hydra/train.py --tasks adi,mydata --card mydata=my_card.yaml --output-dir outputs/mine

Every process builds the (cached) task data; batches are dealt round-robin to processes and gradients are
averaged. The main process writes checkpoints, the loss log and the final model (with its records and task cards,
as ``hydra-st quickstart`` saves it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from hydra_st.cli.common import non_negative_int, positive_int
from hydra_st.hub.offline import load_base_model
from hydra_st.hydra.checkpoints import CheckpointError, check_checkpoint_folder
from hydra_st.hydra.pipeline import (
    PipelineConfig,
    check_datasets,
    config_from_mapping,
    load_tasks,
    prepare_output_dir,
    save_trained_model,
    train_model,
)
from hydra_st.hydra.task_card import TaskCard, TaskCardError, coerce_card
from hydra_st.utils.io import atomic_write_json

HERE = Path(__file__).resolve().parent


RECIPE_ONLY_KEYS = ("cards", "loto")
"""Recipe keys this script reads itself (the others are :class:`PipelineConfig` fields)."""


def load_recipe_file(path: str | Path) -> tuple[PipelineConfig, dict[str, str]]:
    """Read a recipe YAML: its :class:`PipelineConfig` and its ``cards:`` mapping (dataset name → card file).

    Errors are one-line ``ValueError`` s naming the file and the field: an unknown key lists the valid keys, a
    wrong type names the expected one (``learning_rate: 1e-3``, which YAML reads as a string, is read as the
    number). ``tasks: adi`` (one string) is a one-task list, and ``tasks: "adi, med"`` is split at the commas.
    A relative card path is taken from the recipe's folder.

    This script trains the all-task model only, so ``loto`` may be absent or ``false``; ``loto: true`` is refused
    (the leave-one-task-out models are trained and evaluated by ``evaluation/hydra_eval.py``).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a YAML mapping (tasks:, preferences:, training:, ...)")
    data = dict(data)
    loto = data.pop("loto", False)
    if not isinstance(loto, bool):
        raise ValueError(f"{path}: loto must be true or false, got {loto!r}")
    if loto:
        raise ValueError(
            f"{path}: loto: true is not supported by train.py, which trains the all-task model only; remove it "
            "(evaluation/hydra_eval.py trains and evaluates the leave-one-task-out models)"
        )
    cards = data.pop("cards", None) or {}
    if not isinstance(cards, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in cards.items()):
        raise ValueError(f"{path}: cards must map dataset names to card files (cards: {{mydata: my_card.yaml}})")
    cards = {name: str(path.parent / card) if (path.parent / card).exists() else card for name, card in cards.items()}
    config = config_from_mapping(PipelineConfig, data, str(path), also_valid=RECIPE_ONLY_KEYS)
    return replace(config, loto=False), cards


def load_recipe(path: str | Path) -> PipelineConfig:
    """The :class:`PipelineConfig` of a recipe YAML (see :func:`load_recipe_file`)."""
    return load_recipe_file(path)[0]


def card_option(value: str) -> tuple[str, str]:
    """argparse type of ``--card NAME=PATH``."""
    name, sep, card = value.partition("=")
    if not sep or not name.strip() or not card.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (a dataset name and its card file), got {value!r}")
    return name.strip(), card.strip()


def task_cards(tasks: tuple[str, ...], given: dict[str, str]) -> dict[str, TaskCard]:
    """The card of each task that is given one (``--card`` or the recipe's ``cards:``), checked; a task without
    one needs a bundled card.

    Raises:
        ValueError: A card is given for a dataset that is not trained on, cannot be read, or a task has none.
    """
    from hydra_st.hydra.cards import available_cards

    unused = sorted(set(given) - set(tasks))
    if unused:
        raise ValueError(f"a card is given for {unused}, which are not among the tasks {list(tasks)}")
    cards = {}
    for name, card in given.items():
        try:
            cards[name] = coerce_card(card)
        except (TaskCardError, FileNotFoundError) as exc:
            raise ValueError(f"the card of {name!r}: {exc}") from None
    missing = [name for name in tasks if name not in cards and name not in available_cards()]
    if missing:
        example = missing[0]
        raise ValueError(
            f"no bundled task card for {missing}; give each a card file with --card {example}=path/to/card.yaml "
            f"(repeatable) or a cards: mapping in the recipe (hydra-st hydra-card checks a card file). Bundled "
            f"cards: {', '.join(available_cards())}"
        )
    return cards


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default=str(HERE / "recipe.yaml"))
    parser.add_argument("--output-dir", default="outputs/hydra-train")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an earlier run's model, checkpoints and summary in --output-dir first (default: refuse)",
    )
    parser.add_argument(
        "--resume-from", default=None, help="a checkpoint folder written by an earlier run of the same recipe"
    )
    parser.add_argument(
        "--checkpoint-every",
        type=non_negative_int,
        default=None,
        help="steps between checkpoints (default: the recipe's; 0: only checkpoint-final)",
    )
    parser.add_argument("--epochs", type=positive_int, default=None)
    parser.add_argument("--tasks", default=None, help="comma-separated dataset names (default: the recipe's)")
    parser.add_argument(
        "--card",
        type=card_option,
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="the task card file of dataset NAME (repeatable; needed for a dataset without a bundled card)",
    )
    parser.add_argument("--data-dir", default=None, help="the BEIR datasets' folder (default: $HYDRA_ST_DATA_DIR)")
    parser.add_argument("--cache-dir", default=None, help="embedding/preference caches (default: $HYDRA_ST_CACHE_DIR)")
    args = parser.parse_args(argv)
    try:
        config, recipe_cards = load_recipe_file(args.recipe)
    except (OSError, ValueError) as exc:  # a missing or malformed recipe: one line, not a traceback
        parser.error(str(exc))
    if args.tasks:
        config = replace(config, tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()))
    if args.epochs is not None:
        config = replace(config, training=replace(config.training, epochs=args.epochs))
    if args.checkpoint_every is not None:
        config = replace(config, training=replace(config.training, checkpoint_every=args.checkpoint_every))
    main_process = int(os.environ.get("RANK", "0")) == 0
    out = Path(args.output_dir)
    try:  # everything that can be checked before the base model is loaded
        if not config.tasks:
            raise ValueError("no tasks: give --tasks or tasks: in the recipe")
        check_datasets(config.tasks, args.data_dir)  # a missing dataset first: it is not a missing card
        cards = task_cards(tuple(config.tasks), {**recipe_cards, **dict(args.card)})
        resume = Path(args.resume_from) if args.resume_from else None
        if resume is not None:
            try:
                check_checkpoint_folder(resume)
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"--resume-from {exc}") from exc
        if main_process or not args.overwrite:  # only the main process deletes; every process refuses alike
            prepare_output_dir(out, overwrite=args.overwrite, resume_from=args.resume_from)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        parser.error(str(exc))
    base = load_base_model()
    # the same task data as hydra_st.hydra.pipeline.run_pipeline (dev splits and pseudo-queries follow the seed)
    tasks = load_tasks(
        config.tasks,
        base,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        n_pseudo=config.n_pseudo,
        seed=config.training.seed,
        show_progress_bar=main_process,
        cards=cards,
    )
    try:
        model, summary = train_model(
            base,
            tasks,
            config,
            cache_dir=args.cache_dir,
            output_dir=out / "training",
            show_progress_bar=main_process,
            resume_from=args.resume_from,
        )
    except CheckpointError as exc:  # --resume-from of another run, or a damaged checkpoint: one line
        parser.error(f"--resume-from: {exc}")
    if main_process:
        if (out / "model").is_dir():  # this run's own earlier save (a resume): rewritten whole, no file left over
            shutil.rmtree(out / "model")
        save_trained_model(model, out / "model", config, tasks, summary, evaluation=_evaluation_note(summary))
        atomic_write_json(out / "training_summary.json", summary)
        print(
            f"saved to {out / 'model'}; best dev {summary['best_dev']}"
        )  # the trainer logged what selection left out
    return 0


def _evaluation_note(summary: dict[str, Any]) -> str:
    """The model card's Evaluation section: this script measures no test split, only dev (for model selection)."""
    best, steps = summary.get("best_dev"), summary.get("steps")
    kept = (
        f"The kept state is step {best['step']} of {steps}, chosen on the dev queries (selection score "
        f"{best['score']:+.4f}, the dev nDCG@10 gain over the base model aggregated over the tasks)."
        if best
        else f"No dev evaluation: the state after step {steps} is kept."
    )
    gains = summary.get("gated_dev_gains")
    per_task = (
        " Per-task dev nDCG@10 gains: " + ", ".join(f"{t} {g:+.4f}" for t, g in gains.items()) + "." if gains else ""
    )
    bounds = summary.get("gated_dev_lower_bounds")
    if bounds:  # the "confident" gate rule: these, not the gains, opened the gates
        per_task += (
            " Their one-sided 95% lower bounds, which open a gate when above 0: "
            + ", ".join(f"{t} {b:+.4f}" for t, b in bounds.items())
            + "."
        )
    notes = "".join(f"\n\n**Note:** {w}." for w in summary.get("selection_warnings") or ())
    return (
        "Not evaluated on test queries: `training_recipes/hydra/train.py` only trains. "
        f"{kept}{per_task} Score it on a dataset's test split with `hydra-st hydra-evaluate --model <this folder> "
        "--dataset <name>`, or train and evaluate with `evaluation/hydra_eval.py`." + notes
    )


if __name__ == "__main__":
    sys.exit(main())
