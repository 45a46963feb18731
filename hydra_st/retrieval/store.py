"""On-disk store of encoded documents: embeddings + ids, and optionally a neighbour graph and a faiss index.

Layout of a store folder (every file written atomically through :mod:`hydra_st.utils.io`)::

    embeddings.npy   float32 [N, d]        (memory-mapped on load)
    ids.json         list of N document ids
    graph.npy        int32 [N, k]          (optional, from build_neighbor_graph)
    index.faiss      faiss index           (optional)
    meta.json        {"num_documents", "dim", "ids_fingerprint", "embeddings_fingerprint", "model",
                      "graph": {..., "embeddings_fingerprint"}, "index": {"ntotal", "d", "embeddings_fingerprint"}}

The files are tied together through ``meta.json``, which is written last: it records a fingerprint of the ids list
and a content fingerprint of ``embeddings.npy``, and the graph and index entries record the embeddings fingerprint
they were built from. A store left half-written by a crash, or a file copied in from another store, therefore fails
to load with an error naming the command that rebuilds it, instead of giving silently wrong rankings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hydra_st.utils.io import atomic_save_numpy, atomic_write_bytes, atomic_write_json, load_numpy

logger = logging.getLogger(__name__)

# Content fingerprint of embeddings.npy: the file size plus this many evenly spaced blocks (all of a small file).
# Reading 64 x 64 KiB costs milliseconds even for a 1.5 GB memmap, so it can be checked on every load; any re-encode,
# row shuffle or truncation changes the sampled bytes or the size (finiteness is checked separately).
_SAMPLE_BLOCKS = 64
_BLOCK_BYTES = 1 << 16
# Rows per chunk of the finiteness scan: bounds the memory a memmapped store pulls in at once.
_FINITE_CHUNK_ROWS = 1 << 16
# Marker written to meta.json before the arrays are replaced: a crash mid-save leaves a store that says so.
_INCOMPLETE = "incomplete"


def fingerprint_ids(ids: list[str]) -> str:
    """Hex digest of an ordered id list (changes with any id or with the order).

    Example:
        >>> fingerprint_ids(["a", "b"]) == fingerprint_ids(["b", "a"])
        False
    """
    return hashlib.sha256(json.dumps(list(ids), ensure_ascii=False).encode("utf-8")).hexdigest()[:32]


def fingerprint_file(path: str | os.PathLike[str]) -> str:
    """Cheap content fingerprint of a (possibly huge) file: sha256 over its size and a fixed set of sampled blocks.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
        >>> _ = p.write_bytes(b"abc")
        >>> len(fingerprint_file(p))
        32
    """
    size = os.path.getsize(path)
    h = hashlib.sha256(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        if size <= _SAMPLE_BLOCKS * _BLOCK_BYTES:
            h.update(f.read())
        else:
            last = size - _BLOCK_BYTES
            for i in range(_SAMPLE_BLOCKS):  # first and last block included: the .npy header and the tail
                f.seek(last * i // (_SAMPLE_BLOCKS - 1))
                h.update(f.read(_BLOCK_BYTES))
    return h.hexdigest()[:32]


def _file_identity(path: Path) -> tuple[int, int, int, int] | None:
    # what changes when a file is replaced (an atomic write renames a new inode over it) or rewritten
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


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
        self._warned_legacy = False

    embeddings_file = "embeddings.npy"
    ids_file = "ids.json"
    graph_file = "graph.npy"
    index_file = "index.faiss"
    meta_file = "meta.json"

    def exists(self) -> bool:
        """Whether the folder holds encoded documents (``embeddings.npy`` and ``ids.json``)."""
        return (self.path / self.embeddings_file).exists() and (self.path / self.ids_file).exists()

    def save(self, embeddings: np.ndarray, ids: Sequence[str | int], meta: dict[str, Any] | None = None) -> None:
        """Save document vectors and ids; a previous graph/index of other vectors is removed once they are saved.

        ``meta.json`` is written last: until then it says the store is incomplete, so an interrupted save is
        detected on load, and the old graph and index are only deleted after the new data is complete (before
        that, their recorded embeddings fingerprint no longer matches, which is detected too). When writing the
        embeddings raises (a full disk, say), the old ``embeddings.npy`` is untouched and the previous
        ``meta.json`` is put back, so the old store still loads; only a kill leaves the marker.

        Args:
            embeddings: ``[N, d]`` finite document vectors (stored as float32).
            ids: the ``N`` document ids, stored as strings; they must be unique as strings.
            meta: extra entries for ``meta.json`` (e.g. ``{"model": ..., "model_fingerprint": ...}``).

        Raises:
            ValueError: shapes disagree, an id repeats (the message names it), a vector is not finite, or the path
                is a file.
        """
        # ids are stored as strings, so they are compared as strings: 1 and "1" would be one id twice in the store
        doc_ids = [str(i) for i in ids]
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(doc_ids):
            raise ValueError(f"embeddings {emb.shape} and {len(doc_ids)} ids do not match")
        if len(set(doc_ids)) != len(doc_ids):
            duplicate, times = next((i, n) for i, n in Counter(doc_ids).items() if n > 1)
            raise ValueError(
                f"document ids must be unique, but {duplicate!r} occurs {times} times (ids are compared as strings); "
                "give every document its own id"
            )
        if not np.isfinite(emb).all():
            raise ValueError("embeddings hold NaN or infinite values: the model or its input is broken")
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"{self.path} is a file, not a store folder: choose another output folder")
        self.path.mkdir(parents=True, exist_ok=True)
        meta_path, emb_path = self.path / self.meta_file, self.path / self.embeddings_file
        previous_meta = meta_path.read_bytes() if meta_path.is_file() else None
        previous_emb = _file_identity(emb_path)
        atomic_write_json(meta_path, {_INCOMPLETE: "hydra-st encode did not finish writing"})
        try:
            atomic_save_numpy(emb_path, emb)
        except BaseException:
            # the atomic write left the old embeddings.npy in place: the old store is whole, so it keeps loading
            # (only a process killed outright, which runs no handler, leaves the marker; that is its purpose)
            if _file_identity(emb_path) == previous_emb:
                self._restore_meta(previous_meta)
            raise
        atomic_write_json(self.path / self.ids_file, doc_ids, indent=None)
        record = {k: v for k, v in (meta or {}).items() if k not in ("graph", "index", _INCOMPLETE)}
        atomic_write_json(
            self.path / self.meta_file,
            {
                **record,
                "num_documents": int(emb.shape[0]),
                "dim": int(emb.shape[1]),
                "ids_fingerprint": fingerprint_ids(doc_ids),
                "embeddings_fingerprint": fingerprint_file(self.path / self.embeddings_file),
            },
        )
        for stale in (self.graph_file, self.index_file):
            (self.path / stale).unlink(missing_ok=True)

    def _restore_meta(self, previous: bytes | None) -> None:
        # put back the meta.json a failed save replaced by its marker; a failed restore must not hide the error
        # that caused it, so it is only logged (the store then says it is incomplete, as before)
        path = self.path / self.meta_file
        try:
            if previous is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write_bytes(path, previous)
        except OSError as exc:
            logger.warning(
                "%s: could not restore meta.json after a failed save (%s); re-run `hydra-st encode`", path, exc
            )

    def load_meta(self) -> dict[str, Any]:
        """``meta.json`` as a dict (``{}`` when absent, as in stores of early versions)."""
        path = self.path / self.meta_file
        if not path.exists():
            return {}
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: unreadable meta.json ({exc}); re-run `hydra-st encode`") from exc
        if not isinstance(meta, dict):
            kind = type(meta).__name__
            raise ValueError(f"{path}: meta.json must hold a JSON object, not a {kind}; re-run `hydra-st encode`")
        if _INCOMPLETE in meta:
            raise ValueError(
                f"{self.path}: the store is incomplete (an interrupted `hydra-st encode`); re-run `hydra-st encode`"
            )
        return meta

    def _is_legacy(self, meta: dict[str, Any]) -> bool:
        # stores written before fingerprints existed still load, with one warning that they cannot be verified
        if "embeddings_fingerprint" in meta:
            return False
        if not self._warned_legacy:
            self._warned_legacy = True
            logger.warning(
                "%s: meta.json has no fingerprints (written by an older hydra_st), so mixed or stale store files "
                "cannot be detected; re-run `hydra-st encode` to add them",
                self.path,
            )
        return True

    def embeddings_fingerprint(self) -> str:
        """The content fingerprint of the current ``embeddings.npy`` (what a graph or index records)."""
        return fingerprint_file(self.path / self.embeddings_file)

    def _shape(self) -> tuple[int, int]:
        # (N, d) from the meta, else from the .npy header alone (memory-mapped: nothing is read or scanned)
        meta = self.load_meta()
        if isinstance(meta.get("num_documents"), int) and isinstance(meta.get("dim"), int):
            return meta["num_documents"], meta["dim"]
        emb = load_numpy(self.path / self.embeddings_file, mmap=True)
        if emb.ndim != 2:
            raise ValueError(f"{self.path}: embeddings.npy has shape {emb.shape}; re-run `hydra-st encode`")
        return int(emb.shape[0]), int(emb.shape[1])

    def load_embeddings(self, mmap: bool = True) -> np.ndarray:
        """The ``[N, d]`` float vectors, verified against ``meta.json`` (shape, fingerprint) and finite."""
        if not self.exists():
            raise FileNotFoundError(f"{self.path}: no encoded documents; run `hydra-st encode` first")
        meta = self.load_meta()
        path = self.path / self.embeddings_file
        try:
            emb = load_numpy(path, mmap=mmap)
        except ValueError as exc:
            raise ValueError(f"{exc}; re-run `hydra-st encode` to rebuild the store") from exc
        if emb.ndim != 2 or (meta and tuple(emb.shape) != (meta.get("num_documents"), meta.get("dim"))):
            raise ValueError(
                f"{self.path}: embeddings.npy has shape {emb.shape}, meta.json says "
                f"({meta.get('num_documents')}, {meta.get('dim')}); re-run `hydra-st encode`"
            )
        if emb.dtype not in (np.float32, np.float64):
            raise ValueError(f"{path} has dtype {emb.dtype}, not float32: re-run `hydra-st encode`")
        if not self._is_legacy(meta) and fingerprint_file(path) != meta["embeddings_fingerprint"]:
            raise ValueError(
                f"{self.path}: embeddings.npy is not the file meta.json was written with (a mixed or interrupted "
                "store); re-run `hydra-st encode`"
            )
        for start in range(0, len(emb), _FINITE_CHUNK_ROWS):
            if not np.isfinite(emb[start : start + _FINITE_CHUNK_ROWS]).all():
                raise ValueError(f"{path} holds NaN or infinite values (corrupt): re-run `hydra-st encode`")
        return emb

    def load_ids(self) -> list[str]:
        """The document ids, verified against ``meta.json`` (count, fingerprint)."""
        try:
            ids = json.loads((self.path / self.ids_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{self.path}: unreadable ids.json ({exc}); re-run `hydra-st encode`") from exc
        if not isinstance(ids, list):
            raise ValueError(f"{self.path}: ids.json must hold a list of ids; re-run `hydra-st encode`")
        ids = [str(i) for i in ids]
        meta = self.load_meta()
        n = meta.get("num_documents")
        if n is not None and len(ids) != n:
            raise ValueError(
                f"{self.path}: ids.json holds {len(ids)} ids but the store has {n} embeddings; "
                "re-run `hydra-st encode`"
            )
        if not self._is_legacy(meta) and fingerprint_ids(ids) != meta.get("ids_fingerprint"):
            raise ValueError(
                f"{self.path}: ids.json is not the list meta.json was written with (a mixed or interrupted store); "
                "re-run `hydra-st encode`"
            )
        return ids

    def _completed_meta(self) -> dict[str, Any]:
        # a meta missing its shape (deleted, or from an early version) is rebuilt from the arrays themselves
        meta = self.load_meta()
        if not isinstance(meta.get("num_documents"), int) or not isinstance(meta.get("dim"), int):
            n, d = self._shape()
            meta = {**meta, "num_documents": n, "dim": d}
        return meta

    def save_graph(
        self, graph: np.ndarray, info: dict[str, Any] | None = None, embeddings_fingerprint: str | None = None
    ) -> None:
        """Save the neighbour graph and record in ``meta.json`` which embeddings it was built from.

        Args:
            graph: ``[N, k]`` neighbour ids.
            info: build settings recorded beside it.
            embeddings_fingerprint: the fingerprint of the embeddings the graph was built from (default: the
                current ``embeddings.npy``; pass the one taken when they were loaded to close the window between).
        """
        meta = self._completed_meta()
        graph = np.asarray(graph)
        if not np.issubdtype(graph.dtype, np.integer):
            raise ValueError(f"graph must hold integer neighbour ids, got dtype {graph.dtype}")
        graph = graph.astype(np.int32)
        if graph.ndim != 2 or graph.shape[0] != meta["num_documents"]:
            raise ValueError(f"graph {graph.shape} does not match {meta['num_documents']} stored documents")
        atomic_save_numpy(self.path / self.graph_file, graph)
        fp = embeddings_fingerprint or self.embeddings_fingerprint()
        entry = {**(info or {}), "k": int(graph.shape[1]), "embeddings_fingerprint": fp}
        atomic_write_json(self.path / self.meta_file, {**meta, "graph": entry})

    def has_graph(self) -> bool:
        """Whether ``graph.npy`` exists (:meth:`load_graph` checks that it fits the embeddings)."""
        return (self.path / self.graph_file).exists()

    def _check_built_from(self, meta: dict[str, Any], key: str, file: str, command: str) -> None:
        # the graph/index entry must name the embeddings now in the store (legacy stores: nothing to compare)
        recorded = meta.get(key) if isinstance(meta.get(key), dict) else None
        if self._is_legacy(meta) and (recorded is None or "embeddings_fingerprint" not in recorded):
            return
        if recorded is None or recorded.get("embeddings_fingerprint") != self.embeddings_fingerprint():
            raise ValueError(f"{self.path}: {file} was built from other embeddings: re-run `{command}`")

    def load_graph(self) -> np.ndarray:
        """The ``[N, k]`` neighbour graph, verified to belong to the stored embeddings."""
        if not self.has_graph():
            raise FileNotFoundError(f"{self.path}: no neighbour graph; run `hydra-st build-graph` first")
        try:
            graph = load_numpy(self.path / self.graph_file)
        except ValueError as exc:
            raise ValueError(f"{exc}; re-run `hydra-st build-graph`") from exc
        if not np.issubdtype(graph.dtype, np.integer):
            raise ValueError(
                f"{self.path}: graph.npy has dtype {graph.dtype}, not integer ids; re-run `hydra-st build-graph`"
            )
        meta = self.load_meta()
        n = self._shape()[0]
        if graph.ndim != 2 or graph.shape[0] != n or (graph.size and (graph.min() < 0 or graph.max() >= n)):
            raise ValueError(
                f"{self.path}: graph.npy does not fit the stored embeddings; re-run `hydra-st build-graph`"
            )
        self._check_built_from(meta, "graph", self.graph_file, "hydra-st build-graph")
        recorded_k = (meta.get("graph") or {}).get("k") if isinstance(meta.get("graph"), dict) else None
        if recorded_k is not None and recorded_k != graph.shape[1]:
            raise ValueError(
                f"{self.path}: graph.npy has {graph.shape[1]} neighbours per document, meta.json says {recorded_k} "
                "(an interrupted build); re-run `hydra-st build-graph`"
            )
        return graph

    def save_index(self, index: Any, embeddings_fingerprint: str | None = None) -> None:
        """Save a :class:`~hydra_st.retrieval.FaissIndex` and record its size, width and embeddings in meta.json."""
        meta = self._completed_meta()
        if len(index) != meta["num_documents"] or index.dim != meta["dim"]:
            raise ValueError(
                f"the index holds {len(index)} {index.dim}-d vectors, the store {meta['num_documents']} "
                f"{meta['dim']}-d ones"
            )
        index.save(self.path / self.index_file)
        fp = embeddings_fingerprint or self.embeddings_fingerprint()
        entry = {"kind": index.kind, "ntotal": len(index), "d": index.dim, "embeddings_fingerprint": fp}
        atomic_write_json(self.path / self.meta_file, {**meta, "index": entry})

    def has_index(self) -> bool:
        """Whether ``index.faiss`` exists (:meth:`load_index` checks that it holds the stored embeddings)."""
        return (self.path / self.index_file).exists()

    def load_index(self, device: str = "cpu", ef_search: int | None = None) -> Any:
        """The faiss index, verified to hold exactly the stored embeddings (count, width, fingerprint).

        Args:
            device: ``"cpu"`` or ``"cuda"`` (flat indexes only).
            ef_search: HNSW search breadth; ``None`` keeps the one the index was built with.
        """
        from hydra_st.retrieval.faiss_index import FaissIndex

        if not self.has_index():
            raise FileNotFoundError(f"{self.path}: no faiss index; run `hydra-st build-graph --faiss flat|hnsw` first")
        index = FaissIndex.load(self.path / self.index_file, device=device, ef_search=ef_search)
        n, d = self._shape()
        rebuild = "re-run `hydra-st build-graph --faiss flat|hnsw`"
        if len(index) != n or index.dim != d:
            raise ValueError(
                f"{self.path}: index.faiss holds {len(index)} {index.dim}-d vectors but the store has {n} {d}-d "
                f"embeddings; {rebuild}"
            )
        meta = self.load_meta()
        recorded = meta.get("index") if isinstance(meta.get("index"), dict) else {}
        if recorded and (recorded.get("ntotal"), recorded.get("d")) != (len(index), index.dim):
            raise ValueError(f"{self.path}: index.faiss is not the index meta.json records; {rebuild}")
        self._check_built_from(meta, "index", self.index_file, "hydra-st build-graph --faiss flat|hnsw")
        return index
