"""What moves Hydra's number: one-factor-at-a-time ablations of the seen-task setup, over several seeds.

Each variant changes one thing in the published pipeline (``PipelineConfig(gate_rule="positive")``: gated 384-d
identity-initialised head, rank 4, pairwise log-sigmoid + anchor loss, confidence-weighted top-3-vs-rank-10+ pairs,
full task cards), trains one hypernet on all tasks and scores Hydra with each task's own card on its test queries.
Model selection and gates use dev queries only, as in ``hydra_eval.py``; the test split is read for the table
alone. ``--gate-rule confident`` uses the package's default gate rule instead.

Run (from the repo root, with --data-dir / --cache-dir or HYDRA_ST_DATA_DIR / HYDRA_ST_CACHE_DIR; about 10 s per
variant and seed once the corpus embeddings are cached)::

    python evaluation/hydra_ablation.py                          # all variants, seeds 0,1,2, all eight tasks
    python evaluation/hydra_ablation.py --variants default,no_gate --seeds 0 --tasks scifact,nfcorpus
    python evaluation/hydra_ablation.py --variants default,one_shared_card,no_gate --loto --name hydra_ablation_loto

``--loto`` also trains one hypernet per held-out task on the others and scores the held-out task with its own
(variant) card: 9× the training. Writes ``evaluation/results/<name>.{md,json}`` (``hydra_ablation`` by default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra_st.cli.common import add_data_args
from hydra_st.hydra.evaluate import GATE_RULES, evaluate_task
from hydra_st.hydra.pipeline import ALL_TASKS, PipelineConfig, kept_untrained_note, load_tasks, train_model
from hydra_st.hydra.task_card import TaskCard
from hydra_st.settings import set_default_dirs
from hydra_st.utils.io import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"

SHARED_CARD = TaskCard(name="retrieval", description="Retrieve the documents that are relevant to a query.")


def _losses(**weights: float) -> Callable[[PipelineConfig], PipelineConfig]:
    def apply(config: PipelineConfig) -> PipelineConfig:
        merged = {**config.training.loss_weights, **weights}
        return replace(config, training=replace(config.training, loss_weights=merged))

    return apply


def _prefs(**changes: Any) -> Callable[[PipelineConfig], PipelineConfig]:
    return lambda config: replace(config, preferences=replace(config.preferences, **changes))


def _same(config: PipelineConfig) -> PipelineConfig:
    return config


# name -> (what it changes, config change, card change or None, the variant it is compared with)
VARIANTS: dict[str, tuple[str, Callable[[PipelineConfig], PipelineConfig], Callable[[TaskCard], TaskCard] | None, str]]
VARIANTS = {
    "default": ("the published setup", _same, None, "default"),
    "no_gate": ("no fallback gate: every task keeps its trained head", lambda c: replace(c, gated=False), None,
                "default"),
    "uniform_pairs": ("pairs weighted 1 instead of by teacher agreement × rank gap",
                      _prefs(confidence_weighted=False), None, "default"),
    "random_pairs": ("random ordered pairs inside the fused top 30 instead of top 3 vs rank ≥ 10",
                     _prefs(mode="random"), None, "default"),
    "harder_pairs": ("top 1 vs ranks ≥ 5 (closer, harder pairs)", _prefs(top_n=1, hard_lo=5), None, "default"),
    "judged_positives": ("train-qrels judgments as a certain teacher where a query has ≤ 3 "
                         "(801/809 scifact, 449/2,590 nfcorpus train queries)",
                         _prefs(judged_positives=True), None, "default"),
    "plus_listwise": ("+ listwise KL to the fused scores (weight 1)", _losses(listwise=1.0), None, "default"),
    "plus_infonce": ("+ in-batch InfoNCE on the teacher's top-1 (weight 0.5)", _losses(infonce=0.5), None,
                     "default"),
    "plus_margin_mse": ("+ MarginMSE on RRF margins (weight 1)", _losses(margin_mse=1.0), None, "default"),
    "no_anchor": ("no anchor term (scores free to leave the base model's)", _losses(anchor=0.0), None, "default"),
    "rank_1": ("card-dependent update of rank 1", lambda c: replace(c, rank=1), None, "default"),
    "rank_16": ("card-dependent update of rank 16", lambda c: replace(c, rank=16), None, "default"),
    "head_256_pca": ("384→256 head, PCA-initialised (the issue's default size; no gate, so against no_gate)",
                     lambda c: replace(c, out_dim=256, gated=False,
                                       training=replace(c.training, init="pca")), None, "no_gate"),
    "card_no_examples": ("cards without example queries and documents", _same,
                         lambda card: replace(card, example_queries=(), example_documents=()), "default"),
    "one_shared_card": ("every task gets the same generic card (no task information)", _same,
                        lambda card: SHARED_CARD, "default"),
    "query_shift": ("+ a query-only shift toward the documents (α × the corpus − training-query mean gap, α on dev)",
                    lambda c: replace(c, query_shift=True), None, "default"),
    "query_shift_gated": ("+ the query shift, closed on a task whose own dev score it lowers",
                          lambda c: replace(c, query_shift=True, query_shift_gated=True), None, "default"),
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(ALL_TASKS))
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--results", default=str(RESULTS), help="folder of the <name>.md / .json results")
    parser.add_argument("--name", default="hydra_ablation", help="file name of the results (default hydra_ablation)")
    parser.add_argument("--loto", action="store_true", help="also measure leave-one-task-out per variant")
    parser.add_argument(
        "--gate-rule",
        choices=GATE_RULES,
        default="positive",
        help="the variants' gate rule (default positive, as the published ablations were measured: with the "
        "package's default, confident, every gate closes on these tasks and the variants tie with the base model)",
    )
    parser.add_argument("--no-progress", action="store_true")
    add_data_args(parser)  # --data-dir / --cache-dir, else $HYDRA_ST_DATA_DIR / $HYDRA_ST_CACHE_DIR
    args = parser.parse_args(argv)
    set_default_dirs(args.data_dir, args.cache_dir)
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    from hydra_st.hub.offline import load_base_model

    t0 = time.perf_counter()
    base = load_base_model()
    show = not args.no_progress
    default = PipelineConfig(tasks=tuple(args.tasks.split(",")), loto=False, gate_rule=args.gate_rule)
    results: dict[str, Any] = {"tasks": list(default.tasks), "seeds": seeds, "variants": {}, "reference": {}}
    results["gate_rule"] = args.gate_rule
    for seed in seeds:
        # pseudo-queries and dev splits follow the seed, as in hydra_eval.py --seed
        tasks = load_tasks(default.tasks, base, n_pseudo=default.n_pseudo, seed=seed, show_progress_bar=show)
        if not results["reference"]:
            systems = ("base", "rrf_teacher")
            ref = {t.name: evaluate_task(t, None, {}, systems=systems) for t in tasks}
            results["reference"] = {s: {n: ref[n][s]["ndcg@10"] for n in ref} for s in systems}
        for name in names:
            label, change, card_change, _ = VARIANTS[name]
            config = change(replace(default, training=replace(default.training, seed=seed)))
            run_tasks = [replace(t, card=card_change(t.card)) for t in tasks] if card_change else tasks
            start = time.perf_counter()
            model, summary = train_model(base, run_tasks, config, show_progress_bar=show)
            scores = {t.name: evaluate_task(t, model, {}, systems=("hydra",))["hydra"]["ndcg@10"] for t in run_tasks}
            entry = results["variants"].setdefault(name, {"label": label, "runs": {}})
            entry["runs"][str(seed)] = {
                "ndcg@10": scores,
                "gates": summary.get("gates"),
                "best_dev": summary.get("best_dev"),
                **({"query_shift": summary["query_shift"]} if "query_shift" in summary else {}),
                "seconds": time.perf_counter() - start,
            }
            if args.loto:
                entry["runs"][str(seed)]["loto_ndcg@10"] = {
                    t.name: leave_one_out_score(base, run_tasks, t, config, show) for t in run_tasks
                }
            print(f"seed {seed} {name}: mean {statistics.fmean(scores.values()):.4f}", flush=True)
    results["wall_seconds"] = time.perf_counter() - t0
    md = render(results, argv if argv is not None else sys.argv[1:])
    atomic_write_json(f"{args.results}/{args.name}.json", results)
    atomic_write_text(f"{args.results}/{args.name}.md", md)
    print(md)
    return 0


def leave_one_out_score(base: Any, tasks: list[Any], held_out: Any, config: PipelineConfig, show: bool) -> float:
    """Test nDCG@10 on ``held_out`` of a hypernet trained on the other tasks, given ``held_out``'s card."""
    others = [t for t in tasks if t.name != held_out.name]
    model, _ = train_model(base, others, config, show_progress_bar=show)
    return evaluate_task(held_out, model, {}, systems=("hydra",))["hydra"]["ndcg@10"]


def _kept_untrained(results: dict[str, Any]) -> list[str]:
    """One flag per variant whose training kept step 0 (no dev improvement) for some seed."""
    lines = []
    for name, entry in results["variants"].items():
        config = VARIANTS[name][1](PipelineConfig(tasks=tuple(results["tasks"]), loto=False))
        notes: dict[str, list[str]] = {}
        for seed, run in entry["runs"].items():
            note = kept_untrained_note(run.get("best_dev"), config)
            if note:
                notes.setdefault(note, []).append(seed)
        lines += [
            f"- **{name}, seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}: {note}**"
            for note, seeds in notes.items()
        ]
    return lines


def render(results: dict[str, Any], argv: list[str]) -> str:
    tasks, seeds = results["tasks"], results["seeds"]
    base = results["reference"]["base"]
    teacher_mean = statistics.fmean(results["reference"]["rrf_teacher"].values())
    base_mean = statistics.fmean(base.values())

    def gains(name: str) -> list[float]:  # per seed: mean nDCG@10 over tasks − base mean
        runs = results["variants"][name]["runs"]
        return [statistics.fmean(runs[str(s)]["ndcg@10"].values()) - base_mean for s in seeds]

    def fmt(values: list[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:+.4f}"
        return f"{statistics.fmean(values):+.4f} ± {statistics.stdev(values):.4f}"

    lines = [
        "# Hydra ablations: what moves the number",
        "",
        f"Command: `python evaluation/hydra_ablation.py {' '.join(argv)}`. Wall time {results['wall_seconds']:.0f} s.",
        "",
        f"Seen tasks ({len(tasks)}), Hydra with each task's own card, test nDCG@10. Seeds {seeds}: the seed sets the "
        "pseudo-queries, dev splits, batch order and initialisation; dev queries choose the kept state and the gates. "
        f"Base model mean {base_mean:.4f}; RRF teacher mean {teacher_mean:.4f} "
        f"({teacher_mean - base_mean:+.4f}, the stretch target).",
        "",
        "| variant | what changes | Hydra − base (mean ± sd over seeds) | − its reference, paired by seed | "
        "tasks below base (per seed) |",
        "|---|---|---|---|---|",
    ]
    for name, entry in results["variants"].items():
        reference = VARIANTS[name][3]
        own = gains(name)
        paired = "–"
        if reference != name and reference in results["variants"]:
            paired = fmt([a - b for a, b in zip(own, gains(reference), strict=True)]) + f" (vs {reference})"
        below = " / ".join(str(sum(entry["runs"][str(s)]["ndcg@10"][t] < base[t] for t in tasks)) for s in seeds)
        lines.append(f"| {name} | {entry['label']} | {fmt(own)} | {paired} | {below} |")
    untrained = _kept_untrained(results)
    if untrained:
        lines += ["", *untrained]
    lines += ["", "Per task (mean over seeds), nDCG@10 − base:", ""]
    lines += ["| variant | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for name, entry in results["variants"].items():
        cells = [
            f"{statistics.fmean(entry['runs'][str(s)]['ndcg@10'][t] for s in seeds) - base[t]:+.4f}" for t in tasks
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    with_loto = [n for n, e in results["variants"].items() if all("loto_ndcg@10" in r for r in e["runs"].values())]
    if with_loto:
        lines += [
            "",
            "Leave-one-task-out: per held-out task, a hypernet trained on the other tasks, given the held-out task's "
            "(variant) card; test nDCG@10 − base:",
            "",
            "| variant | LOTO mean − base (mean ± sd over seeds) | per seed | " + " | ".join(tasks) + " |",
            "|---|---|---|" + "---|" * len(tasks),
        ]
        for name in with_loto:
            runs = results["variants"][name]["runs"]
            per_seed = [statistics.fmean(runs[str(s)]["loto_ndcg@10"].values()) - base_mean for s in seeds]
            cells = [
                f"{statistics.fmean(runs[str(s)]['loto_ndcg@10'][t] for s in seeds) - base[t]:+.4f}" for t in tasks
            ]
            seed_cells = " / ".join(f"{v:+.4f}" for v in per_seed)
            lines.append(f"| {name} | {fmt(per_seed)} | {seed_cells} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
