"""Loader for BEIR-layout folders: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

The loader is strict: every malformed line (bad JSON, missing field, duplicate id, a judgment that points at
an unknown query or document, a wrong qrels header) raises :class:`DatasetFormatError` naming the file and the
line, rather than silently dropping data. It is also tolerant of what real BEIR data contains: CRLF qrels,
a UTF-8 byte-order mark, empty titles or texts, queries without judgments (a split is evaluated on its judged
queries only) and score-0 rows (kept, and treated as non-relevant).

Example:
    >>> from hydra_st.data import load_dataset
    >>> ds = load_dataset("scifact", split="test", data_dir="/path/to/beir")  # doctest: +SKIP
    >>> len(ds.corpus), len(ds.judged_queries)  # doctest: +SKIP
    (5183, 300)
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from hydra_st.data.files import (
    QRELS_HEADER,
    DatasetFormatError,
    Document,
    Qrels,
    Query,
    _decoded_lines,
    load_corpus,
    load_qrels,
    load_queries,
)
from hydra_st.settings import resolve_data_dir

__all__ = [
    "QRELS_HEADER",
    "DatasetFormatError",
    "Document",
    "Qrels",
    "Query",
    "RetrievalDataset",
    "available_splits",
    "dataset_problem",
    "load_beir_folder",
    "load_corpus",
    "load_dataset",
    "load_dataset_corpus",
    "load_qrels",
    "load_queries",
    "resolve_dataset_folder",
]


@dataclass
class RetrievalDataset:
    r"""A corpus, its queries and the relevance judgments of one split.

    Attributes:
        name: dataset name (the folder name).
        split: the qrels split loaded (``"test"``, ``"train"``, ``"dev"``...).
        corpus: documents by id, in file order.
        queries: every query of the dataset (all splits), by id, in file order.
        qrels: judgments of ``split``.

    Example:
        >>> import pathlib, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     root = pathlib.Path(tmp, "toy"); (root / "qrels").mkdir(parents=True)
        ...     _ = (root / "corpus.jsonl").write_text('{"_id": "d1", "title": "Cats", "text": "They purr."}\n')
        ...     _ = (root / "queries.jsonl").write_text('{"_id": "q1", "text": "cat"}\n{"_id": "q2", "text": "dog"}\n')
        ...     _ = (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
        ...     ds = load_beir_folder(root)
        >>> ds
        RetrievalDataset(name='toy', split='test', docs=1, queries=2, judged_queries=1)
        >>> ds.doc_texts, list(ds.judged_queries), ds.relevant("q1")
        (['Cats They purr.'], ['q1'], {'d1'})
    """

    name: str
    split: str
    corpus: dict[str, Document]
    queries: dict[str, Query]
    qrels: Qrels = field(default_factory=dict)

    @cached_property
    def doc_ids(self) -> list[str]:
        """Document ids in corpus order."""
        return list(self.corpus)

    @cached_property
    def doc_texts(self) -> list[str]:
        """``Document.full_text`` of every document, in the order of :attr:`doc_ids`."""
        return [doc.full_text for doc in self.corpus.values()]

    @property
    def judged_queries(self) -> dict[str, Query]:
        """The queries that have at least one judgment in this split: the ones a split is evaluated on."""
        return {qid: q for qid, q in self.queries.items() if qid in self.qrels}

    def relevant(self, query_id: str) -> set[str]:
        """Ids of the documents judged relevant (grade > 0) for ``query_id``."""
        return {doc_id for doc_id, grade in self.qrels.get(query_id, {}).items() if grade > 0}

    def __repr__(self) -> str:
        return (
            f"RetrievalDataset(name={self.name!r}, split={self.split!r}, docs={len(self.corpus)}, "
            f"queries={len(self.queries)}, judged_queries={len(self.qrels)})"
        )


def _check_qrels_ids(qrels_path: Path, qrels: Qrels, corpus: dict[str, Document], queries: dict[str, Query]) -> None:
    for query_id, judged in qrels.items():
        if query_id not in queries:
            raise DatasetFormatError(
                qrels_path, f"query-id {query_id!r} is not in queries.jsonl", _find_line(qrels_path, query_id, 0)
            )
        for doc_id in judged:
            if doc_id not in corpus:
                raise DatasetFormatError(
                    qrels_path,
                    f"corpus-id {doc_id!r} (query {query_id!r}) is not in corpus.jsonl",
                    _find_line(qrels_path, doc_id, 1),
                )


def _find_line(path: Path, value: str, column: int) -> int | None:
    # Only called on the error path, so re-reading the file to name the line costs nothing in normal use.
    rows = csv.reader((line for _, line in _decoded_lines(path)), delimiter="\t", quoting=csv.QUOTE_NONE)
    for lineno, row in enumerate(rows, start=1):
        if lineno > 1 and len(row) > column and row[column].strip() == value:
            return lineno
    return None


def available_splits(
    name_or_path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None
) -> list[str]:
    """The qrels splits a dataset folder has, e.g. ``["dev", "test", "train"]``.

    Args:
        name_or_path: a dataset folder, or a dataset name under the data dir (never downloaded here).
        data_dir: the data dir for a name (default: ``$HYDRA_ST_DATA_DIR``, see :mod:`hydra_st.settings`).

    Returns:
        The split names (``qrels/*.tsv`` file stems), sorted.

    Example:
        >>> import pathlib, tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp()) / "toy"
        >>> (root / "qrels").mkdir(parents=True)
        >>> for name in ("corpus.jsonl", "qrels/test.tsv", "qrels/train.tsv"):
        ...     _ = (root / name).write_text("")
        >>> available_splits(root)
        ['test', 'train']
    """
    folder = resolve_dataset_folder(name_or_path, data_dir, download=False)
    return _splits(folder)


def dataset_problem(
    names: Sequence[str], splits: Sequence[str], data_dir: str | os.PathLike[str] | None = None
) -> str | None:
    """What is wrong with the datasets a script was asked for, in one line, or ``None`` when each has ``splits``.

    Meant for a command line to report before any model is loaded. An official BEIR dataset that is missing is
    downloaded here, as loading it would; an unknown name, a folder without a corpus or a missing split is reported.

    Args:
        names: dataset names under the data dir, or folders.
        splits: the qrels splits each must have (``["train", "test"]`` to train and evaluate).
        data_dir: the data dir for names (default: ``$HYDRA_ST_DATA_DIR``, see :mod:`hydra_st.settings`).

    Example:
        >>> import pathlib, tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp()) / "toy"
        >>> (root / "qrels").mkdir(parents=True)
        >>> for name in ("corpus.jsonl", "qrels/test.tsv"):
        ...     _ = (root / name).write_text("")
        >>> dataset_problem([str(root)], ["train", "test"]).endswith("no 'train' split (this dataset has ['test'])")
        True
    """
    for name in names:
        try:
            resolve_dataset_folder(name, data_dir)
            have = available_splits(name, data_dir)
        except (OSError, ValueError) as exc:
            return f"{name}: {exc}"
        missing = [split for split in splits if split not in have]
        if missing:
            return f"{name}: no {' or '.join(repr(m) for m in missing)} split (this dataset has {have})"
    return None


def _splits(folder: Path) -> list[str]:
    # Files only: a directory that happens to be named test.tsv is not a split.
    return sorted(p.stem for p in (folder / "qrels").glob("*.tsv") if p.is_file())


def load_beir_folder(folder: str | os.PathLike[str], split: str = "test", name: str | None = None) -> RetrievalDataset:
    r"""Load a BEIR-layout folder with the judgments of ``split``.

    Args:
        folder: a folder holding ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.
        split: the qrels split to load.
        name: the dataset name (default: the folder name).

    Returns:
        The :class:`RetrievalDataset`; every judged query and document is checked to exist.

    Raises:
        FileNotFoundError: the folder does not exist.
        DatasetFormatError: a file is malformed, the split is missing (the message lists the splits there are), or
            a judgment names an unknown query or document.

    Example:
        >>> import pathlib, tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp()) / "toy"
        >>> (root / "qrels").mkdir(parents=True)
        >>> _ = (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "Cats purr."}\n')
        >>> _ = (root / "queries.jsonl").write_text('{"_id": "q1", "text": "cats"}\n')
        >>> _ = (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
        >>> load_beir_folder(root, split="test")
        RetrievalDataset(name='toy', split='test', docs=1, queries=1, judged_queries=1)
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such dataset folder")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        why = " (that path is a directory, not a qrels file)" if qrels_path.is_dir() else ""
        raise DatasetFormatError(
            qrels_path, f"split {split!r} not found{why}; this dataset has splits {_splits(folder)}"
        )
    corpus = load_corpus(folder / "corpus.jsonl")
    queries = load_queries(folder / "queries.jsonl")
    qrels = load_qrels(qrels_path)
    _check_qrels_ids(qrels_path, qrels, corpus, queries)
    return RetrievalDataset(name=name or folder.name, split=split, corpus=corpus, queries=queries, qrels=qrels)


def resolve_dataset_folder(
    name_or_path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> Path:
    """Find a dataset by path or by name under the data dir, downloading an official BEIR dataset if allowed.

    A folder that exists but has no ``corpus.jsonl`` is an error, never a reason to download: the download
    would have to replace the folder and whatever the user keeps in it. Only an empty folder is downloaded into.
    """
    direct = Path(name_or_path)
    if direct.is_dir() and (direct / "corpus.jsonl").is_file():
        return direct
    root = resolve_data_dir(data_dir)
    folder = root / str(name_or_path)
    if (folder / "corpus.jsonl").is_file():
        return folder
    if folder.is_dir() and (not download or any(folder.iterdir())):
        raise DatasetFormatError(
            folder / "corpus.jsonl",
            "folder exists but has no corpus.jsonl; put the corpus there (unpack corpus.jsonl.gz if it holds one), "
            "or move the folder away to let hydra_st download the official dataset",
        )
    if download:
        from hydra_st.data.download import download_beir_dataset

        return download_beir_dataset(str(name_or_path), root)
    raise FileNotFoundError(
        f"dataset {str(name_or_path)!r} not found under {root}. Pass --data-dir (or set HYDRA_ST_DATA_DIR) to the "
        "folder that holds BEIR-layout datasets, one sub-folder per dataset."
    )


def load_dataset_corpus(
    name: str, data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> dict[str, Document]:
    r"""Only the corpus of a dataset (by name under the data dir, or by path): no queries, no qrels.

    For work that must not see any split's judgments, such as making pseudo-queries from the documents.

    Args:
        name: a dataset name under the data dir, or a folder path.
        data_dir: the data dir (default: ``$HYDRA_ST_DATA_DIR``, see :mod:`hydra_st.settings`).
        download: download an official BEIR dataset that is not there (needs network access).

    Returns:
        ``{doc_id: Document}`` in file order.

    Example:
        >>> import pathlib, tempfile
        >>> data_dir = pathlib.Path(tempfile.mkdtemp())
        >>> (data_dir / "toy").mkdir()
        >>> _ = (data_dir / "toy" / "corpus.jsonl").write_text('{"_id": "d1", "title": "Rain", "text": "Clouds."}\n')
        >>> corpus = load_dataset_corpus("toy", data_dir=data_dir, download=False)
        >>> next(iter(corpus.values())).title
        'Rain'
    """
    return load_corpus(resolve_dataset_folder(name, data_dir, download=download) / "corpus.jsonl")


def load_dataset(
    name: str, split: str = "test", data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> RetrievalDataset:
    r"""Load a dataset by name (a folder under the data dir) or by path.

    When the folder is missing and ``download`` is true, an official BEIR dataset is downloaded into the data
    dir first (this needs network access to the BEIR host).

    Args:
        name: a dataset name under the data dir (``"scifact"``), or a folder path.
        split: the qrels split to load.
        data_dir: the data dir (default: ``$HYDRA_ST_DATA_DIR``, see :mod:`hydra_st.settings`).
        download: download an official BEIR dataset that is not there.

    Returns:
        The :class:`RetrievalDataset` of that split (see :func:`load_beir_folder` for the checks).

    Raises:
        FileNotFoundError: the dataset is not there and ``download`` is false (the message names the data dir).
        DatasetFormatError: a file of the dataset is malformed, or the split is missing.

    Example:
        >>> import pathlib, tempfile
        >>> data_dir = pathlib.Path(tempfile.mkdtemp())
        >>> (data_dir / "toy" / "qrels").mkdir(parents=True)
        >>> _ = (data_dir / "toy" / "corpus.jsonl").write_text('{"_id": "d1", "text": "Cats purr."}\n')
        >>> _ = (data_dir / "toy" / "queries.jsonl").write_text('{"_id": "q1", "text": "cats"}\n')
        >>> _ = (data_dir / "toy" / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\n")
        >>> ds = load_dataset("toy", split="test", data_dir=data_dir, download=False)
        >>> ds.qrels, ds.doc_texts
        ({'q1': {'d1': 2}}, ['Cats purr.'])
    """
    folder = resolve_dataset_folder(name, data_dir, download=download)
    return load_beir_folder(folder, split=split, name=Path(name).name if os.sep in str(name) else str(name))
