"""``hydra-st evaluate``: run the BM25 / dense / RRF baselines on datasets and score them; ``hydra-st compare``: is one
run file better than another, or is the difference query-to-query noise?"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path

from hydra_st.cli.common import PLAIN, add_data_args, check_model, depth_caption, positive_int, write_run_and_result
from hydra_st.settings import DEFAULT_BASE_MODEL

logger = logging.getLogger(__name__)


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
    parser.add_argument(
        "--top-k", type=positive_int, default=1000, help="documents retrieved per query (default: 1000)"
    )
    parser.add_argument("--rrf-k", type=float, default=60.0, help="RRF constant (default: 60)")
    parser.add_argument(
        "--rrf-depth", type=positive_int, default=100, help="top documents of each ranker fused (default: 100)"
    )
    parser.add_argument("--metrics", nargs="+", default=None, help="metrics (default: ndcg@10 mrr@10 recall@100 map)")
    parser.add_argument("--output-dir", default="outputs/evaluate", help="where run files and results go")
    add_data_args(parser)
    parser.set_defaults(func=run_evaluate)

    compare = subparsers.add_parser(
        "compare",
        help="compare two TREC run files on a dataset's qrels with paired significance tests",
        description="Score two TREC run files against one qrels split and report, per metric, both means, their "
        "difference, a paired bootstrap confidence interval and a paired randomization p-value over the judged "
        "queries (a judged query missing from a run scores 0). A run holding query ids without judgments in the "
        "split, or document ids outside the corpus, gets a warning that counts them; a run most of whose queries "
        "are not queries of the dataset is refused (a run of another dataset).",
    )
    compare.add_argument("run_a", help="TREC run file of system A")
    compare.add_argument("run_b", help="TREC run file of system B (the baseline)")
    compare.add_argument("--dataset", required=True, help="dataset name or path (its qrels are read)")
    compare.add_argument("--split", default="test", help="qrels split (default: test)")
    compare.add_argument("--metrics", nargs="+", default=["ndcg@10", "mrr@10", "recall@100"], help="metrics")
    compare.add_argument("--resamples", type=positive_int, default=10_000, help="bootstrap resamples and sign flips")
    compare.add_argument("--seed", type=int, default=0, help="seed of the resampling (default: 0)")
    compare.add_argument("--output", default=None, help="also write the comparison as JSON here")
    add_data_args(compare)
    compare.set_defaults(func=run_compare)


def run_evaluate(args: argparse.Namespace) -> int:
    from hydra_st.evaluation import DEFAULT_METRICS, format_table
    from hydra_st.evaluation.baselines import BaselineSuite

    if {"dense", "rrf"} & set(args.retriever):
        # the baselines encode with a plain bi-encoder: a Hydra or Hypencoder folder (or a mistyped path) is named
        # here, with the command that takes it, instead of as sentence-transformers' trust_remote_code error
        check_model(args.model, PLAIN, "hydra-st evaluate")
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
    if caption := depth_caption(args.top_k):
        print(caption)
    return 0


def check_run_ids(
    run: Mapping[str, Mapping[str, float]],
    path: str,
    qrels: Mapping[str, object],
    query_ids: set[str],
    doc_ids: set[str],
    dataset: str,
    split: str,
) -> None:
    """Warn about the ids of a run that the dataset does not have; refuse a run that is mostly another dataset's.

    Many collections number their queries and documents from 1, so a run of one dataset shares ids with another's
    qrels and would be scored against them without complaint.

    Args:
        run: the run read from ``path``.
        path: the run file, for the messages.
        qrels: the split's qrels (their query ids are the judged ones).
        query_ids: every query id of the dataset (``queries.jsonl``).
        doc_ids: every document id of the corpus.
        dataset: the dataset, for the messages.
        split: the qrels split, for the messages.

    Raises:
        ValueError: more than half of the run's queries are not queries of the dataset.
    """
    queries = set(run)
    unknown = sorted(queries - query_ids)
    if 2 * len(unknown) > len(queries):
        raise ValueError(
            f"{path}: {len(unknown)} of its {len(queries)} queries are not queries of {dataset} (e.g. "
            f"{', '.join(unknown[:3])}): it looks like a run of another dataset"
        )
    unjudged = queries - set(qrels)
    documents = {doc for docs in run.values() for doc in docs}
    foreign = documents - doc_ids
    if not unjudged and not foreign:
        return
    parts = []
    if unjudged:
        parts.append(
            f"{len(unjudged)} of its {len(queries)} queries have no judgments in the {split} qrels and are ignored"
            + (f" ({len(unknown)} of them not queries of {dataset} at all)" if unknown else "")
        )
    if foreign:
        parts.append(
            f"{len(foreign)} of its {len(documents)} documents are not in the corpus (e.g. {sorted(foreign)[0]})"
        )
    logger.warning("%s: %s: is it a run of %s?", path, "; ".join(parts), dataset)


def run_compare(args: argparse.Namespace) -> int:
    from hydra_st.data import load_corpus, load_qrels, load_queries
    from hydra_st.data.beir import resolve_dataset_folder
    from hydra_st.evaluation import evaluate_run, format_p_value, format_table, paired_comparison, read_trec_run
    from hydra_st.utils.io import atomic_write_json

    folder = resolve_dataset_folder(args.dataset, args.data_dir)
    qrels = load_qrels(folder / "qrels" / f"{args.split}.tsv")
    runs = [read_trec_run(path) for path in (args.run_a, args.run_b)]
    query_ids, doc_ids = set(load_queries(folder / "queries.jsonl")), set(load_corpus(folder / "corpus.jsonl"))
    if not set(runs[0]) & set(qrels) or not set(runs[1]) & set(qrels):
        raise ValueError(f"a run shares no query id with the {args.split} qrels of {args.dataset}: wrong dataset?")
    for path, run in zip((args.run_a, args.run_b), runs, strict=True):
        check_run_ids(run, path, qrels, query_ids, doc_ids, args.dataset, args.split)
    a, b = (evaluate_run(qrels, run, metrics=args.metrics) for run in runs)
    rows: dict[str, dict[str, float | str | None]] = {}
    report = {"run_a": args.run_a, "run_b": args.run_b, "dataset": args.dataset, "split": args.split, "metrics": {}}
    for metric in args.metrics:
        paired = paired_comparison(a.by_query(metric), b.by_query(metric), resamples=args.resamples, seed=args.seed)
        report["metrics"][metric] = {"a": a.aggregate[metric], "b": b.aggregate[metric], **paired.to_json()}
        rows[metric] = {
            "A": a.aggregate[metric],
            "B": b.aggregate[metric],
            "A − B": f"{paired.mean_difference:+.4f}",
            "95% CI": paired.ci_text,
            "p": format_p_value(paired.p_value),
        }
    print(f"A = {args.run_a}\nB = {args.run_b}\n{args.dataset} / {args.split}: {a.num_queries} judged queries")
    print(format_table(rows, ["A", "B", "A − B", "95% CI", "p"], row_header="metric"))
    if args.output:
        atomic_write_json(Path(args.output), report)
    return 0
