"""``hydra-st evaluate``: run the BM25 / dense / RRF baselines on datasets and score them."""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra_st.cli.common import add_data_args, write_run_and_result
from hydra_st.settings import DEFAULT_BASE_MODEL


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate BM25, dense and RRF retrieval on a dataset",
        description="Retrieve with BM25, the dense base model and their RRF fusion; print a metrics table and "
        "write TREC run files and JSON results.",
    )
    parser.add_argument("--dataset", action="append", required=True, help="dataset name or path (repeatable)")
    parser.add_argument(
        "--retriever", nargs="+", choices=["bm25", "dense", "rrf"], default=["bm25", "dense", "rrf"], help="retrievers"
    )
    parser.add_argument("--split", default="test", help="qrels split to evaluate (default: test)")
    parser.add_argument("--model", default=DEFAULT_BASE_MODEL, help="dense model (Hub id or path)")
    parser.add_argument("--top-k", type=int, default=1000, help="documents retrieved per query (default: 1000)")
    parser.add_argument("--rrf-k", type=float, default=60.0, help="RRF constant (default: 60)")
    parser.add_argument("--rrf-depth", type=int, default=100, help="top documents of each ranker fused (default: 100)")
    parser.add_argument("--metrics", nargs="+", default=None, help="metrics (default: ndcg@10 mrr@10 recall@100 map)")
    parser.add_argument("--output-dir", default="outputs/evaluate", help="where run files and results go")
    add_data_args(parser)
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from hydra_st.evaluation import DEFAULT_METRICS, format_table
    from hydra_st.evaluation.baselines import BaselineSuite

    metrics = args.metrics or list(DEFAULT_METRICS)
    rows: dict[str, dict[str, float | str | None]] = {}
    for name in args.dataset:
        suite = BaselineSuite.for_dataset(
            name, split=args.split, data_dir=args.data_dir, top_k=args.top_k, rrf_k=args.rrf_k,
            rrf_depth=args.rrf_depth, model=args.model, cache_dir=args.cache_dir,
        )  # fmt: skip
        out_dir = Path(args.output_dir) / suite.dataset.name / args.split
        for retriever in args.retriever:
            run, result = suite.evaluate(retriever, metrics=metrics)
            rows[f"{suite.dataset.name} / {retriever}"] = write_run_and_result(run, result, out_dir, retriever)
        print(f"wrote runs and results to {out_dir}")
    print(format_table(rows, ["queries", *metrics], row_header=f"dataset / retriever ({args.split})"))
    return 0
