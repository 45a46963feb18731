"""Early stopping for Hypencoder training: held-out training queries and their nDCG@10.

The held-out queries come from the *training* split (their train qrels judge them), so choosing a training step
never reads a test judgment.

Example:
    >>> from hydra_st.data import load_dataset
    >>> from hydra_st.hypencoder import HypencoderTrainingConfig, train_hypencoder
    >>> from hydra_st.hypencoder.training_data import build_teacher_examples
    >>> from hydra_st.hypencoder.validation import split_examples, validation_ndcg
    >>> examples = build_teacher_examples("scifact", split="train")  # doctest: +SKIP
    >>> train_qrels = load_dataset("scifact", split="train").qrels  # doctest: +SKIP
    >>> train, held_out = split_examples(examples, 0.2, seed=42)  # doctest: +SKIP
    >>> held_out_qrels = {q: train_qrels[q] for q in held_out.query_ids}  # doctest: +SKIP
    >>> score = validation_ndcg([held_out], [held_out_qrels])  # doctest: +SKIP
    >>> config = HypencoderTrainingConfig(datasets=["scifact"], steps=300)
    >>> model, log = train_hypencoder(config, data=[train], validation=score)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import Tensor

from hydra_st.hypencoder.encoding import document_vectors
from hydra_st.hypencoder.model import Hypencoder
from hydra_st.hypencoder.training_data import TeacherExamples


def validation_ndcg(
    data: list[TeacherExamples], qrels: list[dict[str, dict[str, int]]]
) -> Callable[[Hypencoder], float]:
    """Mean nDCG@10 over datasets of held-out *training* queries (exhaustive q-net search, full corpus).

    ``qrels`` are the *train* qrels of the held-out queries; document vectors are computed (or loaded from the
    cache) once, on the first call.
    """
    from hydra_st.evaluation import evaluate_run
    from hydra_st.retrieval import exhaustive_search, to_run

    doc_vectors: list[Tensor] = []

    def score(model: Hypencoder) -> float:
        if not doc_vectors:
            doc_vectors.extend(
                document_vectors(model, ex.doc_ids, ex.doc_texts, show_progress_bar=False) for ex in data
            )
        values = []
        for ex, rels, docs in zip(data, qrels, doc_vectors, strict=True):
            q = model.encode_query(ex.query_texts, convert_to_tensor=True, show_progress_bar=False)
            s, idx = exhaustive_search(q, docs, top_k=100, scorer=model.similarity)
            run = to_run(ex.query_ids, ex.doc_ids, s, idx)
            values.append(evaluate_run(rels, run, metrics=("ndcg@10",)).aggregate["ndcg@10"])
        return float(np.mean(values))

    return score


def split_examples(ex: TeacherExamples, fraction: float, seed: int = 0) -> tuple[TeacherExamples, TeacherExamples]:
    """Split training queries into (train, held-out) parts, deterministically."""
    order = np.random.default_rng(seed).permutation(len(ex.query_ids))
    n_val = int(round(fraction * len(order)))
    parts = []
    for idx in (sorted(order[n_val:]), sorted(order[:n_val])):
        parts.append(
            TeacherExamples(
                ex.name,
                ex.doc_ids,
                ex.doc_texts,
                [ex.query_ids[i] for i in idx],
                [ex.query_texts[i] for i in idx],
                [ex.candidates[i] for i in idx],
                [ex.teacher_scores[i] for i in idx],
                [ex.positives[i] for i in idx],
            )
        )
    return parts[0], parts[1]
