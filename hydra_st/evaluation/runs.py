"""TREC run files: ``qid Q0 docid rank score tag``, one line per retrieved document."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from hydra_st.utils.io import atomic_open

_WHITESPACE = re.compile(r"\s")  # a regex search per id is a C loop: cheap for runs of millions of lines


class RunFormatError(ValueError):
    r"""A TREC run file is malformed; the message names the file and line.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "bad.trec"
        >>> _ = p.write_text("q1 Q0 d1 1 high demo\n")
        >>> try:
        ...     read_trec_run(p)
        ... except RunFormatError as exc:
        ...     print(str(exc).split(": ", 1)[1])
        score 'high' is not a number
    """


def trec_eval_order(scores: Mapping[str, float]) -> list[str]:
    """Document ids in the order trec_eval ranks them: score descending, then doc id descending.

    trec_eval (so pytrec_eval) keeps each score as a C ``float`` (float32): scores that differ only beyond float32
    precision, or overflow it, tie. Python compares str by code point, which for UTF-8 text is the byte order of
    trec_eval's strcmp.

    Example:
        >>> trec_eval_order({"a": 1.0, "z": 1.0, "m": 3.0, "b": 1.0 + 1e-12})
        ['m', 'z', 'b', 'a']
    """
    doc_ids = list(scores)
    with np.errstate(over="ignore"):  # beyond float32's range trec_eval sees +-inf, and so does this order
        stored = np.asarray([scores[d] for d in doc_ids], dtype=np.float64).astype(np.float32).tolist()
    return [doc_ids[i] for i in sorted(range(len(doc_ids)), key=lambda i: (stored[i], doc_ids[i]), reverse=True)]


def write_trec_run(
    run: Mapping[str, Mapping[str, float]], path: str | os.PathLike[str], tag: str = "hydra_st"
) -> None:
    """Write ``run`` as a TREC run file, atomically, ranked as trec_eval ranks it (:func:`trec_eval_order`).

    Scores are written with ``repr(float(score))``, the shortest text that parses back to the same float, so
    metrics computed from the file equal those of the run in memory (a rounded score could turn two near-duplicate
    documents into a tie that trec_eval breaks by doc id).

    Args:
        run: ``{query_id: {doc_id: score}}``; ids must be non-empty and hold no whitespace, scores finite.
        path: the file to write (replaced atomically; nothing is written when a check fails).
        tag: the run name of the last column, one word.

    Raises:
        ValueError: an id holds whitespace, a score is not finite, or the tag is not one word.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "run.trec"
        >>> write_trec_run({"q1": {"d2": 0.5, "d1": 0.812345678912}}, p, tag="demo")
        >>> p.read_text().splitlines()
        ['q1 Q0 d1 1 0.812345678912 demo', 'q1 Q0 d2 2 0.5 demo']
    """
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag must be a non-empty word without spaces, got {tag!r}")
    with atomic_open(path, "w") as handle:
        for qid, scores in run.items():
            _check_id("query", qid)
            for rank, doc_id in enumerate(trec_eval_order(scores), start=1):
                score = scores[doc_id]
                _check_id("document", doc_id)
                if not math.isfinite(score):
                    raise ValueError(f"non-finite score {score} for query {qid!r}, document {doc_id!r}")
                # repr round-trips exactly (files written before used 8 significant digits; they still read)
                handle.write(f"{qid} Q0 {doc_id} {rank} {float(score)!r} {tag}\n")


def _check_id(kind: str, value: str) -> None:
    # The format is whitespace-separated: an id with a space would shift every later column of its line, and the
    # file would be unreadable by read_trec_run and trec_eval alike. Raising aborts the atomic write, so no
    # half-valid run replaces an existing one.
    text = str(value)
    if not text or _WHITESPACE.search(text):
        raise ValueError(f"{kind} id {value!r} is empty or contains whitespace, which a TREC run file cannot hold")


def read_trec_run(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """Read a TREC run file into ``{query_id: {doc_id: score}}``.

    The rank and tag columns are not used: the scores order the documents, as trec_eval does.

    Args:
        path: a file of ``qid Q0 docid rank score tag`` lines (blank lines are skipped).

    Returns:
        The run, ``{query_id: {doc_id: score}}``, in file order.

    Raises:
        RunFormatError: a line does not have six columns, a score is not a number, or a document is listed twice
            for one query; the message names the file and the line.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "run.trec"
        >>> write_trec_run({"q1": {"d1": 0.9, "d2": 0.5}}, p)
        >>> read_trec_run(p)
        {'q1': {'d1': 0.9, 'd2': 0.5}}
    """
    path = Path(path)
    run: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise RunFormatError(f"{path}:{lineno}: expected 'qid Q0 docid rank score tag', got {line.strip()!r}")
            qid, _, doc_id, _, raw_score, _ = parts
            try:
                score = float(raw_score)
            except ValueError:
                raise RunFormatError(f"{path}:{lineno}: score {raw_score!r} is not a number") from None
            if not math.isfinite(score):  # write_trec_run refuses these too: a nan ranks differently per metric
                raise RunFormatError(f"{path}:{lineno}: score {raw_score!r} is not finite")
            docs = run.setdefault(qid, {})
            if doc_id in docs:
                raise RunFormatError(f"{path}:{lineno}: document {doc_id!r} listed twice for query {qid!r}")
            docs[doc_id] = score
    return run
