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
from typing import Any

import numpy as np
from torch import Tensor

from hydra_st.hypencoder.encoding import document_vectors, route_modules
from hydra_st.hypencoder.model import Hypencoder
from hydra_st.hypencoder.training_data import TeacherExamples


def validation_ndcg(
    data: list[TeacherExamples], qrels: list[dict[str, dict[str, int]]]
) -> Callable[[Hypencoder], float]:
    """Mean nDCG@10 over datasets of held-out *training* queries (exhaustive q-net search, full corpus).

    ``qrels`` are the *train* qrels of the held-out queries. Document vectors are computed (or loaded from the
    embedding cache) on the first call and reused while the document route's weights stay the same (a frozen
    base, the published setting). When they change (``freeze_base=False`` with a shared transformer trains the
    document side too), the documents are encoded again, so each call scores the model as it is then; those
    re-encodings skip the on-disk cache, which would otherwise gain an entry for every validation step.

    Raises:
        ValueError: a dataset has no held-out query (its score would be undefined).
    """
    from hydra_st.evaluation import evaluate_run
    from hydra_st.retrieval import exhaustive_search, to_run

    for ex in data:
        if not ex.query_ids:
            raise ValueError(
                f"{ex.name}: no held-out validation query (the validation fraction rounds to 0 queries): raise it, "
                "or pass no validation"
            )
    # the document vectors and the fingerprint of the document route that encoded them
    cached: dict[str, Any] = {"vectors": None, "fingerprint": None}

    def score(model: Hypencoder) -> float:
        fingerprint = document_route_fingerprint(model)
        if cached["vectors"] is None:
            cached["vectors"] = [
                document_vectors(model, ex.doc_ids, ex.doc_texts, show_progress_bar=False) for ex in data
            ]
        elif cached["fingerprint"] != fingerprint:
            cached["vectors"] = [
                model.encode_document(ex.doc_texts, convert_to_tensor=True, show_progress_bar=False).cpu()
                for ex in data
            ]
        cached["fingerprint"] = fingerprint
        doc_vectors: list[Tensor] = cached["vectors"]
        values = []
        for ex, rels, docs in zip(data, qrels, doc_vectors, strict=True):
            q = model.encode_query(ex.query_texts, convert_to_tensor=True, show_progress_bar=False)
            s, idx = exhaustive_search(q, docs, top_k=100, scorer=model.similarity)
            run = to_run(ex.query_ids, ex.doc_ids, s, idx)
            values.append(evaluate_run(rels, run, metrics=("ndcg@10",)).aggregate["ndcg@10"])
        return float(np.mean(values))

    return score


def document_route_fingerprint(model: Hypencoder) -> str:
    """Fingerprint of the weights and settings that encode a Hypencoder's documents (~0.1 s for MiniLM).

    Example:
        >>> from hydra_st.hypencoder import Hypencoder
        >>> model = Hypencoder.from_base("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> document_route_fingerprint(model) == document_route_fingerprint(model)  # doctest: +SKIP
        True
    """
    import torch

    from hydra_st.utils.hashing import fingerprint_model

    modules = route_modules(model, "document")
    route: Any = torch.nn.Sequential(*modules)
    route.max_seq_length = getattr(modules[0], "max_seq_length", None)  # truncation changes the vectors too
    return fingerprint_model(route)


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
