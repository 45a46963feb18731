"""Baseline table: BM25, dense all-MiniLM-L6-v2 and RRF(BM25, dense) on every shared dataset, test split.

Usage::

    HYDRA_ST_DATA_DIR=../shared/data/beir python evaluation/baselines.py
    python evaluation/baselines.py --data-dir ../shared/data/beir --datasets scifact nfcorpus

Writes ``evaluation/results/baselines.md`` and ``evaluation/results/baselines.json``. Corpus embeddings come
from (and go to) the hydra_st embedding cache, so a re-run takes seconds.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from hydra_st.evaluation import format_table
from hydra_st.evaluation.baselines import BaselineSuite
from hydra_st.settings import DEFAULT_BASE_MODEL
from hydra_st.utils.io import atomic_write_json, atomic_write_text

DATASETS = ["scifact", "nfcorpus", "cranfield", "med", "cacm", "vaswani", "adi", "msmarco-dl19-subset"]
METRICS = ["ndcg@10", "mrr@10", "recall@100", "map"]
# MTEB's published nDCG@10 for all-MiniLM-L6-v2 (results repo, revision 8b3219a9) and the targets.
PUBLISHED_DENSE = {"scifact": 0.6451, "nfcorpus": 0.3159}
BM25_TARGET = {"scifact": 0.680, "nfcorpus": 0.315}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", default=None, help="folder holding BEIR-layout datasets (default: $HYDRA_ST_DATA_DIR)"
    )
    parser.add_argument(
        "--datasets", nargs="+", default=DATASETS, help=f"datasets, test split (default: {' '.join(DATASETS)})"
    )
    parser.add_argument(
        "--output",
        default=str(Path(__file__).parent / "results" / "baselines"),
        help="path stem of the tables: writes <output>.md and <output>.json (default: evaluation/results/baselines, "
        "the published tables)",
    )
    args = parser.parse_args(argv)
    command = " ".join(["python evaluation/baselines.py", *(argv if argv is not None else sys.argv[1:])])

    rows: dict[str, dict[str, float | str | None]] = {}
    results: dict[str, dict[str, dict[str, float]]] = {}
    checks: list[str] = []
    start = time.time()
    for name in args.datasets:
        suite = BaselineSuite.for_dataset(name, data_dir=args.data_dir)
        results[name] = {}
        for retriever in ("bm25", "dense", "rrf"):
            _, result = suite.evaluate(retriever, metrics=METRICS)
            results[name][retriever] = result.aggregate
            rows[f"{name} / {retriever}"] = {"queries": str(result.num_queries), **result.aggregate}
            print(
                f"{name:20s} {retriever:6s} " + "  ".join(f"{m}={v:.4f}" for m, v in result.aggregate.items()),
                flush=True,
            )
        ndcg = {r: results[name][r]["ndcg@10"] for r in results[name]}
        if name in BM25_TARGET:
            ok = ndcg["bm25"] >= BM25_TARGET[name]
            checks.append(
                f"- {name}: BM25 nDCG@10 {ndcg['bm25']:.4f} "
                f"(target ≥ {BM25_TARGET[name]:.3f}: {'met' if ok else 'MISSED'})"
            )
        if name in PUBLISHED_DENSE:
            gap = ndcg["dense"] - PUBLISHED_DENSE[name]
            ok = abs(gap) <= 0.005
            checks.append(
                f"- {name}: dense nDCG@10 {ndcg['dense']:.4f} vs MTEB's published {PUBLISHED_DENSE[name]:.4f} "
                f"(difference {gap:+.4f}; target ±0.005: {'met' if ok else 'MISSED'}); RRF {ndcg['rrf']:.4f}"
            )
    elapsed = time.time() - start
    table = format_table(rows, ["queries", *METRICS], row_header="dataset / retriever")
    # the targets exist for scifact and nfcorpus only: without them there is no checks section at all
    acceptance = f"## Acceptance checks\n\n{chr(10).join(checks)}\n\n" if checks else ""
    text = f"""# Baselines (test split)

Produced by `{command}` in {elapsed:.0f} s on {platform.machine()} ({platform.python_version()}),
with corpus embeddings from the hydra_st cache.

* **bm25**: bm25s, method `lucene`, k1=1.5, b=0.75, Snowball English stemmer, English stop words, top 1000.
* **dense**: `{DEFAULT_BASE_MODEL}`, cosine, exact search (faiss IndexFlatIP), top 1000; documents are
  `title + " " + text`, max 256 tokens (the model's setting).
* **rrf**: Reciprocal Rank Fusion, k=60, over each ranker's top 100.
* Metrics: ir_measures/pytrec_eval; means over all judged queries of the split (a query with no retrieved
  document counts 0). `mrr@10` is reciprocal rank within the top 10; `map` is over the whole run.

{acceptance}## Results

{table}
"""
    out = Path(args.output)
    atomic_write_text(out.with_suffix(".md"), text)
    atomic_write_json(
        out.with_suffix(".json"), {"metrics": METRICS, "results": results, "seconds": elapsed, "command": command}
    )
    print(text)


if __name__ == "__main__":
    main()
