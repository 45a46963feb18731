"""Strict readers of the three files of a BEIR-layout folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/*.tsv``.

Every malformed line raises :class:`DatasetFormatError` naming the file and the line (see :mod:`hydra_st.data.beir`,
which puts the three together into a :class:`~hydra_st.data.RetrievalDataset`).
"""

from __future__ import annotations

import csv
import json
import os
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra_st.utils.io import DuplicateKeyError, reject_duplicate_keys

Qrels = dict[str, dict[str, int]]
"""Relevance judgments: ``{query_id: {doc_id: grade}}``; a grade > 0 means relevant."""

QRELS_HEADER = ["query-id", "corpus-id", "score"]
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1  # pytrec_eval stores grades as C ints; a larger one is a SystemError


class DatasetFormatError(ValueError):
    """A dataset file does not follow the BEIR layout. The message names the file and the line.

    Args:
        path: the file at fault.
        message: what is wrong, and how to fix it.
        line: the 1-based line number, when one line is at fault.

    Example:
        >>> error = DatasetFormatError("corpus.jsonl", "missing field 'text'", line=3)
        >>> str(error), error.line
        ("corpus.jsonl:3: missing field 'text'", 3)
    """

    def __init__(self, path: str | os.PathLike[str], message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = Path(path)
        self.line = line


@dataclass(frozen=True, slots=True)
class Document:
    """A corpus document.

    Attributes:
        id: the document id (no whitespace).
        title: the title; may be empty.
        text: the body text; may be empty.

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

    Attributes:
        id: the query id (no whitespace).
        text: the query text.

    Example:
        >>> query = Query("q1", "why do cats purr")
        >>> query.id, query.text
        ('q1', 'why do cats purr')
    """

    id: str
    text: str


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
        except RecursionError:  # thousands of nested brackets: no BEIR record is shaped like that
            raise DatasetFormatError(
                path, "JSON nested too deeply: a record is one flat object of strings", lineno
            ) from None
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
    if any("\ud800" <= c <= "\udfff" for c in value):
        # only a JSON escape such as "\ud800" without its pair yields one: it is no text, and the tokenizer and
        # every UTF-8 writer fail on it later, far from this line
        raise DatasetFormatError(
            path, f"field {key!r} holds a lone UTF-16 surrogate escape (\\ud800-\\udfff); fix or drop it", lineno
        )
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
        if any(unicodedata.category(c) == "Cc" for c in value):
            # a NUL ends the id in trec_eval's C strings, and other control characters are invisible in run files
            raise DatasetFormatError(path, f"'_id' {value!r} contains a control character; remove it", lineno)
    return value


def _records_by_id(path: Path, kind: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(line number, id, record)`` per line of a JSONL file of ``{"_id", ...}`` objects; a repeated id raises
    :class:`DatasetFormatError` naming both lines (``kind``: "document" or "query", for the message)."""
    first_seen: dict[str, int] = {}
    for lineno, record in _iter_jsonl(path):
        record_id = _field(record, "_id", path, lineno)
        if record_id in first_seen:
            raise DatasetFormatError(
                path, f"duplicate {kind} id {record_id!r} (first on line {first_seen[record_id]})", lineno
            )
        first_seen[record_id] = lineno
        yield lineno, record_id, record


def load_corpus(path: str | os.PathLike[str]) -> dict[str, Document]:
    r"""Read ``corpus.jsonl``: one ``{"_id", "title", "text"}`` object per line (``title`` may be absent).

    Args:
        path: the ``corpus.jsonl`` file (UTF-8; a byte-order mark is allowed).

    Returns:
        ``{doc_id: Document}`` in file order.

    Raises:
        DatasetFormatError: a line is not a JSON object, misses ``_id`` or ``text``, repeats an id, or the file
            is missing or empty; the message names the line.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "corpus.jsonl"
        >>> _ = path.write_text('{"_id": "d1", "title": "Cats", "text": "They purr."}\n{"_id": 7, "text": "x"}\n')
        >>> load_corpus(path)
        {'d1': Document(id='d1', title='Cats', text='They purr.'), '7': Document(id='7', title='', text='x')}
    """
    path = Path(path)
    corpus: dict[str, Document] = {}
    for lineno, doc_id, record in _records_by_id(path, "document"):
        title = _field(record, "title", path, lineno, required=False)
        corpus[doc_id] = Document(doc_id, title, _field(record, "text", path, lineno))
    if not corpus:
        raise DatasetFormatError(path, "no documents: the file is empty; it needs one JSON object per document")
    return corpus


def load_queries(path: str | os.PathLike[str]) -> dict[str, Query]:
    r"""Read ``queries.jsonl``: one ``{"_id", "text"}`` object per line.

    Args:
        path: the ``queries.jsonl`` file (UTF-8).

    Returns:
        ``{query_id: Query}`` in file order.

    Raises:
        DatasetFormatError: a malformed line, a repeated id, or a missing or empty file; the message names the line.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "queries.jsonl"
        >>> _ = path.write_text('{"_id": "q1", "text": "why do cats purr"}\n')
        >>> load_queries(path)
        {'q1': Query(id='q1', text='why do cats purr')}
    """
    path = Path(path)
    queries: dict[str, Query] = {}
    for lineno, query_id, record in _records_by_id(path, "query"):
        queries[query_id] = Query(query_id, _field(record, "text", path, lineno))
    if not queries:
        raise DatasetFormatError(path, "no queries: the file is empty; it needs one JSON object per query")
    return queries


def _qrels_rows(path: Path) -> Iterator[list[str]]:
    """The TSV rows of a qrels file; a row the csv module cannot split raises :class:`DatasetFormatError`."""
    current: list[tuple[int, str]] = [(0, "")]  # the line the reader is on, for the error message

    def lines() -> Iterator[str]:
        for lineno, line in _decoded_lines(path):
            current[0] = (lineno, line)
            yield line

    # QUOTE_NONE keeps one row per line (no quoted field spans lines), so the reader's line is the row's line.
    rows = csv.reader(lines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            lineno, line = current[0]
            if "\r" in line.removesuffix("\n").removesuffix("\r"):  # csv: "new-line character seen in unquoted field"
                message = "a carriage return (\\r) inside the line: convert the line endings to LF (dos2unix)"
            else:  # e.g. "field larger than field limit (131072)": an id that long is no id
                message = f"cannot split the line into tab-separated columns ({exc})"
            raise DatasetFormatError(path, message, lineno) from None
        yield row


def load_qrels(path: str | os.PathLike[str]) -> Qrels:
    r"""Read a qrels TSV with the header ``query-id<TAB>corpus-id<TAB>score``; LF or CRLF line endings.

    Args:
        path: the ``qrels/<split>.tsv`` file.

    Returns:
        ``{query_id: {doc_id: grade}}``; grade-0 rows are kept (non-relevant).

    Raises:
        DatasetFormatError: a wrong header, a row without three columns, a non-integer grade, a repeated
            judgment, or a line the TSV reader cannot split (a lone carriage return: old Mac line endings); the
            message names the line.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "test.tsv"
        >>> _ = path.write_bytes(b"query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq1\td2\t0\r\n")
        >>> load_qrels(path)
        {'q1': {'d1': 1, 'd2': 0}}
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(path, "qrels file not found")
    qrels: Qrels = {}
    reader = _qrels_rows(path)
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
