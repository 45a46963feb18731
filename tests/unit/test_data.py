from __future__ import annotations

import json
from pathlib import Path

import pytest

from hydra_st.data import DatasetFormatError, Document, available_splits, load_beir_folder, load_dataset
from tests.conftest import TOY_CORPUS, TOY_QRELS, TOY_QUERIES, write_beir_folder


def test_loads_toy_dataset_with_crlf_qrels_and_edge_cases(toy_dataset_dir: Path) -> None:
    ds = load_beir_folder(toy_dataset_dir, split="test")
    assert ds.name == "toy"
    assert ds.doc_ids == ["d1", "d2", "d3", "d4", "d5"]
    assert ds.corpus["d2"].title == "" and ds.corpus["d2"].full_text.startswith("The stock market")
    assert ds.corpus["d4"].full_text == "Dogs"  # empty text keeps the title
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d5": 0}, "q3": {"d3": 1}}  # '\r' stripped, ints
    assert set(ds.judged_queries) == {"q1", "q2", "q3"}  # q4 has no judgment
    assert len(ds.queries) == 4
    assert ds.relevant("q2") == {"d2"}  # score 0 is non-relevant


def test_full_text_joins_title_and_text() -> None:
    assert Document("x", "", "").full_text == ""
    assert Document("x", "T", "").full_text == "T"


def test_load_dataset_by_name_from_data_dir(toy_dataset_dir: Path) -> None:
    ds = load_dataset("toy", data_dir=toy_dataset_dir.parent, download=False)
    assert len(ds.corpus) == 5
    assert available_splits("toy", data_dir=toy_dataset_dir.parent) == ["test"]


def test_missing_dataset_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="HYDRA_ST_DATA_DIR"):
        load_dataset("nope", data_dir=tmp_path, download=False)


def test_unknown_dataset_is_not_downloaded(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not an official BEIR dataset"):
        load_dataset("my-private-set", data_dir=tmp_path, download=True)


def test_missing_split_lists_available(toy_dataset_dir: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"split 'train' not found.*\['test'\]"):
        load_beir_folder(toy_dataset_dir, split="train")


def _corrupt(tmp_path: Path, corpus=None, queries=None, qrels=None) -> Path:
    return write_beir_folder(
        tmp_path / "bad",
        corpus or TOY_CORPUS,
        queries or TOY_QUERIES,
        {"test": qrels if qrels is not None else TOY_QRELS},
    )


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    folder = _corrupt(tmp_path)
    lines = (folder / "corpus.jsonl").read_text().splitlines()
    lines[2] = '{"_id": "d3", "title": "Rain", "text": '
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"corpus\.jsonl:3: invalid JSON") as info:
        load_beir_folder(folder)
    assert info.value.line == 3


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"title": "no id", "text": "x"}], r"corpus\.jsonl:1: missing field '_id'"),
        ([{"_id": "a", "title": "t"}], r"corpus\.jsonl:1: missing field 'text'"),
        ([{"_id": "a", "text": 3}], r"corpus\.jsonl:1: field 'text' must be a string"),
        (
            [{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}],
            r"corpus\.jsonl:2: duplicate document id 'a' \(first on line 1\)",
        ),
        (["[1, 2]"], r"corpus\.jsonl:1: expected a JSON object"),
    ],
)
def test_malformed_corpus_records(tmp_path: Path, records: list, message: str) -> None:
    folder = _corrupt(tmp_path)
    (folder / "corpus.jsonl").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    with pytest.raises(DatasetFormatError, match=message):
        load_beir_folder(folder)


def test_duplicate_query_id(tmp_path: Path) -> None:
    folder = _corrupt(tmp_path, queries=[*TOY_QUERIES, {"_id": "q1", "text": "again"}])
    with pytest.raises(DatasetFormatError, match=r"queries\.jsonl:5: duplicate query id 'q1'"):
        load_beir_folder(folder)


def test_missing_query_text(tmp_path: Path) -> None:
    folder = _corrupt(tmp_path, queries=[{"_id": "q1"}])
    with pytest.raises(DatasetFormatError, match=r"queries\.jsonl:1: missing field 'text'"):
        load_beir_folder(folder)


@pytest.mark.parametrize(
    ("qrels", "message"),
    [
        ("qid\tdocid\tscore\nq1\td1\t1\n", r"test\.tsv:1: wrong header"),
        ("", r"test\.tsv:1: empty file"),
        ("query-id\tcorpus-id\tscore\nq1\td1\n", r"test\.tsv:2: expected 3 tab-separated columns"),
        ("query-id\tcorpus-id\tscore\nq1\td1\thigh\n", r"test\.tsv:2: score 'high' is not an integer"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t0\n", r"test\.tsv:3: duplicate judgment for \('q1', 'd1'\)"),
        (
            "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td99\t1\n",
            r"test\.tsv:3: corpus-id 'd99' \(query 'q1'\) is not in corpus",
        ),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq77\td1\t1\n", r"test\.tsv:3: query-id 'q77' is not in queries"),
    ],
)
def test_malformed_qrels(tmp_path: Path, qrels: str, message: str) -> None:
    folder = _corrupt(tmp_path, qrels=qrels)
    with pytest.raises(DatasetFormatError, match=message):
        load_beir_folder(folder)


def test_missing_corpus_file(tmp_path: Path) -> None:
    folder = _corrupt(tmp_path)
    (folder / "corpus.jsonl").unlink()
    with pytest.raises(DatasetFormatError, match="corpus.jsonl: file not found"):
        load_beir_folder(folder)


def test_integer_ids_are_read_as_strings(tmp_path: Path) -> None:
    folder = write_beir_folder(
        tmp_path / "ints", [{"_id": 7, "text": "seven"}], [{"_id": 1, "text": "q"}],
        {"test": "query-id\tcorpus-id\tscore\n1\t7\t1\n"},
    )  # fmt: skip
    ds = load_beir_folder(folder)
    assert ds.qrels == {"1": {"7": 1}} and "7" in ds.corpus
