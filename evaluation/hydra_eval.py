"""Hydra's evaluation table (issue 3, item 8): every task, every system, three metrics.

Trains one Hydra hypernet on all tasks plus one leave-one-task-out hypernet per task, evaluates BM25, the base
model, the RRF teacher, Hydra (right card), Hydra (another task's card) and Hydra LOTO on each task's test
queries, and writes ``evaluation/results/hydra.md`` and ``hydra.json``. Optionally saves the all-task model.

Run (from the repo root, with --data-dir / --cache-dir or HYDRA_ST_DATA_DIR / HYDRA_ST_CACHE_DIR):

    python evaluation/hydra_eval.py                       # all eight shared datasets
    python evaluation/hydra_eval.py --tasks scifact,nfcorpus,med --no-loto
    python evaluation/hydra_eval.py --save-model models/hydra-minilm-l6
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from hydra_st.cli.common import add_data_args
from hydra_st.evaluation import TRAIN_OVERLAP_POOLS, PairedComparison, format_p_value
from hydra_st.hydra.evaluate import GATE_RULES
from hydra_st.hydra.pipeline import ALL_TASKS, PipelineConfig, kept_untrained_note, run_pipeline
from hydra_st.settings import set_default_dirs
from hydra_st.utils.io import atomic_write_json, atomic_write_text, replacing_folder

RESULTS = Path(__file__).resolve().parent / "results"


def _targets(results: dict) -> list[str]:
    names = list(results)
    lines = []
    below = [n for n in names if results[n]["hydra"]["ndcg@10"] < results[n]["base"]["ndcg@10"]]
    lines.append(
        f"- seen tasks, Hydra ≥ base on every task: {'MET' if not below else 'MISSED on ' + ', '.join(below)}"
    )
    diffs = [
        results[n]["hydra"]["ndcg@10"] - results[n]["hydra_wrong_card"]["ndcg@10"]
        for n in names
        if "hydra_wrong_card" in results[n]
    ]
    lower, ties = sum(d > 0 for d in diffs), sum(d == 0 for d in diffs)
    lines.append(
        f"- wrong card < right card on {lower}/{len(names)} tasks ({'MET' if lower > len(names) / 2 else 'MISSED'}; "
        f"equal on {ties}, higher on {len(diffs) - lower - ties}: a task whose gate is closed, with a wrong card "
        "whose gate is closed too, gets the base model either way)"
    )
    mean = lambda s: sum(results[n][s]["ndcg@10"] for n in names) / len(names)  # noqa: E731
    if all("hydra_loto" in results[n] for n in names):
        gap = mean("hydra_loto") - mean("base")
        lines.append(
            f"- LOTO mean nDCG@10 − base mean = {gap:+.4f} ({'MET' if gap >= 0.010 else 'MISSED'}, need +0.010)"
        )
    gap = mean("hydra") - mean("rrf_teacher")
    lines.append(f"- stretch: Hydra mean − RRF teacher mean = {gap:+.4f} ({'MET' if gap >= 0 else 'MISSED'})")
    return lines


def _pool_table(results: dict) -> list[str]:
    """nDCG@10 in and out of the train pool, for the tasks with a train split (see ``train_pools``)."""
    names = [n for n in results if "ndcg@10/train_pool" in results[n]["base"]]
    if not names:
        return []
    systems = [s for s in ("base", "rrf_teacher", "hydra", "hydra_loto") if all(s in results[n] for n in names)]
    lines = [
        "Test nDCG@10 split by whether a query's relevant documents are also relevant to one of the task's "
        "training-side queries (`train pool`: a head can gain there by learning which documents tend to be relevant) "
        "or not (`new pool`); only tasks with a train split:",
        "",
        "| task | pool | queries | " + " | ".join(systems) + " |",
        "|---|---|---|" + "---|" * len(systems),
    ]
    for name in names:
        for pool in TRAIN_OVERLAP_POOLS:
            if f"ndcg@10/{pool}" not in results[name]["base"]:
                continue
            cells = " | ".join(f"{results[name][s][f'ndcg@10/{pool}']:.4f}" for s in systems)
            count = results[name]["base"][f"queries/{pool}"]
            lines.append(f"| {name} | {pool.replace('_', ' ')} | {count} | {cells} |")
    return lines + [""]


def _paired_table(paired: dict) -> list[str]:
    """Hydra − base and LOTO − base per task, with the paired 95% CI and p-value over the task's test queries."""
    systems = [s for s in ("hydra", "hydra_loto") if all(s in p for p in paired.values())]
    if not paired or not systems:
        return []
    lines = [
        "nDCG@10 difference to the base model per task, with a paired bootstrap 95% CI and a paired randomization "
        "p-value over the task's test queries (10,000 seeded resamples; query-to-query noise of this one training "
        "run, not seed noise):",
        "",
        "| task | " + " | ".join(f"{s} − base | 95% CI | p" for s in systems) + " |",
        "|---|" + "---|---|---|" * len(systems),
    ]
    for name, by_system in paired.items():
        cells = []
        for s in systems:
            c = PairedComparison(**by_system[s])
            cells += [f"{c.mean_difference:+.4f}", c.ci_text, format_p_value(c.p_value)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def check_model_destination(dest: str | os.PathLike[str]) -> Path:
    """``dest`` for ``--save-model``: absent, or a model folder (one with ``modules.json``) that gets replaced.

    Raises:
        ValueError: ``dest`` exists and is not a model folder (a file, or a folder without ``modules.json``).
    """
    dest = Path(dest)
    if dest.exists() and not (dest.is_dir() and (dest / "modules.json").is_file()):
        raise ValueError(
            f"--save-model {dest}: it exists and is not a model folder (no modules.json), so it is not replaced; "
            "give a new path or a model folder"
        )
    return dest


def publish_model(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Copy the model folder ``source`` to ``dest``, replacing a model folder there without ever leaving none.

    The copy is made in a temporary sibling of ``dest`` and renamed into place; an old ``dest`` is renamed aside
    first and removed only once the new one is in place. A crash leaves either the old model or the new one at
    ``dest`` (and at worst a ``.<name>.*`` sibling to delete).

    Example:
        >>> import pathlib, tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "new").mkdir(); _ = (root / "new" / "modules.json").write_text("[]")
        >>> publish_model(root / "new", root / "published")
        >>> sorted(p.name for p in root.iterdir()), (root / "published" / "modules.json").read_text()
        (['new', 'published'], '[]')
    """
    source = Path(source)
    dest = check_model_destination(dest)
    if not (source / "modules.json").is_file():
        raise ValueError(f"{source} is not a saved model (no modules.json)")
    with replacing_folder(dest) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)  # also gives staging source's permissions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(ALL_TASKS))
    parser.add_argument("--no-loto", action="store_true")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--output-dir", default="outputs/hydra-eval")
    parser.add_argument("--save-model", default=None, help="copy the trained all-task model here")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the pipeline's, 0)")
    parser.add_argument("--no-gate", action="store_true", help="no fallback gate (the head as trained, every task)")
    parser.add_argument(
        "--gate-rule",
        choices=GATE_RULES,
        default=PipelineConfig.gate_rule,
        help="what opens a gate (see hydra_st.hydra.evaluate.GATE_RULES; the published model used positive)",
    )
    parser.add_argument("--query-shift", action="store_true", help="also calibrate a query-only shift (see README)")
    parser.add_argument(
        "--query-shift-gated", action="store_true", help="with --query-shift: no shift on a task whose dev it lowers"
    )
    parser.add_argument("--results", default=str(RESULTS), help="where hydra.md / hydra.json are written")
    add_data_args(parser)  # --data-dir / --cache-dir, else $HYDRA_ST_DATA_DIR / $HYDRA_ST_CACHE_DIR
    args = parser.parse_args(argv)
    set_default_dirs(args.data_dir, args.cache_dir)
    if args.save_model:  # checked before hours of training, and again when the model is copied
        try:
            check_model_destination(args.save_model)
        except ValueError as exc:
            parser.error(str(exc))
    config = PipelineConfig(
        tasks=tuple(args.tasks.split(",")),
        loto=not args.no_loto,
        gated=not args.no_gate,
        gate_rule=args.gate_rule,
        query_shift=args.query_shift or args.query_shift_gated,
        query_shift_gated=args.query_shift_gated,
    )
    if args.seed is not None:
        config = replace(config, training=replace(config.training, seed=args.seed))
    if args.epochs is not None:
        config = replace(config, training=replace(config.training, epochs=args.epochs))
    t0 = time.perf_counter()
    report = run_pipeline(config, args.output_dir, show_progress_bar=not args.no_progress)
    report.pop("table")
    targets = _targets(report["results"])
    untrained = kept_untrained_note(report["training"].get("best_dev"), config)
    if untrained:  # beside the targets: every number below is then the base model's
        targets.append(f"- **{untrained}**")
    md = [
        "# Hydra: per-task evaluation",
        "",
        f"Command: `python evaluation/hydra_eval.py {' '.join(argv if argv is not None else sys.argv[1:])}`  ",
        f"Wall time: {time.perf_counter() - t0:.0f} s on this machine. Test split of each task; training used "
        "no test query and no test qrels (see the training sources below).",
        "",
        "## Targets",
        "",
        *targets,
        "",
    ]
    out_md = Path(args.output_dir) / "hydra_results.md"
    md += ["## Tables", "", out_md.read_text(encoding="utf-8"), "", *_pool_table(report["results"])]
    md += _paired_table(report.get("paired_vs_base", {}))
    md += ["## Training sources", ""]
    md += [f"- {k}: {v}" for k, v in report["train_sources"].items()]
    md += [
        "",
        "## Training summary",
        "",
        "```json",
        json.dumps(
            {
                k: report["training"][k]
                for k in (
                    "steps",
                    "best_dev",
                    "trainable_parameters",
                    "generated_parameters_per_head",
                    "gates",
                    "query_shift",
                )
                if k in report["training"]
            },
            indent=2,
        ),
        "```",
        "",
        "## Findings",
        "",
        "Across seeds and ablations (hand-written, from `hydra_eval.py --seed` repeats and `hydra_ablation.py`): "
        "[hydra_findings.md](hydra_findings.md).",
        "",
    ]
    results_dir = Path(args.results)
    atomic_write_text(results_dir / "hydra.md", "\n".join(md))
    atomic_write_json(results_dir / "hydra.json", {**report, "targets": targets})
    print("\n".join(md))
    if args.save_model:
        publish_model(Path(args.output_dir) / "model", args.save_model)
        print(f"model copied to {args.save_model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
