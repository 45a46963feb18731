"""Edge cases of inputs found in review: each once gave a wrong result or a bare traceback."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from hydra_st.data.files import DatasetFormatError, load_qrels
from hydra_st.evaluation import evaluate_run
from hydra_st.evaluation.runs import RunFormatError, read_trec_run
from hydra_st.hydra.task_card import TaskCard, TaskCardError
from hydra_st.retrieval.beir_search import ModelSearch
from hydra_st.retrieval.exhaustive import exhaustive_search


@pytest.mark.parametrize("score", ["nan", "inf", "-inf", "NaN", "+Infinity", "-INF"])
def test_a_run_file_with_a_non_finite_score_is_refused(tmp_path: Path, score: str) -> None:
    path = tmp_path / "run.trec"
    path.write_text(f"q1 Q0 d1 1 0.5 x\nq1 Q0 d2 2 {score} x\n", encoding="utf-8")
    with pytest.raises(RunFormatError, match=rf"run\.trec:2: score '{re.escape(score)}' is not finite"):
        read_trec_run(path)


def test_a_run_keyed_by_int_ids_scores_as_the_same_run_keyed_by_strings() -> None:
    as_ints = evaluate_run({1: {10: 1}}, {1: {10: 1.0, 11: 0.5}}, metrics=["ndcg@10"])
    as_strings = evaluate_run({"1": {"10": 1}}, {"1": {"10": 1.0, "11": 0.5}}, metrics=["ndcg@10"])
    assert as_ints.aggregate == as_strings.aggregate == {"ndcg@10": 1.0}


@pytest.mark.parametrize(
    ("payload", "line"),
    [
        (b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td\r2\t1\n", 3),  # a stray carriage return
        (b"query-id\tcorpus-id\tscore\rq1\td1\t1\r", 1),  # old Mac line endings
    ],
)
def test_a_qrels_file_with_a_lone_carriage_return_names_its_line_and_the_fix(
    tmp_path: Path, payload: bytes, line: int
) -> None:
    path = tmp_path / "test.tsv"
    path.write_bytes(payload)
    with pytest.raises(DatasetFormatError, match=rf"test.tsv:{line}: a carriage return .* convert the line endings"):
        load_qrels(path)


def test_a_qrels_field_over_the_csv_limit_is_not_blamed_on_a_carriage_return(tmp_path: Path) -> None:
    path = tmp_path / "test.tsv"
    path.write_bytes(b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\t" + b"d" * 200_000 + b"\t1\n")
    with pytest.raises(DatasetFormatError, match=r"test\.tsv:3: cannot split .*field larger than field limit"):
        load_qrels(path)


def test_a_card_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(TaskCardError, match="must be at most"):
        TaskCard(name="scifact\n", description="Scientific claims.")


def test_a_card_with_unknown_keys_of_mixed_types_names_them() -> None:
    with pytest.raises(TaskCardError, match=r"unknown task card field\(s\) \[1, 'foo'\]"):
        TaskCard.from_dict({"name": "t", "description": "d", 1: "x", "foo": "y"})


def test_exhaustive_search_over_no_query_returns_an_empty_answer() -> None:
    scores, indices = exhaustive_search(torch.empty(0, 4), torch.eye(4), top_k=3)
    assert scores.shape == indices.shape == (0, 3) and indices.dtype == torch.long


class _RecordingModel:
    """Enough of a SentenceTransformer for ModelSearch: records the keyword arguments of each encode call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def _encode(self, texts: list[str], **kwargs: Any) -> torch.Tensor:
        self.calls.append(kwargs)
        return torch.eye(len(texts), 3)

    encode_document = encode_query = _encode

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b.T


def test_model_search_lets_encode_kwargs_override_the_progress_bar() -> None:
    model = _RecordingModel()
    search = ModelSearch(model, encode_kwargs={"show_progress_bar": False, "batch_size": 4})  # type: ignore[arg-type]
    run = search.search({"d1": {"text": "a"}, "d2": {"text": "b"}}, {"q1": "a"}, top_k=1)
    assert set(run) == {"q1"}
    assert all(call["show_progress_bar"] is False and call["batch_size"] == 4 for call in model.calls)
