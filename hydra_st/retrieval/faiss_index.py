"""Faiss bi-encoder baseline: exact inner product (``IndexFlatIP``) and HNSW, CPU or GPU.

GPU use needs a faiss GPU build (``pip install "hydra_st[gpu]"``, i.e. faiss-gpu-cu12); only flat indexes move to
the GPU (faiss has no GPU HNSW).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hydra_st.utils.imports import require
from hydra_st.utils.io import atomic_write_bytes


class FaissIndex:
    """Inner-product index over document vectors.

    Args:
        dim: vector width.
        kind: ``"flat"`` (exact ``IndexFlatIP``) or ``"hnsw"`` (``IndexHNSWFlat`` with inner product).
        hnsw_m: HNSW links per node.
        ef_construction: HNSW build breadth.
        ef_search: HNSW search breadth (saved with the index, and restored by :meth:`load`).
        device: ``"cpu"`` or ``"cuda"`` (flat only; needs faiss-gpu).

    Example:
        >>> import numpy as np
        >>> index = FaissIndex(4)
        >>> index.add(np.eye(4, dtype="float32"))
        >>> scores, ids = index.search(np.eye(4, dtype="float32")[:1], k=1)
        >>> ids.tolist()
        [[0]]
    """

    def __init__(
        self,
        dim: int,
        kind: str = "flat",
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        device: str = "cpu",
        index: Any = None,
    ) -> None:
        faiss = require("faiss")
        if kind not in ("flat", "hnsw"):
            raise ValueError(f"kind must be 'flat' or 'hnsw', got {kind!r}")
        self.dim, self.kind, self.device = int(dim), kind, device
        if index is None:
            if kind == "flat":
                index = faiss.IndexFlatIP(self.dim)
            else:
                index = faiss.IndexHNSWFlat(self.dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
                index.hnsw.efConstruction = ef_construction
        if kind == "hnsw":
            index.hnsw.efSearch = ef_search
        if device.startswith("cuda"):
            if kind != "flat":
                raise ValueError("faiss has no GPU HNSW index; use kind='flat' on the GPU or device='cpu'")
            if not hasattr(faiss, "StandardGpuResources"):
                raise ImportError('this faiss build has no GPU support; install it with: pip install "hydra_st[gpu]"')
            self._gpu_res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_res, 0, index)
        self.index = index

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        """Append ``[n, dim]`` document vectors; their ids continue from :func:`len` of the index.

        Args:
            vectors: ``[n, dim]`` vectors (converted to contiguous float32).

        Raises:
            ValueError: the vectors do not have ``dim`` columns.
        """
        x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape [n, {self.dim}], got {x.shape}")
        self.index.add(x)

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` inner products: ``(scores [Nq, k], ids [Nq, k])``."""
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if q.ndim == 1:
            q = q[None]
        if q.shape[1] != self.dim:
            raise ValueError(f"query vectors have dimension {q.shape[1]}, the index holds {self.dim}-d vectors")
        if len(self) == 0:
            raise ValueError("the index is empty; add() document vectors first")
        return self.index.search(q, min(k, len(self)))

    def save(self, path: str | Path) -> None:
        """Write the index atomically (GPU indexes are copied back to the CPU first)."""
        faiss = require("faiss")
        index = faiss.index_gpu_to_cpu(self.index) if self.device.startswith("cuda") else self.index
        atomic_write_bytes(path, faiss.serialize_index(index).tobytes())

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", ef_search: int | None = None) -> FaissIndex:
        """Read an index written by :meth:`save`.

        Args:
            path: the index file.
            device: ``"cpu"`` or ``"cuda"`` (flat only).
            ef_search: HNSW search breadth; ``None`` keeps the one the index was saved with.

        Returns:
            The index, of the kind (flat or HNSW) it was saved as.

        Raises:
            ValueError: the file is not a readable faiss index (the message names the command that rebuilds it).

        Example:
            >>> import tempfile, pathlib
            >>> index = FaissIndex(4, kind="hnsw", ef_search=77)
            >>> index.add(np.eye(4, dtype="float32"))
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "index.faiss"
            >>> index.save(path)
            >>> again = FaissIndex.load(path)
            >>> again.kind, again.index.hnsw.efSearch
            ('hnsw', 77)
        """
        faiss = require("faiss")
        try:
            data = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
            index = faiss.deserialize_index(data)
        except Exception as exc:  # faiss raises RuntimeError on corrupt data
            # build-graph writes an index only when asked for one, so the command must say --faiss
            raise ValueError(
                f"{path}: not a readable faiss index ({exc}); rebuild it with "
                f"`hydra-st build-graph --store {Path(path).parent} --faiss flat|hnsw`"
            ) from exc
        kind = "hnsw" if hasattr(index, "hnsw") else "flat"
        if kind == "hnsw" and ef_search is None:
            ef_search = int(index.hnsw.efSearch)  # faiss saves efSearch with the graph
        return cls(index.d, kind=kind, ef_search=128 if ef_search is None else ef_search, device=device, index=index)
