"""On-disk store of encoded documents: embeddings + ids, and optionally a neighbour graph and a faiss index.

Layout of a store folder (every file written atomically through :mod:`hydra_st.utils.io`)::

    embeddings.npy   float32 [N, d]        (memory-mapped on load)
    ids.json         list of N document ids
    graph.npy        int32 [N, k]          (optional, from build_neighbor_graph)
    index.faiss      faiss index           (optional)
    meta.json        {"num_documents", "dim", "model", "fingerprint", "graph": {...}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hydra_st.utils.io import atomic_save_numpy, atomic_write_json, load_numpy


class EmbeddingStore:
    """Document vectors, their ids, and search structures, saved beside each other.

    Args:
        path: the store folder.

    Example:
        >>> import numpy as np, tempfile
        >>> store = EmbeddingStore(tempfile.mkdtemp())
        >>> store.save(np.eye(3, dtype="float32"), ["a", "b", "c"])
        >>> store.load_embeddings().shape, store.load_ids()
        ((3, 3), ['a', 'b', 'c'])
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    embeddings_file = "embeddings.npy"
    ids_file = "ids.json"
    graph_file = "graph.npy"
    index_file = "index.faiss"
    meta_file = "meta.json"

    def exists(self) -> bool:
        return (self.path / self.embeddings_file).exists() and (self.path / self.ids_file).exists()

    def save(self, embeddings: np.ndarray, ids: list[str], meta: dict[str, Any] | None = None) -> None:
        """Save document vectors and ids (a previous graph/index of other vectors is removed)."""
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(ids):
            raise ValueError(f"embeddings {emb.shape} and {len(ids)} ids do not match")
        if len(set(ids)) != len(ids):
            raise ValueError("document ids must be unique")
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in (self.graph_file, self.index_file):
            (self.path / stale).unlink(missing_ok=True)
        atomic_save_numpy(self.path / self.embeddings_file, emb)
        atomic_write_json(self.path / self.ids_file, list(ids), indent=None)
        atomic_write_json(
            self.path / self.meta_file, {**(meta or {}), "num_documents": int(emb.shape[0]), "dim": int(emb.shape[1])}
        )

    def load_meta(self) -> dict[str, Any]:
        path = self.path / self.meta_file
        return json.loads(path.read_text()) if path.exists() else {}

    def load_embeddings(self, mmap: bool = True) -> np.ndarray:
        if not self.exists():
            raise FileNotFoundError(f"{self.path}: no encoded documents; run `hydra-st encode` first")
        try:
            emb = load_numpy(self.path / self.embeddings_file, mmap=mmap)
        except ValueError as exc:
            raise ValueError(f"{exc}; re-run `hydra-st encode` to rebuild the store") from exc
        meta = self.load_meta()
        if emb.ndim != 2 or (meta and tuple(emb.shape) != (meta.get("num_documents"), meta.get("dim"))):
            raise ValueError(
                f"{self.path}: embeddings.npy has shape {emb.shape}, meta.json says "
                f"({meta.get('num_documents')}, {meta.get('dim')}); re-run `hydra-st encode`"
            )
        return emb

    def load_ids(self) -> list[str]:
        try:
            ids = json.loads((self.path / self.ids_file).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{self.path}: unreadable ids.json ({exc}); re-run `hydra-st encode`") from exc
        if not isinstance(ids, list):
            raise ValueError(f"{self.path}: ids.json must hold a list of ids")
        return [str(i) for i in ids]

    def save_graph(self, graph: np.ndarray, info: dict[str, Any] | None = None) -> None:
        meta = self.load_meta()
        graph = np.asarray(graph, dtype=np.int32)
        if graph.ndim != 2 or graph.shape[0] != meta.get("num_documents", graph.shape[0]):
            raise ValueError(f"graph {graph.shape} does not match {meta.get('num_documents')} stored documents")
        atomic_save_numpy(self.path / self.graph_file, graph)
        atomic_write_json(self.path / self.meta_file, {**meta, "graph": {**(info or {}), "k": int(graph.shape[1])}})

    def has_graph(self) -> bool:
        return (self.path / self.graph_file).exists()

    def load_graph(self) -> np.ndarray:
        if not self.has_graph():
            raise FileNotFoundError(f"{self.path}: no neighbour graph; run `hydra-st build-graph` first")
        try:
            graph = load_numpy(self.path / self.graph_file)
        except ValueError as exc:
            raise ValueError(f"{exc}; re-run `hydra-st build-graph`") from exc
        n = self.load_meta().get("num_documents")
        if graph.ndim != 2 or (n is not None and graph.shape[0] != n) or (graph.size and graph.max() >= (n or 0)):
            raise ValueError(
                f"{self.path}: graph.npy does not fit the stored embeddings; re-run `hydra-st build-graph`"
            )
        return graph

    def save_index(self, index: Any) -> None:
        index.save(self.path / self.index_file)

    def has_index(self) -> bool:
        return (self.path / self.index_file).exists()

    def load_index(self, device: str = "cpu", ef_search: int = 128) -> Any:
        from hydra_st.retrieval.faiss_index import FaissIndex

        if not self.has_index():
            raise FileNotFoundError(f"{self.path}: no faiss index; run `hydra-st build-graph --faiss flat|hnsw` first")
        return FaissIndex.load(self.path / self.index_file, device=device, ef_search=ef_search)
