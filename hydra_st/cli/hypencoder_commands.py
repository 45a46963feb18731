"""``hydra-st encode | build-graph | retrieve``: Hypencoder (and bi-encoder) retrieval from the command line.

Example::

    hydra-st encode --model models/hypencoder-minilm-l6 --dataset scifact --output outputs/scifact-store
    hydra-st build-graph --store outputs/scifact-store --k 32 --faiss flat
    hydra-st retrieve --model models/hypencoder-minilm-l6 --store outputs/scifact-store --dataset scifact \\
        --mode graph --output-dir outputs/scifact-graph
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra_st.cli.common import (
    FULL_DEPTH,
    add_data_args,
    check_model,
    depth_caption,
    model_not_found,
    non_negative_int,
    positive_int,
)
from hydra_st.cli.store_checks import (
    biencoder_scoring,
    biencoder_similarity,
    check_store_model,
    check_store_width,
    document_fingerprint,
    ends_normalised,
)
from hydra_st.hub.loading import weights_revision as model_fingerprint  # the whole model's weight fingerprint

if TYPE_CHECKING:
    from torch import Tensor

    from hydra_st.data import RetrievalDataset
    from hydra_st.retrieval import GraphSearchResult

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    enc = subparsers.add_parser(
        "encode",
        help="encode a dataset's documents into an embedding store",
        description="Encode every document of a dataset with the model's document route and "
        "save vectors + ids (atomically) to a store folder.",
    )
    enc.add_argument("--model", required=True, help="Hypencoder or sentence-transformer path/id")
    enc.add_argument("--dataset", required=True, help="dataset name or path")
    enc.add_argument("--output", required=True, help="store folder")
    enc.add_argument("--batch-size", type=positive_int, default=32, help="documents per encode batch (default 32)")
    enc.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    add_data_args(enc)
    enc.set_defaults(func=run_encode)

    graph = subparsers.add_parser(
        "build-graph",
        help="build the document neighbour graph (and a faiss index)",
        description="Build a k-NN graph over stored document vectors with faiss, saved "
        "beside them; optionally also a faiss index for the bi-encoder baseline.",
    )
    graph.add_argument("--store", required=True, help="store folder written by `hydra-st encode`")
    graph.add_argument("--k", type=positive_int, default=32, help="neighbours per document (default 32)")
    graph.add_argument(
        "--method",
        choices=["exact", "ivf", "hnsw"],
        default="exact",
        help="how faiss finds the neighbours: exact (flat), or ivf / hnsw for large corpora (default exact)",
    )
    graph.add_argument(
        "--metric", choices=["ip", "l2"], default="ip", help="neighbour metric over document vectors (default ip)"
    )
    graph.add_argument(
        "--reverse-edges",
        type=non_negative_int,
        default=0,
        help="also link each document to up to this many documents that list it (0: plain k-NN graph, as "
        "published; 32 lifts graph-search recall at 100k documents, see evaluation/results/hypencoder_search.md)",
    )
    graph.add_argument("--faiss", choices=["none", "flat", "hnsw"], default="none", help="also build this index")
    graph.set_defaults(func=run_build_graph)

    ret = subparsers.add_parser(
        "retrieve",
        help="retrieve with exhaustive q-net, graph or faiss search",
        description="Retrieve the top documents for a dataset's queries from a store, write a "
        "TREC run file and (when qrels exist) metrics.",
    )
    ret.add_argument("--model", required=True, help="model used to encode the queries")
    ret.add_argument("--store", required=True, help="store folder written by `hydra-st encode`")
    ret.add_argument("--dataset", required=True, help="dataset name or path (for queries and qrels)")
    ret.add_argument("--split", default="test", help="queries and qrels split (default test)")
    ret.add_argument(
        "--mode",
        choices=["exhaustive", "graph", "faiss"],
        default="exhaustive",
        help="exhaustive q-net scoring, q-net graph search (needs build-graph) or the faiss index of a bi-encoder "
        "(needs build-graph --faiss; default exhaustive)",
    )
    ret.add_argument(
        "--top-k",
        type=positive_int,
        default=FULL_DEPTH,
        help=f"documents kept per query, in every mode (default {FULL_DEPTH}, as for `evaluate`: map is "
        f"MAP@{FULL_DEPTH}). Graph search evaluates a bounded number of documents per query (at most about "
        "--max-iter x --ncandidates x the graph's k, plus the entry points) at any depth, so 1000 costs it little "
        "more than 100 (measured: 20.7 against 19.5 ms/query at 50k documents); like its top 10, its deeper ranks "
        "are approximate",
    )
    ret.add_argument("--output-dir", required=True, help="where the TREC run and the metrics JSON go")
    ret.add_argument(
        "--entry-points",
        type=positive_int,
        default=1024,
        help="graph search: random starting documents (default 1024)",
    )
    ret.add_argument(
        "--ncandidates",
        type=positive_int,
        default=64,
        help="graph search: best documents expanded per round (default 64)",
    )
    ret.add_argument("--max-iter", type=positive_int, default=16, help="graph search: maximum rounds (default 16)")
    ret.add_argument("--no-early-stop", action="store_true", help="graph search: always run --max-iter rounds")
    ret.add_argument(
        "--patience", type=positive_int, default=1, help="rounds that may add nothing before graph search stops"
    )
    ret.add_argument(
        "--index-seeds",
        type=non_negative_int,
        default=0,
        help="graph search: also start from the top N documents of the store's faiss index for the q-net's linear "
        "term (needs build-graph --faiss hnsw|flat; at 100k documents, on a --reverse-edges 32 graph, 1024 seeds "
        "with --entry-points 1024 --ncandidates 128 measured recall@10 0.992 at 21.6x below exhaustive latency; "
        "default 0: random entry points only)",
    )
    ret.add_argument("--chunk-size", type=positive_int, default=None, help="documents per exhaustive chunk")
    ret.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    ret.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        help="metrics to report, e.g. ndcg@10 recall@100 (default: ndcg@10 mrr@10 recall@100 map)",
    )
    add_data_args(ret)
    ret.set_defaults(func=run_retrieve)


def load_model(name: str, device: str = "cpu", command: str = "hydra-st retrieve") -> Any:
    """A Hypencoder when the folder holds one, else a plain SentenceTransformer (never a Hydra model).

    The family is read from the folder's files first, so a missing path, or a Hydra model given to a Hypencoder
    command, gets an error saying so rather than sentence-transformers' remote-code or Hub-connection message.
    """
    from hydra_st.cli.common import model_family
    from hydra_st.hypencoder import Hypencoder

    check_model(name, None, command)
    if model_family(name) == "hypencoder":
        return Hypencoder(str(Path(name)), device=device)
    from hydra_st.hub.offline import load_base_model

    try:
        return load_base_model(name, device=device)
    except OSError as exc:
        if Path(name).exists():
            raise
        raise model_not_found(name, exc) from exc


def faiss_query_vectors(model: Any, texts: list[str], normalise: bool = False) -> Any:
    """Inner-product query vectors: a bi-encoder Hypencoder's ``[d, 1]`` q-net as a vector, or plain embeddings
    (L2-normalised with ``normalise``: a cosine model without a ``Normalize`` module)."""
    import numpy as np

    if getattr(type(model), "_is_hypencoder", False):
        conv = model.converter
        if conv.vector_dimensions != [conv.input_dim, 1]:
            raise ValueError(
                f"faiss mode needs an inner-product model; this q-net is {conv.vector_dimensions}. Use "
                "--mode exhaustive|graph, or a bi-encoder (trained with --bi-encoder)"
            )
        flat = model.encode_query(texts, convert_to_tensor=True, show_progress_bar=False)
        return conv.linear_term(flat).cpu().numpy().astype(np.float32)
    vectors = model.encode_query(texts, convert_to_numpy=True, show_progress_bar=False, normalize_embeddings=normalise)
    return vectors.astype(np.float32)


def stack_graph_results(results: Sequence[GraphSearchResult]) -> tuple[Tensor, Tensor]:
    """``[Nq, k]`` score and index tensors from per-query graph-search results, each query keeping all of its own.

    A query whose search found fewer than ``k`` documents is padded with index -1 (score -inf), which
    :func:`~hydra_st.retrieval.to_run` skips, so no query loses results because another found fewer.

    Args:
        results: the :class:`~hydra_st.retrieval.GraphSearchResult` of every query, in query order.

    Returns:
        ``(scores, indices)``: float32 and int64 tensors of width ``max(len(result.indices))``.

    Example:
        >>> import numpy as np
        >>> from hydra_st.retrieval import GraphSearchResult
        >>> long = GraphSearchResult(np.array([0.9, 0.5], "float32"), np.array([3, 1]), 4, 1)
        >>> short = GraphSearchResult(np.array([0.7], "float32"), np.array([2]), 4, 1)
        >>> stack_graph_results([long, short])[1].tolist()
        [[3, 1], [2, -1]]
    """
    import numpy as np
    import torch

    width = max((len(r.indices) for r in results), default=0)
    scores = torch.full((len(results), width), float("-inf"), dtype=torch.float32)
    indices = torch.full((len(results), width), -1, dtype=torch.long)
    for row, r in enumerate(results):
        n = len(r.indices)
        scores[row, :n] = torch.as_tensor(np.asarray(r.scores, dtype=np.float32))
        indices[row, :n] = torch.as_tensor(np.asarray(r.indices, dtype=np.int64))
    return scores, indices


def run_encode(args: argparse.Namespace) -> int:
    import os

    from hydra_st.data import load_dataset_corpus
    from hydra_st.retrieval import EmbeddingStore

    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is an existing file, not a store folder: give a folder path")
    # encoding needs only the documents: no queries or qrels split has to exist
    corpus = load_dataset_corpus(args.dataset, data_dir=args.data_dir)
    doc_ids = list(corpus)
    doc_texts = [doc.full_text for doc in corpus.values()]
    name = Path(args.dataset).name if os.sep in str(args.dataset) else str(args.dataset)
    model = load_model(args.model, args.device, command="hydra-st encode")
    if getattr(type(model), "_is_hypencoder", False):
        from hydra_st.hypencoder.encoding import document_vectors

        # a frozen-base Hypencoder's document vectors are the base's embeddings: reuse the embedding cache
        emb = document_vectors(model, doc_ids, doc_texts, cache_dir=args.cache_dir, batch_size=args.batch_size).numpy()
    else:
        # a cosine model's documents are stored as unit vectors, so that the inner product that faiss, the
        # neighbour graph and `retrieve` compute ranks by its cosine (a Normalize module has done it already)
        similarity = biencoder_similarity(model)
        normalise = similarity == "cosine" and not ends_normalised(model)
        emb = model.encode_document(
            doc_texts,
            batch_size=args.batch_size,
            convert_to_numpy=True,
            show_progress_bar=True,
            normalize_embeddings=normalise,
        )
    # the fingerprints let `retrieve` refuse queries of a model whose documents encode differently
    meta: dict[str, Any] = {
        "model": args.model,
        "dataset": name,
        "model_fingerprint": model_fingerprint(model),
        "document_fingerprint": document_fingerprint(model),
    }
    if not getattr(type(model), "_is_hypencoder", False):
        meta["similarity"] = similarity
        meta["normalized"] = similarity == "cosine"
    EmbeddingStore(output).save(emb, doc_ids, meta=meta)
    print(f"encoded {len(doc_ids)} documents ({emb.shape[1]}-d) into {output}")
    return 0


def run_build_graph(args: argparse.Namespace) -> int:
    from hydra_st.retrieval import EmbeddingStore, FaissIndex, build_neighbor_graph

    store = EmbeddingStore(args.store)
    emb = store.load_embeddings(mmap=False)  # refuses non-finite vectors: faiss would build a graph from NaN
    fingerprint = store.embeddings_fingerprint()  # what the graph and index record they were built from
    t = time.perf_counter()
    graph = build_neighbor_graph(
        emb, k=min(args.k, len(emb) - 1), metric=args.metric, method=args.method, reverse_edges=args.reverse_edges
    )
    info = {"metric": args.metric, "method": args.method, "reverse_edges": args.reverse_edges}
    store.save_graph(graph, info, embeddings_fingerprint=fingerprint)
    print(f"neighbour graph {graph.shape} built in {time.perf_counter() - t:.1f}s")
    if args.faiss != "none":
        index = FaissIndex(emb.shape[1], kind=args.faiss)
        index.add(emb)
        store.save_index(index, embeddings_fingerprint=fingerprint)
        print(f"faiss {args.faiss} index over {len(index)} vectors saved")
    return 0


def run_retrieve(args: argparse.Namespace) -> int:
    import torch

    from hydra_st.evaluation import DEFAULT_METRICS, evaluate_run, write_trec_run
    from hydra_st.retrieval import EmbeddingStore, GraphSearcher, exhaustive_search, to_run
    from hydra_st.utils.io import atomic_write_json

    store = EmbeddingStore(args.store)
    doc_ids = store.load_ids()
    ds = load_retrieval_dataset(args.dataset, args.split, args.data_dir)
    if set(doc_ids) != set(ds.doc_ids):
        raise ValueError(f"the store {args.store} was encoded from another corpus than {args.dataset}; re-run encode")
    emb = store.load_embeddings()  # verified against meta.json, dtype and finiteness; a memmap, nothing copied
    if len(doc_ids) != len(emb):
        raise ValueError(
            f"the store {args.store} has {len(emb)} embeddings but {len(doc_ids)} ids; re-run `hydra-st encode`"
        )
    model = load_model(args.model, args.device)
    store_meta = store.load_meta()
    check_store_model(store_meta, model, args.model, args.store)
    check_store_width(model, int(emb.shape[1]), args.model, args.store)
    is_hyp = getattr(type(model), "_is_hypencoder", False)
    # a bi-encoder ranks by its own similarity (cosine: unit queries against the store's unit vectors)
    scorer, normalise = (model.similarity, False) if is_hyp else biencoder_scoring(model, store_meta, emb, args.mode)
    queries = ds.judged_queries or ds.queries
    qids = sorted(queries)
    texts = [queries[q].text for q in qids]
    t = time.perf_counter()
    if args.mode == "faiss":
        index = store.load_index(device=args.device) if store.has_index() else None
        if index is None:
            from hydra_st.retrieval import FaissIndex

            index = FaissIndex(emb.shape[1])
            index.add(emb)
        scores, idx = index.search(faiss_query_vectors(model, texts, normalise), args.top_k)
        scores, idx = torch.from_numpy(scores), torch.from_numpy(idx)
    else:
        kwargs = {"normalize_embeddings": True} if normalise else {}
        q = model.encode_query(texts, convert_to_tensor=True, show_progress_bar=False, **kwargs)
        if args.mode == "exhaustive":
            scores, idx = exhaustive_search(
                q,
                emb,
                top_k=args.top_k,
                scorer=scorer,
                chunk_size=args.chunk_size,
                device=args.device,
                show_progress_bar=True,
            )
        else:
            extra = None
            if args.index_seeds:
                if not store.has_index():
                    raise ValueError(
                        f"--index-seeds needs a faiss index in {args.store}: run hydra-st build-graph --store "
                        f"{args.store} --faiss hnsw"
                    )
                from hydra_st.retrieval import index_entry_points

                vector = model.converter.linear_term if is_hyp else (lambda query: query)
                extra = index_entry_points(store.load_index(device=args.device), vector, args.index_seeds)
            searcher = GraphSearcher(
                emb,
                store.load_graph(),
                scorer=scorer,
                num_entry_points=args.entry_points,
                ncandidates=args.ncandidates,
                max_iter=args.max_iter,
                early_stop=not args.no_early_stop,
                patience=args.patience,
                device=args.device,
                extra_entry_points=extra,
            )
            res = searcher.search_batch(q, top_k=args.top_k, show_progress_bar=True)
            scores, idx = stack_graph_results(res)
    seconds = time.perf_counter() - t
    run = to_run(qids, doc_ids, scores, idx)
    out = Path(args.output_dir)
    metrics = args.metrics or list(DEFAULT_METRICS)
    metadata = retrieve_metadata(args, ds.name, model, store_meta)
    result = evaluate_run(ds.qrels, run, metrics=metrics, metadata=metadata) if ds.qrels else None
    # the old metrics and summary go before the new run is written: an interruption must never leave a new run
    # beside metrics that describe the previous one
    for stale in (f"{args.mode}.metrics.json", f"{args.mode}.summary.json"):
        (out / stale).unlink(missing_ok=True)
    family = "hypencoder" if is_hyp else "biencoder"
    write_trec_run(run, out / f"{args.mode}.trec", tag=f"hydra_st-{family}-{args.mode}")
    summary: dict[str, Any] = {
        "mode": args.mode,
        "queries": len(qids),
        "seconds": seconds,
        "ms_per_query": 1000 * seconds / max(1, len(qids)),
        "metadata": metadata,
    }
    if result is not None:
        summary["metrics"] = result.aggregate
        result.save(out / f"{args.mode}.metrics.json")
    atomic_write_json(out / f"{args.mode}.summary.json", summary)
    if result is not None:
        from hydra_st.evaluation import format_table

        row: dict[str, dict[str, float | str | None]] = {
            f"{ds.name} / {args.mode}": {"queries": str(result.num_queries), **result.aggregate}
        }
        print(format_table(row, ["queries", *metrics], row_header=f"dataset / mode ({args.split})"))
        if caption := depth_caption(args.top_k):
            print(caption)
    print(
        f"{len(qids)} queries in {seconds:.2f} s ({summary['ms_per_query']:.1f} ms/query); wrote "
        f"{out / f'{args.mode}.trec'}" + (f" and {args.mode}.metrics.json" if result is not None else "")
    )
    return 0


def load_retrieval_dataset(name: str, split: str, data_dir: str | None) -> RetrievalDataset:
    """The dataset ``retrieve`` searches for: the split's qrels when it has them, else all queries and none.

    Unlabelled or hidden-test queries still get a run; a warning names the splits the dataset has, so a
    mistyped ``--split`` is noticed.
    """
    from hydra_st.data import (
        RetrievalDataset,
        available_splits,
        load_beir_folder,
        load_corpus,
        load_queries,
    )
    from hydra_st.data.beir import resolve_dataset_folder

    folder = resolve_dataset_folder(name, data_dir)
    label = Path(name).name if os.sep in str(name) else str(name)
    if (folder / "qrels" / f"{split}.tsv").exists():  # a directory there is refused by load_beir_folder
        return load_beir_folder(folder, split=split, name=label)
    logger.warning(
        "%s has no qrels for split %r (its splits: %s): retrieving for all queries of queries.jsonl and writing the "
        "run without metrics",
        folder,
        split,
        available_splits(folder) or "none",
    )
    return RetrievalDataset(
        name=label,
        split=split,
        corpus=load_corpus(folder / "corpus.jsonl"),
        queries=load_queries(folder / "queries.jsonl"),
    )


def retrieve_metadata(
    args: argparse.Namespace, dataset: str, model: Any, store_meta: dict[str, Any]
) -> dict[str, Any]:
    """What a ``retrieve`` run was made with, for its metrics and summary JSON: dataset, split, model, store, depth,
    mode and the mode's settings (the graph's and index's build settings as the store records them)."""
    metadata: dict[str, Any] = {
        "dataset": dataset,
        "split": args.split,
        "retriever": "hypencoder" if getattr(type(model), "_is_hypencoder", False) else "biencoder",
        "model": args.model,
        "model_revision": getattr(getattr(model, "model_card_data", None), "base_model_revision", None),
        "store": args.store,
        "store_model": store_meta.get("model"),
        "mode": args.mode,
        "top_k": args.top_k,
    }
    if args.mode == "exhaustive":
        metadata["chunk_size"] = args.chunk_size
    elif args.mode == "graph":
        metadata["graph"] = {
            "build": store_meta.get("graph"),
            "entry_points": args.entry_points,
            "ncandidates": args.ncandidates,
            "max_iter": args.max_iter,
            "early_stop": not args.no_early_stop,
            "patience": args.patience,
            "index_seeds": args.index_seeds,
        }
    else:
        index = store_meta.get("index")
        metadata["faiss"] = index if isinstance(index, dict) else {"kind": "flat", "built": "in memory (no index)"}
    if args.mode == "graph" and args.index_seeds:
        metadata["graph"]["index"] = store_meta.get("index")
    return metadata
