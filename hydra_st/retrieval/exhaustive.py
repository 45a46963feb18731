"""Exhaustive top-k search with any scorer, in memory-bounded chunks, for any corpus size.

The corpus may be a torch tensor, a numpy array or a read-only numpy memmap (from
:class:`~hydra_st.retrieval.store.EmbeddingStore`); only one chunk of documents (and one block of scores) is in
memory at a time. A *scorer* is any callable ``scorer(queries[Bq, ...], docs[Nc, d]) -> scores[Bq, Nc]``, e.g.
``model.similarity`` of a :class:`~hydra_st.hypencoder.Hypencoder` (q-net scores) or :func:`dot_scorer`.

:func:`dense_run` is the in-memory special case for cached bi-encoder embeddings: one numpy matrix product and an
``argpartition``, returned directly as a run. Hydra's preference teacher and evaluation use it, and its published
numbers depend on its exact float arithmetic, so it stays a separate function rather than a call of
:func:`exhaustive_search`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

Scorer = Callable[[Tensor, Tensor], Tensor]


def dot_scorer(queries: Tensor, docs: Tensor) -> Tensor:
    """Inner product scorer (bi-encoder); cosine similarity for normalised vectors.

    Args:
        queries: ``[Bq, d]`` query vectors.
        docs: ``[Nc, d]`` document vectors.

    Returns:
        ``[Bq, Nc]`` scores.

    Example:
        >>> import torch
        >>> dot_scorer(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])).tolist()
        [[1.0, 2.0]]
    """
    check_widths(queries, docs)
    return queries @ docs.T


def cosine_scorer(queries: Tensor, docs: Tensor) -> Tensor:
    """Cosine similarity scorer: a bi-encoder whose similarity is cosine but whose vectors are not normalised.

    Args:
        queries: ``[Bq, d]`` query vectors.
        docs: ``[Nc, d]`` document vectors.

    Returns:
        ``[Bq, Nc]`` cosine similarities.

    Example:
        >>> import torch
        >>> cosine_scorer(torch.tensor([[2.0, 0.0]]), torch.tensor([[3.0, 0.0], [0.0, 5.0], [-1.0, 0.0]])).tolist()
        [[1.0, 0.0, -1.0]]
    """
    check_widths(queries, docs)
    return torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(docs, dim=-1).T


def check_widths(queries: Tensor, docs: Tensor) -> None:
    """Refuse query and document vectors of different widths (vectors of two different models).

    Raises:
        ValueError: the last dimensions differ; without this check torch reports a bare shape error.

    Example:
        >>> import torch
        >>> check_widths(torch.zeros(1, 3), torch.zeros(2, 4))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: query vectors are 3-d but document vectors are 4-d: encode both with the same model ...
    """
    if queries.shape[-1] != docs.shape[-1]:
        raise ValueError(
            f"query vectors are {queries.shape[-1]}-d but document vectors are {docs.shape[-1]}-d: encode both with "
            "the same model (re-run `hydra-st encode --model ...` for a store)"
        )


def as_tensor(x: Any, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """A torch view of a tensor, numpy array or memmap slice (copies only when needed)."""
    if isinstance(x, Tensor):
        t = x
    else:
        arr = np.asarray(x)
        if not arr.flags.writeable or not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr).copy() if not arr.flags.writeable else np.ascontiguousarray(arr)
        t = torch.from_numpy(arr)
    if dtype is not None or device is not None:
        t = t.to(device=device or t.device, dtype=dtype or t.dtype)
    return t


def merge_topk(scores_a: Tensor, idx_a: Tensor, scores_b: Tensor, idx_b: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Merge two ``[B, *]`` top lists into one ``[B, min(k, total)]`` top list (descending; ties: lowest index first).

    Which of several equally scored documents are kept must not depend on how the corpus was split into lists
    (chunks), so ties are broken by the document index, never by ``torch.topk``'s arbitrary order.

    Args:
        scores_a: ``[B, ka]`` scores of the first list.
        idx_a: ``[B, ka]`` document indices of the first list.
        scores_b: ``[B, kb]`` scores of the second list.
        idx_b: ``[B, kb]`` document indices of the second list.
        k: how many to keep per row.

    Returns:
        ``(scores, indices)``, each ``[B, min(k, ka + kb)]``, best first, equal scores in ascending index order.

    Example:
        >>> import torch
        >>> s, i = merge_topk(torch.tensor([[0.9, 0.1]]), torch.tensor([[4, 7]]), torch.tensor([[0.5]]),
        ...                   torch.tensor([[2]]), k=2)
        >>> s.tolist(), i.tolist()
        ([[0.8999999761581421, 0.5]], [[4, 2]])
        >>> merge_topk(torch.tensor([[1.0]]), torch.tensor([[9]]), torch.tensor([[1.0]]), torch.tensor([[3]]), k=1)[1]
        tensor([[3]])
    """
    scores, idx = topk_lowest_index(torch.cat([scores_a, scores_b], dim=1), torch.cat([idx_a, idx_b], dim=1), k)
    return sort_by_score_then_index(scores, idx)


def topk_lowest_index(scores: Tensor, idx: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` best entries of each row, the lowest ``idx`` winning among entries tied at the ``k``-th score.

    ``torch.topk`` keeps an arbitrary subset of the entries tied at the ``k``-th score. Where no left-out entry
    shares that score (the usual case) the kept set is forced and ``topk``'s answer is used as it is; only the
    rows where it is not are sorted in full, so the cost stays that of one ``topk`` of ``k + 1``. The
    order *within* the result is ``topk``'s: apply :func:`sort_by_score_then_index` to the final list.

    Args:
        scores: ``[B, N]`` scores.
        idx: ``[B, N]`` document indices of the entries.
        k: entries kept per row (clipped to ``N``).

    Returns:
        ``(scores, indices)``, each ``[B, min(k, N)]``.

    Example:
        >>> import torch
        >>> s, i = topk_lowest_index(torch.tensor([[0.5, 1.0, 1.0, 1.0]]), torch.tensor([[0, 7, 5, 6]]), k=2)
        >>> sorted(i.flatten().tolist())
        [5, 6]
    """
    n = scores.shape[1]
    k = min(k, n)
    if k == n:  # everything is kept: no choice among ties to make
        return scores, idx
    # one more than needed: the (k+1)-th best is the best entry left out, so a tie at the cut shows as its score
    # equalling the k-th, with no extra pass over the scores
    top = torch.topk(scores, k + 1, dim=1)
    values, kept = top.values[:, :k], torch.gather(idx, 1, top.indices[:, :k])
    ambiguous = (top.values[:, k] == top.values[:, k - 1]).nonzero().flatten()
    if len(ambiguous):
        full_s, full_i = sort_by_score_then_index(scores[ambiguous], idx[ambiguous])
        values[ambiguous], kept[ambiguous] = full_s[:, :k], full_i[:, :k]
    return values, kept


def sort_by_score_then_index(scores: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row by score (descending), equal scores by index (ascending).

    Example:
        >>> import torch
        >>> sort_by_score_then_index(torch.tensor([[1.0, 2.0, 1.0]]), torch.tensor([[8, 5, 3]]))[1].tolist()
        [[5, 3, 8]]
    """
    # lexicographic: order by index, then a stable sort by score keeps that order among equal scores
    by_index = torch.argsort(idx, dim=1)
    scores, idx = torch.gather(scores, 1, by_index), torch.gather(idx, 1, by_index)
    by_score = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return torch.gather(scores, 1, by_score), torch.gather(idx, 1, by_score)


def default_chunk_size(num_queries: int, max_elements: int = 2**26, hidden: int = 1) -> int:
    """Documents per chunk so that ``num_queries x chunk x hidden`` floats stay under ``max_elements``."""
    return max(1, max_elements // max(1, num_queries * hidden))


CPU_ACTIVATION_BLOCK = 2**21
"""Floats of one chunk's ``[queries, documents, width]`` activations on a CPU (8 MB): small enough for the
elementwise passes of a q-net (ReLU, LayerNorm, residual) to run from cache. Measured with one thread, 100k documents:
30-37% less time per query than 256 MB blocks, for 1 and for 64 queries at a time."""

MIN_CHUNK = 256
"""Fewest documents per chunk: below it the per-chunk top-k merge costs more than cache misses save."""


def search_chunk_size(scorer: Scorer, num_queries: int, docs: Any, device: str | torch.device = "cpu") -> int:
    """The default documents per chunk of :func:`exhaustive_search` for ``scorer``.

    A scorer whose owner reports an ``activation_width`` above 1 (a q-net's :class:`~hydra_st.hypencoder.QNetConverter`
    or :class:`~hydra_st.hypencoder.Hypencoder`) gets, on a CPU, chunks whose activations fit
    :data:`CPU_ACTIVATION_BLOCK`. Anything else (an inner product, whose large chunks make large efficient GEMMs),
    and every scorer on an accelerator, keeps blocks of about 256 MB.

    Example:
        >>> import torch
        >>> search_chunk_size(dot_scorer, 64, torch.zeros(10, 384))
        2730
    """
    width = getattr(getattr(scorer, "__self__", None), "activation_width", None)
    if isinstance(width, int) and width > 1 and torch.device(device).type == "cpu":
        return max(MIN_CHUNK, default_chunk_size(num_queries, CPU_ACTIVATION_BLOCK, hidden=width))
    return default_chunk_size(num_queries, hidden=_hidden_width(docs))


@torch.inference_mode()
def exhaustive_search(
    queries: Tensor | np.ndarray,
    docs: Tensor | np.ndarray,
    top_k: int = 10,
    scorer: Scorer = dot_scorer,
    chunk_size: int | None = None,
    query_batch_size: int = 64,
    device: str | torch.device | None = None,
    show_progress_bar: bool = False,
) -> tuple[Tensor, Tensor]:
    """Top-``k`` documents of every query under ``scorer``, scanning the corpus chunk by chunk.

    Args:
        queries: ``[Nq, ...]`` query representations (vectors or flat q-net parameters).
        docs: ``[N, d]`` document vectors (tensor, array or memmap).
        top_k: results per query (clipped to the corpus size).
        scorer: ``scorer(queries, docs_chunk) -> [Bq, Nc]``.
        chunk_size: documents per chunk; the default (:func:`search_chunk_size`) keeps a q-net's activations in
            cache on a CPU, and other scorers' blocks of scores around 256 MB.
        query_batch_size: queries scored together.
        device: where scoring runs (``"cuda"`` moves each chunk there).
        show_progress_bar: tqdm over chunks.

    Returns:
        ``(scores, indices)``: ``[Nq, k]`` float scores and int64 document indices, best first. Equal scores
        are ordered by document index, lowest first, so which tied documents make the top ``k`` does not depend
        on ``chunk_size`` or ``query_batch_size``.

    Example:
        >>> import torch
        >>> s, i = exhaustive_search(torch.eye(3), torch.eye(3), top_k=1)
        >>> i.flatten().tolist()
        [0, 1, 2]
    """
    n_docs = len(docs)
    if n_docs == 0:
        shape = tuple(getattr(docs, "shape", (0,)))
        raise ValueError(f"the corpus is empty (docs has shape {shape}): pass at least one document vector")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if chunk_size is not None and chunk_size < 1:
        # range() with a step <= 0 would scan nothing (or raise a bare error): an empty run with exit 0
        raise ValueError(f"chunk_size must be >= 1 (or None for the default), got {chunk_size}")
    if query_batch_size < 1:
        raise ValueError(f"query_batch_size must be >= 1, got {query_batch_size}")
    q_all = as_tensor(queries, device=device)
    if q_all.dim() == 1:
        q_all = q_all.unsqueeze(0)
    k = min(top_k, n_docs)
    if len(q_all) == 0:  # no query, no result: an empty [0, k] answer rather than a failed torch.cat
        return torch.empty(0, k, device=q_all.device), torch.empty(0, k, dtype=torch.long, device=q_all.device)
    chunk = chunk_size or search_chunk_size(scorer, min(query_batch_size, len(q_all)), docs, q_all.device)
    out_scores, out_idx = [], []
    starts = range(0, n_docs, chunk)
    for qs in range(0, len(q_all), query_batch_size):
        q = q_all[qs : qs + query_batch_size]
        best_s = torch.empty(len(q), 0, device=q.device)
        best_i = torch.empty(len(q), 0, dtype=torch.long, device=q.device)
        for start in tqdm(starts, desc="exhaustive search", disable=not show_progress_bar, leave=False):
            d = as_tensor(docs[start : start + chunk], device=q.device, dtype=torch.float32)
            s = scorer(q, d)
            if s.shape != (len(q), len(d)):
                raise ValueError(f"scorer returned shape {tuple(s.shape)}, expected {(len(q), len(d))}")
            s = s.float()
            columns = torch.arange(start, start + s.shape[1], device=s.device).expand_as(s)
            top_s, top_i = topk_lowest_index(s, columns, k)
            # the order within the list is settled once, below, rather than on every chunk
            best_s, best_i = topk_lowest_index(torch.cat([best_s, top_s], 1), torch.cat([best_i, top_i], 1), k)
        best_s, best_i = sort_by_score_then_index(best_s, best_i)
        out_scores.append(best_s)
        out_idx.append(best_i)
    return torch.cat(out_scores), torch.cat(out_idx)


def _hidden_width(docs: Any) -> int:
    shape = getattr(docs, "shape", None)
    return int(shape[-1]) if shape is not None and len(shape) > 1 else 1


def to_run(
    query_ids: Sequence[str], doc_ids: Sequence[str], scores: Tensor, indices: Tensor
) -> dict[str, dict[str, float]]:
    """Turn ``(scores, indices)`` into a run ``{qid: {doc_id: score}}``.

    Args:
        query_ids: the id of each row, in row order.
        doc_ids: the document id of each corpus index.
        scores: ``[Nq, k]`` scores, as :func:`exhaustive_search` returns them.
        indices: ``[Nq, k]`` corpus indices; a negative index (faiss's "no result" padding) is skipped.

    Returns:
        ``{query_id: {doc_id: score}}``, each query's documents best first.

    Example:
        >>> import torch
        >>> to_run(["q1"], ["a", "b", "c"], torch.tensor([[0.5, 0.25]]), torch.tensor([[2, -1]]))
        {'q1': {'c': 0.5}}
    """
    run: dict[str, dict[str, float]] = {}
    s_np, i_np = scores.cpu().numpy(), indices.cpu().numpy()
    for row, qid in enumerate(query_ids):
        run[qid] = {doc_ids[int(j)]: float(v) for v, j in zip(s_np[row], i_np[row], strict=False) if j >= 0}
    return run


def dense_run(
    query_emb: np.ndarray, query_ids: Sequence[str], doc_emb: np.ndarray, doc_ids: Sequence[str], top_k: int = 100
) -> dict[str, dict[str, float]]:
    """Exact inner-product top-k of in-memory embeddings (cosine for normalised ones), as a run.

    One ``[Nq, N]`` score matrix is computed with numpy, so it suits cached embeddings of small and medium corpora;
    use :func:`exhaustive_search` for memory-bounded chunks or another scorer. Hydra's results are computed with
    this function: keep its arithmetic (numpy matmul, then ``argpartition``) as it is, since near-duplicate
    documents (cacm has some) are ordered by the last bits of their scores.

    Args:
        query_emb: ``[Nq, d]`` query vectors.
        query_ids: the id of each query row.
        doc_emb: ``[N, d]`` document vectors.
        doc_ids: the id of each document row.
        top_k: documents kept per query (clipped to ``N``).

    Returns:
        ``{query_id: {doc_id: score}}`` with the ``top_k`` best documents of each query (in no particular order:
        rank them by score).

    Example:
        >>> import numpy as np
        >>> docs = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype="float32")
        >>> run = dense_run(np.array([[0.0, 1.0]], dtype="float32"), ["q1"], docs, ["a", "b", "c"], top_k=2)
        >>> sorted(run["q1"].items(), key=lambda item: -item[1])
        [('c', 1.0), ('b', 0.800000011920929)]
    """
    scores = query_emb @ doc_emb.T
    k = min(top_k, scores.shape[1])
    idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    run = {}
    for row, qid in enumerate(query_ids):
        cols = idx[row]
        run[qid] = {doc_ids[c]: float(scores[row, c]) for c in cols}
    return run
