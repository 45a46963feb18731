from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from hydra_st.data import load_beir_folder
from hydra_st.data.download import download_beir_dataset
from tests.conftest import zip_folder


def test_download_unpacks_into_data_dir(toy_dataset_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "toy.zip"
    zip_folder(toy_dataset_dir, archive, "toy")
    data_dir = tmp_path / "data"
    target = download_beir_dataset("toy", data_dir, url=archive.as_uri())
    assert target == data_dir / "toy"
    assert len(load_beir_folder(target).corpus) == 5
    assert sorted(p.name for p in data_dir.iterdir()) == ["toy"]  # no temporary folder left behind


def test_download_refuses_archive_escaping_the_folder(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escaped.txt", "x")
    with pytest.raises(ValueError, match="unsafe path"):
        download_beir_dataset("evil", tmp_path / "data", url=archive.as_uri())
    assert not (tmp_path / "escaped.txt").exists()


def test_download_failure_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="HYDRA_ST_DATA_DIR"):
        download_beir_dataset("scifact", tmp_path, url=(tmp_path / "missing.zip").as_uri())
    assert list(tmp_path.iterdir()) == []


def test_archive_without_corpus_is_rejected(tmp_path: Path) -> None:
    archive = tmp_path / "empty.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("empty/readme.txt", "nothing here")
    with pytest.raises(ValueError, match="no empty/corpus.jsonl"):
        download_beir_dataset("empty", tmp_path / "data", url=archive.as_uri())
