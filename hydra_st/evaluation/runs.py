"""TREC run files: ``qid Q0 docid rank score tag``, one line per retrieved document."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

from hydra_st.utils.io import atomic_open

_WHITESPACE = re.compile(r"\s")  # a regex search per id is a C loop: cheap for runs of millions of lines


class RunFormatError(ValueError):
    """A TREC run file is malformed; the message names the file and line."""


def write_trec_run(
    run: Mapping[str, Mapping[str, float]], path: str | os.PathLike[str], tag: str = "hydra_st"
) -> None:
    """Write ``run`` as a TREC run file, atomically, ranks by descending score (ties by doc id).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "run.trec"
        >>> write_trec_run({"q1": {"d2": 0.5, "d1": 0.9}}, p, tag="demo")
        >>> p.read_text().splitlines()[0]
        'q1 Q0 d1 1 0.9 demo'
    """
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag must be a non-empty word without spaces, got {tag!r}")
    with atomic_open(path, "w") as handle:
        for qid, scores in run.items():
            _check_id("query", qid)
            for rank, doc_id in enumerate(sorted(scores, key=lambda d: (-scores[d], d)), start=1):
                score = scores[doc_id]
                _check_id("document", doc_id)
                if not math.isfinite(score):
                    raise ValueError(f"non-finite score {score} for query {qid!r}, document {doc_id!r}")
                handle.write(f"{qid} Q0 {doc_id} {rank} {score:.8g} {tag}\n")


def _check_id(kind: str, value: str) -> None:
    # The format is whitespace-separated: an id with a space would shift every later column of its line, and the
    # file would be unreadable by read_trec_run and trec_eval alike. Raising aborts the atomic write, so no
    # half-valid run replaces an existing one.
    text = str(value)
    if not text or _WHITESPACE.search(text):
        raise ValueError(f"{kind} id {value!r} is empty or contains whitespace, which a TREC run file cannot hold")


def read_trec_run(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """Read a TREC run file into ``{query_id: {doc_id: score}}``."""
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
            docs = run.setdefault(qid, {})
            if doc_id in docs:
                raise RunFormatError(f"{path}:{lineno}: document {doc_id!r} listed twice for query {qid!r}")
            docs[doc_id] = score
    return run
