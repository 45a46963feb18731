"""Keep evaluated queries out of training: no training or dev query may repeat a query that is held out.

BEIR datasets can hold one query text under two ids, one in the train split and one in the test split (scifact,
nfcorpus), and a pseudo-query made from a document title can repeat a test query word for word. An id check does
not see either. Here a training-side query is dropped when its text, with case, punctuation and spacing folded,
is that of any query of the dataset outside the training splits. Only ``queries.jsonl`` is read, never a test
qrels file: every query the training does not use counts as held out (test queries, and unjudged ones too).

Example:
    >>> held_out = {normalised_query("Difference Between Rn and Bsn.")}
    >>> drop_held_out_repeats({"p1": "difference between RN and BSN", "p2": "what is a nurse"}, held_out)
    ({'p2': 'what is a nurse'}, ['p1'])
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

_WORD = re.compile(r"\w+")


def normalised_query(text: str) -> str:
    """``text`` with case, punctuation and spacing folded, so that texts a reader calls the same query are equal.

    Example:
        >>> normalised_query("  Obesity decreases life-quality. ")
        'obesity decreases life quality'
    """
    return " ".join(_WORD.findall(text.casefold()))


def held_out_query_texts(
    name: str, training_ids: Iterable[str], data_dir: str | os.PathLike[str] | None = None
) -> set[str]:
    """The normalised texts of dataset ``name``'s queries whose ids are not in ``training_ids``.

    Reads ``queries.jsonl`` only (no qrels); a dataset without one holds no queries to keep out.
    """
    from hydra_st.data.beir import resolve_dataset_folder
    from hydra_st.data.files import load_queries

    path = resolve_dataset_folder(name, data_dir, download=False) / "queries.jsonl"
    if not path.is_file():
        return set()
    training = set(training_ids)
    return {normalised_query(query.text) for qid, query in load_queries(path).items() if qid not in training}


def drop_held_out_repeats(queries: Mapping[str, str], held_out: set[str]) -> tuple[dict[str, str], list[str]]:
    """``queries`` (``{id: text}``) without those whose normalised text is in ``held_out``; also the dropped ids."""
    kept = {qid: text for qid, text in queries.items() if normalised_query(text) not in held_out}
    return kept, [qid for qid in queries if qid not in kept]
