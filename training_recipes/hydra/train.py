"""Train a Hydra hypernet from a recipe (YAML), with accelerate: CPU, one GPU, or several processes.

    python training_recipes/hydra/train.py --recipe training_recipes/hydra/recipe.yaml --output-dir outputs/hydra
    accelerate launch --config_file training_recipes/hydra/accelerate_config.yaml training_recipes/hydra/train.py
    torchrun --standalone --nproc_per_node 2 training_recipes/hydra/train.py --output-dir outputs/hydra-ddp

Every process builds the (cached) task data; batches are dealt round-robin to processes and gradients are
averaged. The main process writes checkpoints, the loss log and the final model.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import yaml

from hydra_st.hub.offline import load_base_model
from hydra_st.hydra.pipeline import PipelineConfig, load_tasks, train_model
from hydra_st.hydra.preferences import PreferenceConfig
from hydra_st.hydra.trainer import TrainingConfig
from hydra_st.utils.io import atomic_write_json

HERE = Path(__file__).resolve().parent


def load_recipe(path: str | Path) -> PipelineConfig:
    """Read a recipe YAML into a :class:`PipelineConfig` (unknown keys are an error)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    prefs = PreferenceConfig(**data.pop("preferences", {}))
    training = TrainingConfig(**data.pop("training", {}))
    if "tasks" in data:
        data["tasks"] = tuple(data["tasks"])
    return PipelineConfig(preferences=prefs, training=training, loto=False, **data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default=str(HERE / "recipe.yaml"))
    parser.add_argument("--output-dir", default="outputs/hydra-train")
    parser.add_argument("--resume-from", default=None, help="a checkpoint folder written by an earlier run")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help="steps between checkpoints (default: the recipe's; 0: only checkpoint-final)",
    )
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--tasks", default=None, help="comma-separated dataset names (default: the recipe's)")
    args = parser.parse_args(argv)
    config = load_recipe(args.recipe)
    if args.tasks:
        config = replace(config, tasks=tuple(args.tasks.split(",")))
    if args.epochs is not None:
        config = replace(config, training=replace(config.training, epochs=args.epochs))
    if args.checkpoint_every is not None:
        config = replace(config, training=replace(config.training, checkpoint_every=args.checkpoint_every))
    main_process = int(os.environ.get("RANK", "0")) == 0
    base = load_base_model()
    tasks = load_tasks(config.tasks, base, n_pseudo=config.n_pseudo, show_progress_bar=main_process)
    out = Path(args.output_dir)
    model, summary = train_model(
        base, tasks, config, output_dir=out / "training", show_progress_bar=main_process, resume_from=args.resume_from
    )
    if main_process:
        model.save(str(out / "model"))
        atomic_write_json(out / "training_summary.json", summary)
        print(f"saved to {out / 'model'}; best dev {summary['best_dev']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
