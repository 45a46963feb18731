"""evaluation/hydra_eval.py --save-model: a model folder is replaced without a moment with no model; anything else is
refused before training."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import load_repo_script


@pytest.fixture
def hydra_eval():
    return load_repo_script("evaluation/hydra_eval.py")


def _model(path: Path, marker: str) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "modules.json").write_text("[]", encoding="utf-8")
    (path / "sub" / "weights").write_text(marker, encoding="utf-8")
    return path


def test_publish_replaces_a_model_folder(hydra_eval, tmp_path):
    new = _model(tmp_path / "out" / "model", "new")
    dest = _model(tmp_path / "models" / "m", "old")
    (dest / "stale_file").write_text("from the old model", encoding="utf-8")
    hydra_eval.publish_model(new, dest)
    assert (dest / "sub" / "weights").read_text(encoding="utf-8") == "new"
    assert not (dest / "stale_file").exists()  # the folder is the new model, not a merge
    assert [p.name for p in dest.parent.iterdir()] == ["m"]  # no staging or old copy left beside it
    assert (new / "sub" / "weights").is_file()  # the source stays
    hydra_eval.publish_model(new, tmp_path / "models" / "fresh")  # a new destination works too
    assert (tmp_path / "models" / "fresh" / "modules.json").is_file()


def test_a_failed_copy_leaves_the_old_model_in_place(hydra_eval, tmp_path, monkeypatch):
    new = _model(tmp_path / "out" / "model", "new")
    dest = _model(tmp_path / "models" / "m", "old")

    def copy_then_fail(src, dst, **kwargs):
        (Path(dst) / "half").write_text("partial", encoding="utf-8")
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copytree", copy_then_fail)
    with pytest.raises(OSError, match="disk full"):
        hydra_eval.publish_model(new, dest)
    assert (dest / "sub" / "weights").read_text(encoding="utf-8") == "old"
    assert [p.name for p in dest.parent.iterdir()] == ["m"]


def test_a_destination_that_is_not_a_model_folder_is_refused_before_training(hydra_eval, tmp_path, monkeypatch):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work", encoding="utf-8")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("notes", encoding="utf-8")

    def no_training(*args, **kwargs):
        raise AssertionError("the destination must be checked before training starts")

    monkeypatch.setattr(hydra_eval, "run_pipeline", no_training)
    for dest in (precious, a_file):
        with pytest.raises(SystemExit) as done:
            hydra_eval.main(["--tasks", "adi", "--save-model", str(dest), "--results", str(tmp_path / "results")])
        assert done.value.code == 2
        with pytest.raises(ValueError, match="not a model folder"):
            hydra_eval.publish_model(_model(tmp_path / f"src-{dest.name}", "new"), dest)
    assert (precious / "thesis.tex").read_text(encoding="utf-8") == "years of work"
    assert a_file.read_text(encoding="utf-8") == "notes"
