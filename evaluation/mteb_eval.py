"""The project's models through MTEB's own retrieval protocol, checked against this package's evaluation.

For each dataset (a local BEIR-layout folder, wrapped as an MTEB task by
:func:`hydra_st.evaluation.mteb_tasks.beir_retrieval_task`) this runs ``mteb.evaluate`` on

* ``minilm``: the frozen base, all-MiniLM-L6-v2 (plain SentenceTransformer);
* ``hydra``: ``models/hydra-minilm-l6`` through :class:`hydra_st.hydra.mteb.HydraMTEBWrapper`, which hands MTEB's
  encode calls the dataset's bundled task card;
* ``hypencoder``: ``models/hypencoder-minilm-l6`` (the run trained on scifact's train queries) through
  :class:`hydra_st.hypencoder.mteb.HypencoderMTEBWrapper`: MTEB scores with ``model.similarity``, which is the
  q-net, and the wrapper makes MTEB's model metadata say so (similarity ``custom``, the real parameter count).

and puts MTEB's nDCG@10 beside the number this package's own pipeline reported for the same model and dataset
(``evaluation/results/{baselines,hydra,hypencoder}.json``). MTEB encodes every corpus again (no cache is shared
with hydra_st), so this costs about four minutes per model on scifact on two CPU cores.

Usage::

    HYDRA_ST_DATA_DIR=../shared/data/beir python evaluation/mteb_eval.py                  # scifact, nfcorpus
    python evaluation/mteb_eval.py --datasets adi med --models minilm hydra --data-dir ../shared/data/beir

Writes ``evaluation/results/mteb.md`` and ``mteb.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "evaluation" / "results"
MODELS = ("minilm", "hydra", "hypencoder")


def own_scores() -> dict[str, dict[str, float]]:
    """nDCG@10 per model and dataset from this package's result files (where they exist)."""
    out: dict[str, dict[str, float]] = {m: {} for m in MODELS}
    baselines = RESULTS / "baselines.json"
    if baselines.is_file():
        for name, systems in json.loads(baselines.read_text())["results"].items():
            out["minilm"][name] = systems["dense"]["ndcg@10"]
    hydra = RESULTS / "hydra.json"
    if hydra.is_file():
        for name, systems in json.loads(hydra.read_text())["results"].items():
            out["hydra"][name] = systems["hydra"]["ndcg@10"]
    hyp = RESULTS / "hypencoder.json"
    trained_on = ROOT / "models" / "hypencoder-minilm-l6" / "training_config.json"
    if hyp.is_file() and trained_on.is_file():
        # the published folder holds one of the per-dataset runs: compare with that run's scores on every dataset
        key = "+".join(json.loads(trained_on.read_text())["datasets"])
        run = json.loads(hyp.read_text())["models"]["hypencoder"]["runs"].get(key, {})
        out["hypencoder"] = {name: m["ndcg@10"] for name, m in run.get("test", {}).items()}
    return out


def load_model(label: str) -> Any:
    from hydra_st import Hydra, Hypencoder
    from hydra_st.hub.offline import load_base_model

    if label == "minilm":
        return load_base_model()
    if label == "hydra":
        from hydra_st.hydra.mteb import HydraMTEBWrapper

        model = Hydra(str(ROOT / "models" / "hydra-minilm-l6"))
        model.model_card_data.model_name = "hydra-st/hydra-minilm-l6"
        return HydraMTEBWrapper(model)
    from hydra_st.hypencoder.mteb import HypencoderMTEBWrapper

    model = Hypencoder(str(ROOT / "models" / "hypencoder-minilm-l6"))
    model.model_card_data.model_name = "hydra-st/hypencoder-minilm-l6"
    return HypencoderMTEBWrapper(model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["scifact", "nfcorpus"],
        help="dataset names under the data dir, or folders; each is evaluated on its test split "
        "(default: scifact nfcorpus)",
    )
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=list(MODELS), help="models to evaluate (default: all three)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="folder holding BEIR-layout datasets (default: $HYDRA_ST_DATA_DIR)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument(
        "--out",
        default=str(RESULTS / "mteb"),
        help="path stem of the report: writes <out>.md and <out>.json, and keeps the rows of an earlier <out>.json "
        "(default: evaluation/results/mteb, the published report)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="drop the rows of earlier runs (default: keep the other models' rows)"
    )
    parser.add_argument("--report-only", action="store_true", help="evaluate nothing; re-render the kept rows")
    args = parser.parse_args(argv)
    if not args.report_only:
        from hydra_st.data import dataset_problem

        if problem := dataset_problem(args.datasets, ["test"], args.data_dir):  # every dataset is evaluated on test
            print(f"{parser.prog}: error: --datasets {problem}", file=sys.stderr)
            return 2

    from hydra_st.utils.imports import require

    mteb = require("mteb", extra="mteb")
    from hydra_st.evaluation.mteb_tasks import beir_retrieval_task
    from hydra_st.utils.io import atomic_write_json, atomic_write_text

    torch.set_num_threads(args.threads)
    command = " ".join(["python evaluation/mteb_eval.py", *(argv if argv is not None else sys.argv[1:])])
    ours = own_scores()
    previous = Path(args.out).with_suffix(".json")
    rows: list[dict[str, Any]] = []
    if previous.is_file() and not args.fresh:  # re-running one model keeps the others' rows
        redo = set() if args.report_only else {(m, d) for m in args.models for d in args.datasets}
        rows = [r for r in json.loads(previous.read_text())["rows"] if (r["model"], r["dataset"]) not in redo]
    for label in [] if args.report_only else args.models:
        model = load_model(label)
        for name in args.datasets:
            task = beir_retrieval_task(name, data_dir=args.data_dir)
            t0 = time.perf_counter()
            result = mteb.evaluate(model, task, cache=None, show_progress_bar=False)
            scores = result.task_results[0].scores[task.metadata.eval_splits[0]][0]
            row = {
                "model": label,
                "dataset": name,
                "mteb_ndcg@10": float(scores["ndcg_at_10"]),
                "mteb_recall@100": float(scores["recall_at_100"]),
                "hydra_st_ndcg@10": ours[label].get(name),
                "seconds": time.perf_counter() - t0,
                "threads": args.threads,
                "command": command,
            }
            if label == "hydra":
                row["card"] = model.cards_used.get(task.metadata.name)
            rows.append(row)
            print(json.dumps(row), flush=True)

    rows.sort(key=lambda r: (MODELS.index(r["model"]), r["dataset"]))
    for r in rows:  # kept rows too: compare with the package's current result files
        r["hydra_st_ndcg@10"] = ours[r["model"]].get(r["dataset"])
    lines = render(rows, mteb.__version__, command)
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), {"rows": rows, "mteb_version": mteb.__version__})
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def render(rows: list[dict[str, Any]], mteb_version: str, command: str) -> list[str]:
    """The Markdown report: the table, which command made each row, and how far MTEB and the package agree."""
    lines = [
        "# The project's models through MTEB",
        "",
        f"Command: `{command}` (rows of earlier runs are kept unless "
        f"`--fresh`); mteb {mteb_version}, local BEIR-layout tasks (test split). `hydra_st` is the nDCG@10 this "
        "package's own pipeline reported for the same model and dataset (pytrec_eval over the same qrels); `s` is "
        "MTEB's time for the row with that many torch threads, corpus encoding included.",
        "",
        "| model | dataset | MTEB nDCG@10 | MTEB R@100 | hydra_st nDCG@10 | difference | card | s (threads) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        own = r["hydra_st_ndcg@10"]
        own_cell = f"{own:.4f} | {r['mteb_ndcg@10'] - own:+.4f}" if own is not None else "– | –"
        lines.append(
            f"| {r['model']} | {r['dataset']} | {r['mteb_ndcg@10']:.4f} | {r['mteb_recall@100']:.4f} | {own_cell} | "
            f"{r.get('card', '–')} | {r['seconds']:.0f} ({r.get('threads', '?')}) |"
        )
    compared = [r for r in rows if r["hydra_st_ndcg@10"] is not None]
    agree = sum(abs(r["mteb_ndcg@10"] - r["hydra_st_ndcg@10"]) < 5e-5 for r in compared)
    lines += ["", f"MTEB's nDCG@10 equals this package's own to four decimals on {agree} of {len(compared)} rows."]
    trained_on = ROOT / "models" / "hypencoder-minilm-l6" / "training_config.json"
    if any(r["model"] == "hypencoder" for r in rows) and trained_on.is_file():
        datasets = ", ".join(json.loads(trained_on.read_text())["datasets"])
        lines.append(
            f"The published Hypencoder is the run trained on {datasets} train queries; the in-domain run of every "
            "dataset is in [`hypencoder.md`](hypencoder.md)."
        )
    by_command: dict[str, list[str]] = {}
    for r in rows:
        by_command.setdefault(r.get("command", "(not recorded)"), []).append(f"{r['model']}/{r['dataset']}")
    lines += ["", "Rows by the command that made them:", ""]
    lines += [f"- `{cmd}`: {', '.join(made)}" for cmd, made in by_command.items()]
    return lines


if __name__ == "__main__":
    sys.exit(main())
