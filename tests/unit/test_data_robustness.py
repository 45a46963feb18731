"""Bad dataset files and folders: each gives a DatasetFormatError naming the file (and line), and loses nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hydra_st.data import DatasetFormatError, available_splits, load_beir_folder, load_dataset
from hydra_st.data import download as download_module
from hydra_st.data.download import download_beir_dataset
from hydra_st.evaluation import write_trec_run
from tests.conftest import TOY_CORPUS, TOY_QRELS, TOY_QUERIES, write_beir_folder, zip_folder


def _user_folder(folder: Path) -> dict[str, bytes]:
    """A dataset folder a user is assembling by hand: everything but ``corpus.jsonl``."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "mine"}\n')
    (folder / "qrels" / "my_judgments.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (folder / "NOTES.txt").write_text("my notes")
    (folder / "corpus.jsonl.gz").write_bytes(b"\x1f\x8b not really")
    return _files(folder)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- B2: the auto-download never replaces user data
@pytest.mark.parametrize("download", [True, False])
def test_existing_folder_without_corpus_is_an_error_not_a_download(
    tmp_path: Path, toy_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch, download: bool
) -> None:
    archive = zip_folder(toy_dataset_dir, tmp_path / "scifact.zip", "scifact")
    monkeypatch.setattr(download_module, "BEIR_URL", archive.as_uri())  # a stand-in for the BEIR host
    data = tmp_path / "data"
    before = _user_folder(data / "scifact")
    with pytest.raises(DatasetFormatError, match=r"scifact/corpus\.jsonl: folder exists but has no corpus\.jsonl"):
        load_dataset("scifact", data_dir=data, download=download)
    assert _files(data / "scifact") == before


def test_empty_folder_is_downloaded_into(
    tmp_path: Path, toy_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = zip_folder(toy_dataset_dir, tmp_path / "scifact.zip", "scifact")
    monkeypatch.setattr(download_module, "BEIR_URL", archive.as_uri())
    (tmp_path / "data" / "scifact").mkdir(parents=True)
    assert len(load_dataset("scifact", data_dir=tmp_path / "data").corpus) == 5
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["scifact"]  # no temporary folder left behind


def test_download_refuses_a_non_empty_target(tmp_path: Path, toy_dataset_dir: Path) -> None:
    archive = zip_folder(toy_dataset_dir, tmp_path / "toy.zip", "toy")
    data = tmp_path / "data"
    before = _user_folder(data / "toy")
    with pytest.raises(DatasetFormatError, match=r"toy: already exists and is not empty; refusing"):
        download_beir_dataset("toy", data, url=archive.as_uri())
    assert _files(data / "toy") == before
    assert [p.name for p in data.iterdir()] == ["toy"]


# ---------------------------------------------------------------- B7: ids a TREC run cannot hold
@pytest.mark.parametrize(
    ("corpus", "queries", "message"),
    [
        ([{"_id": "doc 1", "text": "x"}], TOY_QUERIES, r"corpus\.jsonl:1: '_id' 'doc 1' contains whitespace"),
        ([*TOY_CORPUS, {"_id": "17 ", "text": "x"}], TOY_QUERIES, r"corpus\.jsonl:6: '_id' '17 ' has leading or"),
        (TOY_CORPUS, [{"_id": "q\t1", "text": "x"}], r"queries\.jsonl:1: '_id' 'q\\t1' contains whitespace"),
        (TOY_CORPUS, [{"_id": " q1", "text": "x"}], r"queries\.jsonl:1: '_id' ' q1' has leading or trailing"),
    ],
)
def test_ids_with_whitespace_are_rejected(tmp_path: Path, corpus: list, queries: list, message: str) -> None:
    folder = write_beir_folder(tmp_path / "bad", corpus, queries, {"test": TOY_QRELS})
    with pytest.raises(DatasetFormatError, match=message):
        load_beir_folder(folder)


@pytest.mark.parametrize("run", [{"q1": {"doc 1": 1.0}}, {"q 1": {"d1": 1.0}}, {"q1": {"": 1.0}}])
def test_write_trec_run_rejects_ids_with_whitespace(tmp_path: Path, run: dict) -> None:
    (tmp_path / "run.trec").write_text("old run\n")
    with pytest.raises(ValueError, match="empty or contains whitespace"):
        write_trec_run(run, tmp_path / "run.trec")
    assert (tmp_path / "run.trec").read_text() == "old run\n"  # the atomic write left the old file alone


# ---------------------------------------------------------------- encodings
def test_non_utf8_files_name_file_and_line(tmp_path: Path) -> None:
    folder = write_beir_folder(tmp_path / "bad", TOY_CORPUS, TOY_QUERIES, {"test": TOY_QRELS})
    lines = (folder / "corpus.jsonl").read_bytes().splitlines(keepends=True)
    lines[2] = '{"_id": "d3", "text": "caf\u00e9"}\n'.encode("latin-1")
    (folder / "corpus.jsonl").write_bytes(b"".join(lines))
    with pytest.raises(DatasetFormatError, match=r"corpus\.jsonl:3: not valid UTF-8 \(byte 0xe9") as info:
        load_beir_folder(folder)
    assert info.value.line == 3
    folder = write_beir_folder(tmp_path / "bad2", TOY_CORPUS, TOY_QUERIES, {"test": "query-id\tcorpus-id\tscore\n"})
    (folder / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\nq1\td\xe91\t1\n")
    with pytest.raises(DatasetFormatError, match=r"test\.tsv:2: not valid UTF-8"):
        load_beir_folder(folder)


def test_a_utf8_bom_is_accepted_everywhere(tmp_path: Path, toy_dataset_dir: Path) -> None:
    expected = load_beir_folder(toy_dataset_dir)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        path = toy_dataset_dir / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    ds = load_beir_folder(toy_dataset_dir)
    assert (ds.corpus, ds.queries, ds.qrels) == (expected.corpus, expected.queries, expected.qrels)


# ---------------------------------------------------------------- other malformed content
@pytest.mark.parametrize(("name", "message"), [("corpus.jsonl", "no documents"), ("queries.jsonl", "no queries")])
def test_empty_corpus_or_queries(tmp_path: Path, name: str, message: str) -> None:
    folder = write_beir_folder(tmp_path / "bad", TOY_CORPUS, TOY_QUERIES, {"test": TOY_QRELS})
    (folder / name).write_text("\n")
    with pytest.raises(DatasetFormatError, match=rf"{name}: {message}"):
        load_beir_folder(folder)


def test_a_directory_named_like_a_split_is_not_a_split(tmp_path: Path) -> None:
    folder = write_beir_folder(tmp_path / "ds", TOY_CORPUS, TOY_QUERIES, {"dev": TOY_QRELS})
    (folder / "qrels" / "test.tsv").mkdir()
    assert available_splits(folder) == ["dev"]
    with pytest.raises(DatasetFormatError, match=r"split 'test' not found \(that path is a directory.*\['dev'\]"):
        load_beir_folder(folder, split="test")


def test_qrels_score_must_fit_int32(tmp_path: Path) -> None:
    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t99999999999999999999\n"
    folder = write_beir_folder(tmp_path / "bad", TOY_CORPUS, TOY_QUERIES, {"test": qrels})
    with pytest.raises(DatasetFormatError, match=r"test\.tsv:3: score 99999999999999999999 does not fit a 32-bit"):
        load_beir_folder(folder)


def test_duplicate_key_in_one_json_line(tmp_path: Path) -> None:
    folder = write_beir_folder(tmp_path / "bad", TOY_CORPUS, TOY_QUERIES, {"test": TOY_QRELS})
    lines = (folder / "corpus.jsonl").read_text().splitlines()
    lines[1] = '{"_id": "d2", "text": "x", "_id": "d2b"}'
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"corpus\.jsonl:2: duplicate key '_id'"):
        load_beir_folder(folder)
    assert json.loads(lines[1])["_id"] == "d2b"  # what plain json.loads would have used silently


# ---------------------------------------------------------------- lines json.loads accepts but no dataset holds
@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"_id": "d2", "text": ' + "[" * 100_000 + "]" * 100_000 + "}", r"corpus\.jsonl:2: JSON nested too deeply"),
        (
            '{"_id": "d2", "text": "half a pair \\ud800"}',
            r"jsonl:2: field 'text' holds a lone UTF-16 surrogate",
        ),
        ('{"_id": "d\\ud83d", "text": "x"}', r"corpus\.jsonl:2: field '_id' holds a lone UTF-16 surrogate"),
        ('{"_id": "d\\u0000x", "text": "x"}', r"corpus\.jsonl:2: '_id' 'd\\x00x' contains a control character"),
        ('{"_id": "d\\u0007", "text": "x"}', r"corpus\.jsonl:2: '_id' 'd\\x07' contains a control character"),
    ],
)
def test_corpus_lines_that_json_accepts_but_no_dataset_holds_are_refused(
    tmp_path: Path, line: str, message: str
) -> None:
    folder = write_beir_folder(tmp_path / "bad", TOY_CORPUS, TOY_QUERIES, {"test": TOY_QRELS})
    lines = (folder / "corpus.jsonl").read_text().splitlines()
    lines[1] = line
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=message):
        load_beir_folder(folder)


def test_a_surrogate_pair_escape_is_text_and_is_kept(tmp_path: Path) -> None:
    folder = write_beir_folder(tmp_path / "ok", TOY_CORPUS, TOY_QUERIES, {"test": TOY_QRELS})
    lines = (folder / "corpus.jsonl").read_text().splitlines()
    doc_id = json.loads(lines[1])["_id"]
    lines[1] = '{"_id": "' + doc_id + '", "text": "smile \\ud83d\\ude00"}'  # a pair of escapes: one emoji
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    assert load_beir_folder(folder).corpus[doc_id].text == "smile \U0001f600"
