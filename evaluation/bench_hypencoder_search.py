"""Benchmark q-net search at N = 10k, 100k, 1M document vectors (issue 4, item 7).

For every N, in one run and on the same queries:

* exhaustive q-net scoring (``hydra_st.retrieval.exhaustive_search`` with the model's q-net): per-query latency,
  documents/s;
* the ceiling: plain matrix multiplies of the q-net's shapes (``[N, d] @ [d, h1] @ ... @ [h, 1]`` plus the skip
  product) with no activation/LayerNorm, same chunking: documents/s;
* graph search (``GraphSearcher``) for several settings: latency, recall@10 against exhaustive, q-net evaluations;
* faiss ``IndexFlatIP`` over the same vectors with the matched bi-encoder's query vectors: latency.

Documents: the real all-MiniLM-L6-v2 document embeddings of every dataset whose embeddings are already in the
DenseTeacher cache (no encoding here); beyond that, vectors sampled to follow the real ones: ``gaussian`` = a
Gaussian with the real mean and covariance, renormalised (default), or ``jitter`` = a real vector plus Gaussian noise
with the real covariance scaled by ``--jitter-scale``, renormalised. Queries: real scifact test queries.

Every timed method runs with ``--threads`` (default 1) torch/faiss threads: the machine is shared, and one thread per
process avoids the OpenMP oversubscription that otherwise makes small operations 10x slower.

The neighbour graph is built up to ``--graph-max`` (default 100k): exact k-NN up to 20k, IVF k-NN above. At 1M the
IVF k-NN graph took more than 8 minutes on one core (flat-list scanning of 10^6 queries), so 1M reports
exhaustive q-net scoring, the matmul ceiling and faiss flat IP only unless ``--graph-max 1000000`` is given.

Usage::

    python evaluation/bench_hypencoder_search.py                       # 10k, 100k, 1M (about 6 minutes)
    python evaluation/bench_hypencoder_search.py --sizes 10000 --queries 5 --out /tmp/bench   # quick run

Writes ``evaluation/results/hypencoder_search.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra_st.cli.common import add_data_args  # noqa: E402
from hydra_st.data import DatasetFormatError, load_dataset  # noqa: E402
from hydra_st.hypencoder import Hypencoder  # noqa: E402
from hydra_st.retrieval import FaissIndex, GraphSearcher, build_neighbor_graph, exhaustive_search  # noqa: E402
from hydra_st.retrieval.exhaustive import search_chunk_size  # noqa: E402
from hydra_st.retrieval.graph import add_reverse_edges, index_entry_points, recall_at_k  # noqa: E402
from hydra_st.settings import set_default_dirs  # noqa: E402
from hydra_st.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: E402

DATASETS = ("scifact", "nfcorpus", "vaswani", "cacm", "cranfield", "med", "adi", "msmarco-dl19-subset")

# (graph, random entry points, ncandidates, max_iter, HNSW seeds, patience). "knn" is the published graph (faiss
# k-NN lists); "knn+rev" adds --reverse-edges reverse links per document (our extension: documents no other document
# lists become reachable). HNSW seeds (our extension): the top documents of the faiss HNSW index over the same
# vectors (the bi-encoder baseline's) for the q-net's linear skip vector, timed inclusive. Patience 1 is the
# published early stop (stop at the first round that adds nothing to the top-k).
GRAPH_SETTINGS = [
    ("knn", 256, 16, 16, 0, 1), ("knn", 1024, 32, 16, 0, 1), ("knn", 1024, 64, 16, 0, 1),
    ("knn", 2048, 128, 16, 0, 1), ("knn", 4096, 128, 16, 0, 1), ("knn", 4096, 256, 16, 0, 1),
    ("knn", 8192, 256, 16, 0, 1),
    ("knn", 128, 32, 16, 64, 1), ("knn", 1024, 64, 16, 256, 1), ("knn", 1024, 128, 16, 1024, 1),
    ("knn", 2048, 256, 16, 2048, 1),
    ("knn+rev", 2048, 128, 16, 0, 1), ("knn+rev", 4096, 256, 16, 0, 1), ("knn+rev", 4096, 256, 16, 0, 3),
    ("knn+rev", 1024, 64, 16, 256, 3), ("knn+rev", 1024, 128, 16, 1024, 1), ("knn+rev", 1024, 128, 16, 1024, 3),
]  # fmt: skip
TARGET_KINDS = [  # (label, graph, seeded)
    ("published: k-NN graph, random entry points", "knn", False),
    ("k-NN graph + HNSW seeds (extension)", "knn", True),
    ("k-NN + reverse links, random entry points (extension)", "knn+rev", False),
    ("k-NN + reverse links + HNSW seeds (extension)", "knn+rev", True),
]


def cached_real_embeddings() -> tuple[np.ndarray, list[str]]:
    """Real MiniLM document embeddings from the DenseTeacher cache (datasets not cached are skipped)."""
    from hydra_st.hub.offline import load_base_model
    from hydra_st.teachers import DenseTeacher

    teacher = DenseTeacher(load_base_model(), show_progress_bar=False)
    parts, used = [], []
    for name in DATASETS:
        try:
            # download=False: a dataset that is not there is skipped (its embeddings are not cached anyway)
            ds = load_dataset(name, split="test", download=False)
        except (FileNotFoundError, DatasetFormatError):  # any other error is a real problem and is raised
            continue
        if teacher.cache_path(ds.doc_ids, ds.doc_texts).is_file():
            parts.append(teacher.encode_corpus(ds.doc_ids, ds.doc_texts))
            used.append(name)
    if not parts:
        raise FileNotFoundError("no cached MiniLM corpus embeddings; run the foundation's DenseTeacher once")
    return np.concatenate(parts).astype(np.float32), used


def sample_like(real: np.ndarray, n: int, method: str, jitter_scale: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mean = real.mean(0)
    cov = np.cov(real, rowvar=False)
    chol = np.linalg.cholesky(cov + 1e-6 * np.eye(cov.shape[0]))
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        z = rng.standard_normal((m, real.shape[1])).astype(np.float32) @ chol.T.astype(np.float32)
        x = (mean + z) if method == "gaussian" else real[rng.integers(0, len(real), m)] + jitter_scale * z
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def corpus_of_size(real: np.ndarray, n: int, method: str, jitter_scale: float) -> tuple[np.ndarray, str]:
    if n <= len(real):
        idx = np.random.default_rng(1).choice(len(real), n, replace=False)
        return np.ascontiguousarray(real[np.sort(idx)]), "real"
    extra = sample_like(real, n - len(real), method, jitter_scale)
    return np.concatenate([real, extra]), f"{len(real)} real + {n - len(real)} sampled ({method})"


def matmul_ceiling(conv, params: torch.Tensor, docs: torch.Tensor, chunk: int) -> float:
    """Seconds for plain matmuls of the q-net's shapes over all documents (one query), same chunking."""
    p = conv.unpack(params[:1])
    ws = [w[0].contiguous() for w in p.weights]
    skip = p.skip[0].unsqueeze(1).contiguous() if p.skip is not None else None
    t = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(docs), chunk):
            x = docs[s : s + chunk]
            h = x
            for w in ws:
                h = h @ w
            if skip is not None:
                h = h + x @ skip
    return time.perf_counter() - t


def bench_size(
    n: int, real: np.ndarray, model: Hypencoder, qnets: torch.Tensor, bi_queries: np.ndarray, args: argparse.Namespace
) -> dict:
    docs_np, source = corpus_of_size(real, n, args.sample, args.jitter_scale)
    docs = torch.from_numpy(docs_np)
    conv = model.converter
    nq = args.queries if n < 1_000_000 else max(2, args.queries // 4)
    q = qnets[:nq]
    # what exhaustive_search would choose for one query (the package default), unless --chunk-size says otherwise;
    # the matmul ceiling below runs with the same chunks
    chunk = args.chunk_size or search_chunk_size(conv.score, 1, docs)
    row: dict = {"n": n, "source": source, "num_queries": nq, "chunk_size": chunk}
    # warm-up, then per-query exhaustive q-net scoring
    exhaustive_search(q[:1], docs[: min(n, 20_000)], top_k=10, scorer=conv.score, chunk_size=chunk)
    times, exact = [], []
    for i in range(nq):
        t = time.perf_counter()
        _, idx = exhaustive_search(q[i : i + 1], docs, top_k=10, scorer=conv.score, chunk_size=chunk)
        times.append(time.perf_counter() - t)
        exact.append(idx[0].numpy())
    row["exhaustive_ms"] = 1000 * float(np.mean(times))
    row["exhaustive_docs_per_s"] = n / float(np.mean(times))
    ceil = [matmul_ceiling(conv, q[i : i + 1], docs, chunk) for i in range(min(nq, 3))]
    row["matmul_ms"] = 1000 * float(np.mean(ceil))
    row["matmul_docs_per_s"] = n / float(np.mean(ceil))
    row["qnet_vs_matmul"] = row["exhaustive_docs_per_s"] / row["matmul_docs_per_s"]
    # faiss flat IP (bi-encoder vectors)
    index = FaissIndex(docs_np.shape[1], kind="flat")
    index.add(docs_np)
    index.search(bi_queries[:1], 10)
    t = time.perf_counter()
    for i in range(nq):
        index.search(bi_queries[i : i + 1], 10)
    row["faiss_flat_ms"] = 1000 * (time.perf_counter() - t) / nq
    if n <= args.hnsw_max:  # faiss HNSW for the bi-encoder (recall against its own flat search)
        _, flat_ids = index.search(bi_queries[:nq], 10)
        t = time.perf_counter()
        hnsw = FaissIndex(docs_np.shape[1], kind="hnsw", ef_search=128)
        hnsw.add(docs_np)
        build = time.perf_counter() - t
        t = time.perf_counter()
        ids = np.concatenate([hnsw.search(bi_queries[i : i + 1], 10)[1] for i in range(nq)])
        row["faiss_hnsw"] = {"ms": 1000 * (time.perf_counter() - t) / nq, "build_s": build,
                             "recall@10_vs_flat": recall_at_k(ids, flat_ids, 10)}  # fmt: skip
    else:
        hnsw = None
    del index
    row["graph_search"] = []
    row["best_at_0.99"] = {}
    if n > args.graph_max:
        row["graph"] = {"k": args.graph_k, "method": f"skipped (N > --graph-max {args.graph_max})"}
        row["graph_build_s"] = float("nan")
        return row
    # neighbour graph
    method = "exact" if n <= args.exact_graph_max else "ivf"
    t = time.perf_counter()
    nprobe = args.ivf_nprobe if n < 1_000_000 else max(2, args.ivf_nprobe // 4)
    graph = build_neighbor_graph(docs_np, k=args.graph_k, method=method, nprobe=nprobe, show_progress_bar=False)
    row["graph_build_s"] = time.perf_counter() - t
    row["graph"] = {"k": args.graph_k, "method": method if method == "exact" else f"ivf nprobe={nprobe}"}
    row["graph_search"] = []
    graphs = {"knn": graph, "knn+rev": add_reverse_edges(graph, args.reverse_edges)}
    row["graph"]["reverse_edges"] = args.reverse_edges
    for graph_kind, entry, ncand, iters, seeds, patience in GRAPH_SETTINGS:
        if entry >= n or (seeds and (hnsw is None or not conv.linear_skip)):
            continue
        # HNSW seeds: the index's top documents for the q-net's linear term (its skip vector here)
        extra = index_entry_points(hnsw, conv.linear_term, seeds) if seeds else None

        searcher = GraphSearcher(
            docs,
            graphs[graph_kind],
            scorer=conv.score,
            num_entry_points=entry,
            ncandidates=ncand,
            max_iter=iters,
            patience=patience,
            extra_entry_points=extra,
        )
        searcher.search(q[0], top_k=10)
        t = time.perf_counter()
        results = [searcher.search(q[i], top_k=10) for i in range(nq)]
        ms = 1000 * (time.perf_counter() - t) / nq
        rec = recall_at_k(np.stack([r.indices[:10] for r in results]), np.stack(exact), 10)
        row["graph_search"].append(
            {
                "graph": graph_kind,
                "entry_points": entry,
                "hnsw_seeds": seeds,
                "ncandidates": ncand,
                "max_iter": iters,
                "patience": patience,
                "ms": ms,
                "recall@10": rec,
                "evaluations": float(np.mean([r.num_evaluations for r in results])),
                "rounds": float(np.mean([r.num_rounds for r in results])),
                "speedup_vs_exhaustive": row["exhaustive_ms"] / ms,
                "vs_faiss_flat": ms / row["faiss_flat_ms"],
            }
        )
        print(n, row["graph_search"][-1], flush=True)
    row["best_at_0.99"] = {}
    for label, graph_kind, seeded in TARGET_KINDS:
        ok = [g for g in _pool(row, graph_kind, seeded) if g["recall@10"] >= 0.99]
        row["best_at_0.99"][label] = min(ok, key=lambda g: g["ms"], default=None)
    return row


def render(results: dict) -> str:
    lines = [
        "# Hypencoder search benchmark",
        "",
        f"Produced by `{results.get('command', 'python evaluation/bench_hypencoder_search.py')}` on "
        f"{results['machine']} "
        f"(torch threads {results['torch_threads']}). Model: `{results['model']}`, q-net "
        f"`{results['qnet']['vector_dimensions']}` (+ linear skip: {results['qnet']['linear_skip']}), "
        f"{results['flops_per_doc']:,} FLOP per q-net evaluation. Real embeddings: {results['real_datasets']} "
        f"({results['num_real']} vectors); beyond that: {results['sample']}. Queries: the first scifact test queries ("
        + ", ".join(f"{r['num_queries']} at N = {r['n']:,}" for r in results["sizes"])
        + f"). faiss searches with {results.get('faiss_queries', 'the bi-encoder query vectors')}.",
        "",
        "| N | docs | exhaustive q-net ms/query | q-net docs/s | matmul ceiling docs/s | q-net / matmul | "
        "faiss flat IP ms/query | graph build s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["sizes"]:
        lines.append(
            f"| {r['n']:,} | {r['source']} | {r['exhaustive_ms']:.1f} | {r['exhaustive_docs_per_s']:,.0f} | "
            f"{r['matmul_docs_per_s']:,.0f} | {r['qnet_vs_matmul']:.2f} | {r['faiss_flat_ms']:.2f} | "
            f"{r['graph_build_s']:.1f} ({r['graph']['method']}, k={r['graph']['k']}) |"
        )
    lines += [
        "",
        "Graph search (recall@10 against exhaustive q-net search on the same queries):",
        "",
        "| N | graph | entry points | HNSW seeds | ncandidates | patience | ms/query | recall@10 | q-net evals | "
        "speed-up vs exhaustive | × faiss flat |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["sizes"]:
        for g in r["graph_search"]:
            lines.append(
                f"| {r['n']:,} | {g['graph']} | {g['entry_points']} | {g['hnsw_seeds']} | {g['ncandidates']} | "
                f"{g['patience']} | {g['ms']:.1f} | "
                f"{g['recall@10']:.3f} | {g['evaluations']:,.0f} | {g['speedup_vs_exhaustive']:.1f}× | "
                f"{g['vs_faiss_flat']:.1f}× |"
            )
    lines += ["", "Targets at N = 100k:", ""]
    for r in results["sizes"]:
        if r["n"] != 100_000:
            continue
        for label, graph_kind, seeded in TARGET_KINDS:
            lines.append(_target_line(label, r["best_at_0.99"].get(label), _pool(r, graph_kind, seeded)))
        lines.append(
            f"* exhaustive q-net throughput = {r['qnet_vs_matmul']:.2f} × the plain-matmul ceiling "
            f"({'met' if r['qnet_vs_matmul'] >= 0.6 else 'missed'}, target ≥ 0.60)."
        )
    lines += ["", f"Total wall time {results['wall_seconds']:.0f} s.", ""]
    return "\n".join(lines)


def _pool(row: dict, graph_kind: str, seeded: bool) -> list[dict]:
    return [g for g in row["graph_search"] if g["graph"] == graph_kind and bool(g["hnsw_seeds"]) == seeded]


def _target_line(kind: str, best: dict | None, pool: list[dict]) -> str:
    if best:
        return (
            f"* {kind}: graph recall@10 ≥ 0.99 with ≥ 5× lower latency: fastest setting at recall "
            f"{best['recall@10']:.3f} is {best['speedup_vs_exhaustive']:.1f}× faster than exhaustive "
            f"({'met' if best['speedup_vs_exhaustive'] >= 5 else 'missed'}); it is "
            f"{best['vs_faiss_flat']:.1f}× faiss flat IP (stretch ≤ 3×: "
            f"{'met' if best['vs_faiss_flat'] <= 3 else 'missed'}); {best['entry_points']} entry points, "
            f"{best['hnsw_seeds']} seeds, ncandidates {best['ncandidates']}, patience {best['patience']}."
        )
    if not pool:
        return f"* {kind}: not measured."
    top = max(pool, key=lambda g: (g["recall@10"], -g["ms"]))
    return (
        f"* {kind}: no setting reached recall@10 ≥ 0.99 (missed). Best: recall {top['recall@10']:.3f} at "
        f"{top['speedup_vs_exhaustive']:.1f}× lower latency than exhaustive, {top['vs_faiss_flat']:.1f}× faiss flat "
        f"({top['entry_points']} entry points, {top['hnsw_seeds']} seeds, ncandidates {top['ncandidates']}, "
        f"patience {top['patience']})."
    )


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(results["sizes"]):
        color = f"C{i}"
        for (label, graph_kind, seeded), marker in zip(TARGET_KINDS, ("o-", "^--", "s-.", "D:"), strict=True):
            g = sorted(_pool(r, graph_kind, seeded), key=lambda x: x["ms"])
            if g:
                ax.plot([x["ms"] for x in g], [x["recall@10"] for x in g], marker, color=color, ms=4,
                        label=f"{label.split(' (')[0]}, N={r['n']:,}")  # fmt: skip
        ax.plot([r["exhaustive_ms"]], [1.0], "*", color=color, ms=10, label=f"exhaustive N={r['n']:,}")
        ax.axvline(r["faiss_flat_ms"], color=color, ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("latency per query (ms, log; dotted: faiss flat IP)")
    ax.set_ylabel("recall@10 vs exhaustive q-net")
    ax.set_title("Hypencoder q-net search: quality vs latency")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes",
        default="10000,100000,1000000",
        help="comma-separated corpus sizes N (default: 10000,100000,1000000)",
    )
    parser.add_argument("--queries", type=int, default=64, help="scifact test queries (a quarter at 1M)")
    parser.add_argument(
        "--model",
        default=str(ROOT / "models" / "hypencoder-minilm-l6"),
        help="the Hypencoder whose q-nets are searched (default: models/hypencoder-minilm-l6; an untrained one on "
        "MiniLM when the folder is missing)",
    )
    parser.add_argument(
        "--bi-encoder",
        default=str(ROOT / "outputs" / "bi-encoder-minilm-l6"),
        help="the matched bi-encoder whose query vectors faiss searches (default: outputs/bi-encoder-minilm-l6; "
        "MiniLM's query embeddings when the folder is missing)",
    )
    parser.add_argument(
        "--sample",
        choices=("gaussian", "jitter"),
        default="gaussian",
        help="how vectors beyond the real ones are sampled (see above; default: gaussian)",
    )
    parser.add_argument(
        "--jitter-scale", type=float, default=0.5, help="noise scale of --sample jitter (default: 0.5)"
    )
    parser.add_argument("--graph-k", type=int, default=32, help="neighbours per document in the graph (default: 32)")
    parser.add_argument("--reverse-edges", type=int, default=32, help="reverse links per document (knn+rev)")
    parser.add_argument(
        "--exact-graph-max",
        type=int,
        default=20_000,
        help="largest N whose k-NN graph is exact; above it, IVF (default: 20000)",
    )
    parser.add_argument("--ivf-nprobe", type=int, default=16, help="IVF lists probed for the graph (1M: a quarter)")
    parser.add_argument("--threads", type=int, default=1, help="torch and faiss threads for every timed method")
    parser.add_argument("--graph-max", type=int, default=100_000, help="largest N with a neighbour graph")
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="largest N with a faiss HNSW baseline")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="documents per exhaustive-search chunk (default: exhaustive_search's own choice, search_chunk_size)",
    )
    parser.add_argument(
        "--out",
        default=str(ROOT / "evaluation" / "results"),
        help="folder of hypencoder_search.{md,json,png} (default: evaluation/results, the published benchmark)",
    )
    add_data_args(parser)  # --data-dir / --cache-dir, else $HYDRA_ST_DATA_DIR / $HYDRA_ST_CACHE_DIR
    args = parser.parse_args(argv)
    set_default_dirs(args.data_dir, args.cache_dir)
    command = " ".join(["python evaluation/bench_hypencoder_search.py", *(argv if argv is not None else sys.argv[1:])])
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = (
        Hypencoder(args.model, device="cpu")
        if Path(args.model).exists()
        else Hypencoder.from_base("sentence-transformers/all-MiniLM-L6-v2")
    )
    ds = load_dataset("scifact", split="test")
    texts = [q.text for q in list(ds.judged_queries.values())[: args.queries]]
    qnets = model.encode_query(texts, convert_to_tensor=True, show_progress_bar=False)
    if Path(args.bi_encoder).exists():
        bi = Hypencoder(args.bi_encoder, device="cpu")
        bq = bi.encode_query(texts, convert_to_tensor=True, show_progress_bar=False)
        p = bi.converter.unpack(bq)
        bi_queries = (p.weights[0][:, :, 0] + (p.skip if p.skip is not None else 0)).numpy()
        faiss_queries = f"the matched bi-encoder's query vectors (`{args.bi_encoder}`)"
    else:  # flat-IP latency does not depend on which vectors are searched; HNSW recall is against its own flat run
        bi_queries = model.encode_document(texts, convert_to_numpy=True)
        faiss_queries = (
            f"MiniLM's query embeddings (no bi-encoder at `{args.bi_encoder}`: train one with "
            "`python evaluation/hypencoder_train_eval.py`)"
        )
    real, used = cached_real_embeddings()
    results = {
        "command": command,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch_threads": torch.get_num_threads(),
        "model": args.model,
        "qnet": model.converter.get_config(),
        "flops_per_doc": model.converter.flops_per_document(),
        "real_datasets": used,
        "num_real": len(real),
        "sample": args.sample if args.sample == "gaussian" else f"jitter ×{args.jitter_scale}",
        "faiss_queries": faiss_queries,
        "sizes": [],
    }
    for n in [int(s) for s in args.sizes.split(",")]:
        results["sizes"].append(bench_size(n, real, model, qnets, bi_queries, args))
        results["wall_seconds"] = time.perf_counter() - t0
        out = Path(args.out)
        atomic_write_json(out / "hypencoder_search.json", results)
        atomic_write_text(out / "hypencoder_search.md", render(results))
    plot(results, Path(args.out) / "hypencoder_search.png")
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
