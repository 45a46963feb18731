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
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from hydra_st.settings import resolve_data_dir
from hydra_st.utils.io import DuplicateKeyError, reject_duplicate_keys

Qrels = dict[str, dict[str, int]]
"""Relevance judgments: ``{query_id: {doc_id: grade}}``; a grade > 0 means relevant."""

QRELS_HEADER = ["query-id", "corpus-id", "score"]
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1  # pytrec_eval stores grades as C ints; a larger one is a SystemError


class DatasetFormatError(ValueError):
    """A dataset file does not follow the BEIR layout. The message names the file and the line."""

    def __init__(self, path: str | os.PathLike[str], message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = Path(path)
        self.line = line


@dataclass(frozen=True, slots=True)
class Document:
    """A corpus document.

    Example:
        >>> Document("d1", "Title", "Body text.").full_text
        'Title Body text.'
    """

    id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """Title and text joined by a space (the BEIR/MTEB convention), stripped; empty parts vanish."""
        return f"{self.title} {self.text}".strip()


@dataclass(frozen=True, slots=True)
class Query:
    """A query.

    Example:
        >>> query = Query("q1", "why do cats purr")
        >>> query.id, query.text
        ('q1', 'why do cats purr')
    """

    id: str
    text: str


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


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 file; a leading BOM is dropped, undecodable bytes name their line."""
    # Decoding line by line (rather than letting a text-mode file decode in blocks) is what lets the error say
    # which line holds the bad byte, e.g. a corpus saved as latin-1.
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetFormatError(
                    path,
                    f"not valid UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1}); re-save the file as "
                    "UTF-8 (e.g. iconv -f latin1 -t utf-8)",
                    lineno,
                ) from None


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DatasetFormatError(path, "file not found (a BEIR folder needs corpus.jsonl and queries.jsonl)")
    for lineno, line in _decoded_lines(path):
        if not line.strip():
            continue
        try:
            # a line with two "_id"s is ambiguous, and json.loads would keep the last one silently
            record = json.loads(line, object_pairs_hook=reject_duplicate_keys)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(path, f"invalid JSON ({exc.msg} at column {exc.colno})", lineno) from None
        except DuplicateKeyError as exc:
            raise DatasetFormatError(
                path, f"duplicate key {exc.key!r} in one JSON object; keep only one", lineno
            ) from None
        if not isinstance(record, dict):
            raise DatasetFormatError(path, f"expected a JSON object, got {type(record).__name__}", lineno)
        yield lineno, record


def _field(record: dict[str, Any], key: str, path: Path, lineno: int, required: bool = True) -> str:
    if key not in record or record[key] is None:
        if required:
            raise DatasetFormatError(path, f"missing field {key!r}", lineno)
        return ""
    value = record[key]
    if key == "_id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise DatasetFormatError(path, f"field {key!r} must be a string, got {type(value).__name__}", lineno)
    if key == "_id":
        if not value.strip():
            raise DatasetFormatError(path, "empty '_id'", lineno)
        # TREC run files are whitespace-separated, so such an id would corrupt every run written for it; and
        # qrels cells are stripped, so an id with surrounding spaces could never match its judgments.
        if value != value.strip():
            raise DatasetFormatError(path, f"'_id' {value!r} has leading or trailing whitespace; remove it", lineno)
        if any(c.isspace() for c in value):
            raise DatasetFormatError(
                path,
                f"'_id' {value!r} contains whitespace, which TREC run files cannot hold; replace it (e.g. by '_') "
                "here and in the qrels",
                lineno,
            )
    return value


def load_corpus(path: str | os.PathLike[str]) -> dict[str, Document]:
    """Read ``corpus.jsonl``: one ``{"_id", "title", "text"}`` object per line (``title`` may be absent)."""
    path = Path(path)
    corpus: dict[str, Document] = {}
    first_seen: dict[str, int] = {}
    for lineno, record in _iter_jsonl(path):
        doc_id = _field(record, "_id", path, lineno)
        if doc_id in corpus:
            raise DatasetFormatError(
                path, f"duplicate document id {doc_id!r} (first on line {first_seen[doc_id]})", lineno
            )
        title = _field(record, "title", path, lineno, required=False)
        text = _field(record, "text", path, lineno)
        corpus[doc_id] = Document(doc_id, title, text)
        first_seen[doc_id] = lineno
    if not corpus:
        raise DatasetFormatError(path, "no documents: the file is empty; it needs one JSON object per document")
    return corpus


def load_queries(path: str | os.PathLike[str]) -> dict[str, Query]:
    """Read ``queries.jsonl``: one ``{"_id", "text"}`` object per line."""
    path = Path(path)
    queries: dict[str, Query] = {}
    first_seen: dict[str, int] = {}
    for lineno, record in _iter_jsonl(path):
        query_id = _field(record, "_id", path, lineno)
        if query_id in queries:
            raise DatasetFormatError(
                path, f"duplicate query id {query_id!r} (first on line {first_seen[query_id]})", lineno
            )
        queries[query_id] = Query(query_id, _field(record, "text", path, lineno))
        first_seen[query_id] = lineno
    if not queries:
        raise DatasetFormatError(path, "no queries: the file is empty; it needs one JSON object per query")
    return queries


def load_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read a qrels TSV with the header ``query-id<TAB>corpus-id<TAB>score``; LF or CRLF line endings."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(path, "qrels file not found")
    qrels: Qrels = {}
    # QUOTE_NONE keeps one row per line, so the row index is the line number.
    reader = csv.reader((line for _, line in _decoded_lines(path)), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if header is None:
        raise DatasetFormatError(path, "empty file: expected the header 'query-id\\tcorpus-id\\tscore'", 1)
    if [h.strip() for h in header] != QRELS_HEADER:
        raise DatasetFormatError(path, f"wrong header {header!r}: expected {QRELS_HEADER!r} (tab-separated)", 1)
    for lineno, row in enumerate(reader, start=2):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != 3:
            raise DatasetFormatError(path, f"expected 3 tab-separated columns, got {len(row)}: {row!r}", lineno)
        query_id, doc_id, raw_score = (cell.strip() for cell in row)
        if not query_id or not doc_id:
            raise DatasetFormatError(path, "empty query-id or corpus-id", lineno)
        try:
            score = int(raw_score)
        except ValueError:
            raise DatasetFormatError(path, f"score {raw_score!r} is not an integer", lineno) from None
        if not _INT32_MIN <= score <= _INT32_MAX:
            raise DatasetFormatError(
                path,
                f"score {raw_score} does not fit a 32-bit integer; use a small relevance grade (0, 1, 2...)",
                lineno,
            )
        judged = qrels.setdefault(query_id, {})
        if doc_id in judged:
            raise DatasetFormatError(path, f"duplicate judgment for ({query_id!r}, {doc_id!r})", lineno)
        judged[doc_id] = score
    return qrels


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
    """The qrels splits a dataset folder has, e.g. ``["dev", "test", "train"]``."""
    folder = resolve_dataset_folder(name_or_path, data_dir, download=False)
    return _splits(folder)


def _splits(folder: Path) -> list[str]:
    # Files only: a directory that happens to be named test.tsv is not a split.
    return sorted(p.stem for p in (folder / "qrels").glob("*.tsv") if p.is_file())


def load_beir_folder(folder: str | os.PathLike[str], split: str = "test", name: str | None = None) -> RetrievalDataset:
    """Load a BEIR-layout folder with the judgments of ``split``."""
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
    """Only the corpus of a dataset (by name under the data dir, or by path): no queries, no qrels.

    For work that must not see any split's judgments, such as making pseudo-queries from the documents.

    Example:
        >>> corpus = load_dataset_corpus("scifact", data_dir="/path/to/beir")  # doctest: +SKIP
        >>> next(iter(corpus.values())).title  # doctest: +SKIP
    """
    return load_corpus(resolve_dataset_folder(name, data_dir, download=download) / "corpus.jsonl")


def load_dataset(
    name: str, split: str = "test", data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> RetrievalDataset:
    """Load a dataset by name (a folder under the data dir) or by path.

    When the folder is missing and ``download`` is true, an official BEIR dataset is downloaded into the data
    dir first (this needs network access to the BEIR host).
    """
    folder = resolve_dataset_folder(name, data_dir, download=download)
    return load_beir_folder(folder, split=split, name=Path(name).name if os.sep in str(name) else str(name))
