"""Approximate search over a document neighbour graph, for scorers that are not inner products (q-nets).

The graph links every document to its ``k`` nearest documents (built once with faiss, independent of queries and of
the q-net). Search, per query, as in the published Hypencoder:

1. score a fixed random sample of ``num_entry_points`` documents (the same for every query);
2. for up to ``max_iter`` rounds: push the round's best ``max(ncandidates, top_k)`` into the bounded result list,
   then expand the best ``ncandidates`` of the round to their not-yet-scored neighbours; with ``early_stop`` stop as
   soon as a round adds nothing to the result list.

Every q-net evaluation is counted (``GraphSearchResult.num_evaluations``), since that is the cost model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from hydra_st.retrieval.exhaustive import Scorer, as_tensor, dot_scorer


def build_neighbor_graph(
    embeddings: np.ndarray | Tensor,
    k: int = 32,
    metric: str = "ip",
    method: str = "exact",
    batch_size: int = 16384,
    hnsw_m: int = 32,
    ef_search: int = 128,
    nprobe: int = 16,
    show_progress_bar: bool = True,
    reverse_edges: int = 0,
) -> np.ndarray:
    """``[N, k]`` int32 neighbour lists (self excluded) from faiss k-NN over the document vectors.

    With ``reverse_edges = r > 0`` the lists are ``[N, k + r]``: each document also links to up to ``r`` documents
    that list *it* among their ``k`` nearest (most similar first; padded by repeating the nearest neighbour). A plain
    k-NN graph leaves many documents with no incoming link, reachable only as entry points; reverse links make them
    reachable, which is what recall at high settings is limited by.

    Args:
        embeddings: ``[N, d]`` document vectors.
        k: neighbours per document.
        metric: ``"ip"`` (inner product; cosine for normalised vectors) or ``"l2"``.
        method: ``"exact"`` (flat index, O(N^2 d)), ``"ivf"`` (inverted lists, ``2 sqrt(N)`` clusters, ``nprobe``
            probed; approximate, fast for 10^5..10^7 documents) or ``"hnsw"`` (approximate).
        batch_size: documents searched per faiss call.
        hnsw_m: HNSW links per node (``method="hnsw"``).
        ef_search: HNSW search breadth (``method="hnsw"``).
        nprobe: inverted lists probed per document (``method="ivf"``).
        show_progress_bar: tqdm over batches.
        reverse_edges: reverse links added per document (0: the plain k-NN graph, as published).

    Returns:
        ``[N, k + reverse_edges]`` int32 document indices, nearest first.

    Example:
        >>> import numpy as np
        >>> g = build_neighbor_graph(np.eye(4, dtype="float32") + 0.1, k=2, show_progress_bar=False)
        >>> g.shape
        (4, 2)
    """
    import faiss

    x = np.ascontiguousarray(as_tensor(embeddings).float().cpu().numpy())
    n, d = x.shape
    if not np.isfinite(x).all():
        # faiss would build a graph from NaN scores without complaint; the search over it would then be meaningless
        raise ValueError("the document vectors hold NaN or infinite values: re-encode them (`hydra-st encode`)")
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} documents, got {k}")
    if metric not in ("ip", "l2"):
        raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}")
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    index: Any
    if method == "exact":
        index = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
    elif method == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss_metric)
        index.hnsw.efSearch = max(ef_search, k + 1)
    elif method == "ivf":
        nlist = max(1, int(2 * np.sqrt(n)))
        quantizer = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss_metric)
        index.cp.niter = 10
        sample = x[np.random.default_rng(0).choice(n, min(n, 32 * nlist), replace=False)]
        index.train(sample)
        index.nprobe = min(nprobe, nlist)
    else:
        raise ValueError(f"method must be 'exact', 'ivf' or 'hnsw', got {method!r}")
    index.add(x)
    graph = np.empty((n, k), dtype=np.int32)
    for start in tqdm(range(0, n, batch_size), desc="neighbour graph", disable=not show_progress_bar):
        _, nbrs = index.search(x[start : start + batch_size], k + 1)
        rows = np.arange(start, start + len(nbrs))[:, None]
        bad = (nbrs == rows) | (nbrs < 0)
        order = np.argsort(bad, axis=1, kind="stable")  # self / missing ids move to the end
        picked = np.take_along_axis(nbrs, order, axis=1)[:, :k]
        picked_bad = np.take_along_axis(bad, order, axis=1)[:, :k]
        picked = np.where(picked_bad, picked[:, :1], picked)  # too few results: repeat the best neighbour
        graph[start : start + len(nbrs)] = np.where(picked < 0, rows, picked)
    if reverse_edges > 0:
        graph = add_reverse_edges(graph, reverse_edges)
    return graph


def add_reverse_edges(graph: np.ndarray, r: int) -> np.ndarray:
    """Append up to ``r`` reverse links to every row of a k-NN graph ``[N, k]`` (result ``[N, k + r]``).

    The reverse neighbours of ``v`` are the documents ``u`` with ``v`` in ``graph[u]``, taken in order of the rank
    ``v`` has in ``u``'s list (closest first); links already in ``v``'s own list are skipped; rows with fewer than
    ``r`` are padded with their nearest neighbour (a duplicate costs nothing: search de-duplicates).

    Example:
        >>> import numpy as np
        >>> add_reverse_edges(np.array([[1], [0], [1]]), 1).tolist()  # 2 points at 1, which links back to 2
        [[1, 1], [0, 2], [1, 1]]
    """
    if r < 0:
        raise ValueError(f"reverse edge count must be >= 0, got {r}")
    n, k = graph.shape
    src = np.repeat(np.arange(n, dtype=np.int64), k)
    dst = graph.reshape(-1).astype(np.int64)
    rank = np.tile(np.arange(k), n)
    keep = dst != src
    src, dst, rank = src[keep], dst[keep], rank[keep]
    # u lists v: v gets the link v -> u unless v already lists u
    forward_keys = np.sort(np.repeat(np.arange(n, dtype=np.int64), k) * n + graph.reshape(-1))
    new = ~np.isin(dst * n + src, forward_keys, assume_unique=False)
    src, dst, rank = src[new], dst[new], rank[new]
    order = np.lexsort((rank, dst))  # group by target, closest first
    src, dst = src[order], dst[order]
    group_start = np.searchsorted(dst, dst, side="left")
    slot = np.arange(len(dst)) - group_start
    take = slot < r
    extra = np.repeat(graph[:, :1], r, axis=1).astype(graph.dtype)
    extra[dst[take], slot[take]] = src[take]
    return np.concatenate([graph, extra], axis=1)


@dataclass
class GraphSearchResult:
    """Result of one graph search: ``scores``/``indices`` best first, plus its cost.

    Attributes:
        scores: ``[n]`` scores of the documents found, best first; ``n <= top_k`` (fewer when the search scored
            fewer documents than ``top_k``).
        indices: ``[n]`` corpus indices of those documents.
        num_evaluations: how many documents the scorer was run on.
        num_rounds: how many expansion rounds ran.

    Example:
        >>> docs = np.eye(4, dtype="float32")
        >>> graph = build_neighbor_graph(docs, k=2, show_progress_bar=False)
        >>> searcher = GraphSearcher(docs, graph, num_entry_points=4)
        >>> res = searcher.search(docs[2], top_k=2)
        >>> int(res.indices[0]), float(res.scores[0]), res.num_evaluations, res.num_rounds
        (2, 1.0, 4, 1)
    """

    scores: np.ndarray
    indices: np.ndarray
    num_evaluations: int
    num_rounds: int


class GraphSearcher:
    """Graph search over document vectors with any scorer.

    Args:
        docs: ``[N, d]`` document vectors.
        graph: ``[N, k]`` neighbour lists from :func:`build_neighbor_graph`.
        scorer: ``scorer(query[1, ...], docs[n, d]) -> [1, n]``; defaults to the inner product.
        num_entry_points: random starting documents (same for every query).
        ncandidates: best documents expanded per round.
        max_iter: maximum rounds.
        early_stop: stop when a round adds nothing to the results.
        patience: with ``early_stop``, rounds in a row that may add nothing before the search stops (``1`` is the
            published rule; more rounds trade latency for recall, since a round that adds nothing to the top-k
            can still expand towards documents that do).
        seed: seed of the entry-point sample.
        device: where the documents live while searching.
        extra_entry_points: optional ``f(query) -> doc indices`` added to the random entry points of that query
            (an extension of the published method: e.g. the top documents of a faiss index over the q-net's
            linear skip vector, when the converter has one).

    Example:
        >>> import numpy as np, torch
        >>> docs = np.random.default_rng(0).normal(size=(200, 8)).astype("float32")
        >>> searcher = GraphSearcher(docs, build_neighbor_graph(docs, k=8, show_progress_bar=False),
        ...                          num_entry_points=20, ncandidates=8)
        >>> query = torch.from_numpy(docs[3])
        >>> res = searcher.search(query, top_k=5)
        >>> exhaustive = np.argsort(-(docs @ docs[3]))[:5]
        >>> bool((res.indices == exhaustive).all()), res.num_evaluations < len(docs)
        (True, True)
    """

    def __init__(
        self,
        docs: np.ndarray | Tensor,
        graph: np.ndarray,
        scorer: Scorer = dot_scorer,
        num_entry_points: int = 1000,
        ncandidates: int = 64,
        max_iter: int = 16,
        early_stop: bool = True,
        patience: int = 1,
        seed: int = 43,
        device: str | torch.device | None = None,
        extra_entry_points: Callable[[Tensor], Tensor | np.ndarray] | None = None,
    ) -> None:
        for name, value in (
            ("num_entry_points", num_entry_points),
            ("ncandidates", ncandidates),
            ("max_iter", max_iter),
        ):
            if value < 1:
                # 0 would silently return empty or unexpanded results instead of failing
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.docs = as_tensor(docs, device=device, dtype=torch.float32)
        graph = np.asarray(graph)
        if graph.ndim != 2 or graph.shape[0] != len(self.docs):
            raise ValueError(
                f"graph has shape {graph.shape} but there are {len(self.docs)} documents: rebuild it "
                "with build_neighbor_graph on these embeddings"
            )
        if graph.size and (graph.min() < 0 or graph.max() >= len(self.docs)):
            raise ValueError("graph holds neighbour ids outside the corpus: it belongs to other embeddings")
        self.graph = torch.from_numpy(np.ascontiguousarray(graph.astype(np.int64)))
        self.scorer = scorer
        self.num_entry_points = min(num_entry_points, len(self.docs))
        self.ncandidates = ncandidates
        self.max_iter = max_iter
        self.early_stop = early_stop
        if patience < 1:
            raise ValueError(f"patience must be >= 1 (1 = stop at the first round that adds nothing), got {patience}")
        self.patience = patience
        self.extra_entry_points = extra_entry_points
        rng = np.random.default_rng(seed)
        self.entry_points = torch.from_numpy(
            rng.choice(len(self.docs), size=self.num_entry_points, replace=False).astype(np.int64)
        )

    @torch.inference_mode()
    def search(self, query: Tensor | np.ndarray, top_k: int = 10) -> GraphSearchResult:
        """Search for one query (a vector or flat q-net parameters)."""
        q = as_tensor(query, device=self.docs.device)
        if q.dim() == 1:
            q = q.unsqueeze(0)
        explored = torch.zeros(len(self.docs), dtype=torch.bool)
        best_s = torch.empty(0)
        best_i = torch.empty(0, dtype=torch.long)
        candidates = self.entry_points
        if self.extra_entry_points is not None:
            extra = torch.as_tensor(np.asarray(self.extra_entry_points(q)), dtype=torch.long).flatten()
            extra = extra[(extra >= 0) & (extra < len(self.docs))]
            candidates = torch.unique(torch.cat([candidates, extra]))
        evaluations = rounds = idle = 0
        for rounds in range(1, self.max_iter + 1):
            if len(candidates) == 0:
                rounds -= 1
                break
            explored[candidates] = True
            scores = self.scorer(q, self.docs[candidates.to(self.docs.device)])[0].float().cpu()
            evaluations += len(candidates)
            keep = min(max(self.ncandidates, top_k), len(candidates))
            top = torch.topk(scores, keep)
            round_ids = candidates[top.indices]
            merged_s = torch.cat([best_s, top.values])
            merged_i = torch.cat([best_i, round_ids])
            sel = torch.topk(merged_s, min(top_k, len(merged_s))).indices
            improved = bool((sel >= len(best_s)).any())
            best_s, best_i = merged_s[sel], merged_i[sel]
            idle = 0 if improved else idle + 1
            if self.early_stop and idle >= self.patience:
                break
            expand = round_ids[: min(self.ncandidates, len(round_ids))]
            nbrs = torch.unique(self.graph[expand].flatten())
            candidates = nbrs[~explored[nbrs]]
        return GraphSearchResult(best_s.numpy(), best_i.numpy(), evaluations, rounds)

    def search_batch(
        self,
        queries: Tensor | np.ndarray,
        top_k: int = 10,
        show_progress_bar: bool = False,
        callback: Callable[[int, GraphSearchResult], None] | None = None,
    ) -> list[GraphSearchResult]:
        """Search every query (one after the other, as the method is per query)."""
        q_all = as_tensor(queries)
        results = []
        for i in tqdm(range(len(q_all)), desc="graph search", disable=not show_progress_bar):
            res = self.search(q_all[i], top_k=top_k)
            if callback is not None:
                callback(i, res)
            results.append(res)
        return results


def index_entry_points(
    index: Any, query_vector: Callable[[Tensor], Tensor | np.ndarray], n: int
) -> Callable[[Tensor], np.ndarray]:
    """Per-query graph-search entry points: the top ``n`` documents of a faiss index for ``query_vector(query)``.

    Pass the result as ``GraphSearcher(extra_entry_points=...)``. With a Hypencoder, ``query_vector`` is the q-net's
    linear term (:meth:`~hydra_st.hypencoder.QNetConverter.linear_term`) and the index a faiss HNSW index over the
    same document vectors: the search then starts near the query instead of only at random documents (measured in
    ``evaluation/results/hypencoder_search.md``). ``index`` is anything with ``search(queries, k) -> (scores, ids)``.

    Args:
        index: a :class:`~hydra_st.retrieval.FaissIndex` (or anything with that ``search``) over the documents.
        query_vector: maps one query's representation to the vector searched in ``index``.
        n: entry points per query.

    Returns:
        ``entry_points(query) -> [n]`` document indices, for ``GraphSearcher(extra_entry_points=...)``.

    Example:
        >>> from hydra_st.retrieval import FaissIndex
        >>> docs = np.eye(6, dtype="float32")
        >>> index = FaissIndex(6)
        >>> index.add(docs)
        >>> entry = index_entry_points(index, lambda q: q, n=2)
        >>> sorted(entry(torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.9, 0.0]])).tolist())
        [3, 4]
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 entry point per query, got {n}")

    def entry_points(query: Tensor) -> np.ndarray:
        vec = query_vector(query)
        vec = vec.detach().cpu().numpy() if isinstance(vec, Tensor) else np.asarray(vec)
        return index.search(np.ascontiguousarray(vec.reshape(1, -1), dtype=np.float32), n)[1][0]

    return entry_points


def recall_at_k(approx: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    """Mean overlap of two ``[Nq, >=k]`` top lists at depth ``k`` (recall of the exact top-k).

    Args:
        approx: one top list of document indices per query (the approximate search's).
        exact: the exact top lists, for the same queries in the same order.
        k: the depth compared.

    Returns:
        The mean, over queries, of ``|approx[:k] ∩ exact[:k]| / min(k, len(exact))``.

    Raises:
        ValueError: the two hold a different number of queries (a silent truncation would misreport recall).

    Example:
        >>> recall_at_k(np.array([[1, 2], [3, 4]]), np.array([[2, 1], [3, 5]]), k=2)
        0.75
    """
    if len(approx) != len(exact):
        raise ValueError(
            f"recall_at_k needs one top list per query on both sides; got {len(approx)} approximate and "
            f"{len(exact)} exact lists: pass the results of the same queries"
        )
    hits = [
        len(set(a[:k].tolist()) & set(e[:k].tolist())) / min(k, len(e)) for a, e in zip(approx, exact, strict=True)
    ]
    return float(np.mean(hits))
