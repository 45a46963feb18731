"""Loading a damaged or foreign model folder fails with an error that names it; nothing is unpickled."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hydra_st.hydra import Hydra
from hydra_st.hypencoder import Hypencoder, QNetConverter


@pytest.fixture
def hydra_dir(tiny_st_model, tmp_path):
    Hydra.from_base(tiny_st_model, out_dim=16, cond_dim=8, rank=2, hidden_dim=16).save(str(tmp_path / "hydra"))
    return tmp_path / "hydra"


@pytest.fixture
def hyp_dir(tiny_st_model, tmp_path):
    model = Hypencoder.from_base(tiny_st_model, converter=QNetConverter([32, 16, 1], linear_skip=True))
    model.save(str(tmp_path / "hyp"))
    return tmp_path / "hyp"


def _head_dir(root):
    return next(p for p in root.rglob("model.safetensors") if p.parent != root).parent


def test_a_missing_vocabulary_is_refused(hydra_dir):
    for name in ("tokenizer.json", "vocab.txt"):
        (hydra_dir / name).unlink(missing_ok=True)
    with pytest.raises(ValueError, match="only its .* special tokens"):
        Hydra(str(hydra_dir))


def test_pickled_root_weights_are_never_read(hydra_dir):
    state = load_file(str(hydra_dir / "model.safetensors"))
    torch.save(state, hydra_dir / "pytorch_model.bin")  # what a pickle-only checkpoint looks like
    (hydra_dir / "model.safetensors").unlink()
    with pytest.raises(OSError, match="safetensors"):
        Hydra(str(hydra_dir))


def test_a_folder_that_is_not_the_family_is_refused(tiny_st_model_dir):
    with pytest.raises(ValueError, match="not a Hydra model"):
        Hydra(str(tiny_st_model_dir))
    with pytest.raises(ValueError, match="not a Hypencoder"):
        Hypencoder(str(tiny_st_model_dir))


@pytest.mark.parametrize("damage", ["nan", "int"])
@pytest.mark.parametrize("family", ["hydra", "hyp"])
def test_weights_that_parse_but_are_damaged_are_refused(family, damage, request):
    root = request.getfixturevalue(f"{family}_dir")
    path = _head_dir(root) / "model.safetensors"
    state = load_file(str(path))
    key = next(iter(state))
    state[key] = torch.full_like(state[key], float("nan")) if damage == "nan" else state[key].to(torch.int32)
    save_file(state, str(path))
    cls = Hydra if family == "hydra" else Hypencoder
    with pytest.raises(ValueError, match="not finite floating-point"):
        cls(str(root))


@pytest.mark.parametrize("family", ["hydra", "hyp"])
def test_damaged_configs_name_the_file(family, request):
    root = request.getfixturevalue(f"{family}_dir")
    cls = Hydra if family == "hydra" else Hypencoder
    config = _head_dir(root) / "config.json"
    original = config.read_text()
    config.write_text("{not json")
    with pytest.raises(ValueError, match="config.json does not parse"):
        cls(str(root))
    config.write_text(json.dumps({**json.loads(original), "from_the_future": 1}))
    with pytest.raises(ValueError, match="unknown keys"):
        cls(str(root))
    config.unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        cls(str(root))


def test_damaged_root_weights_name_the_model(hydra_dir):
    (hydra_dir / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="weights file is damaged.*re-save or re-download"):
        Hydra(str(hydra_dir))


def test_a_base_reference_runs_no_code_and_is_validated(tiny_st_model, tiny_st_model_dir, tmp_path, monkeypatch):
    from sentence_transformers.sentence_transformer.modules import Transformer

    model = Hypencoder.from_base(tiny_st_model, converter=QNetConverter([32, 16, 1], linear_skip=True))
    model.freeze_transformer()
    model.reference_base(str(tiny_st_model_dir))
    model.save(str(tmp_path / "ref"))
    seen = {}
    load = Transformer.load.__func__

    def spy(cls, *args, **kwargs):
        seen.update(kwargs)
        return load(cls, *args, **kwargs)

    monkeypatch.setattr(Transformer, "load", classmethod(spy))
    Hypencoder(str(tmp_path / "ref"), trust_remote_code=True)
    # the user trusted this model's code, not the referenced base's, and the base is read as safetensors only
    assert seen["trust_remote_code"] is False and seen["model_kwargs"]["use_safetensors"] is True
    monkeypatch.undo()

    reference = next((tmp_path / "ref").rglob("base_model_reference.json"))
    reference.write_text(json.dumps({"max_seq_length": 16}))
    with pytest.raises(ValueError, match="base_model_id"):
        Hypencoder(str(tmp_path / "ref"))
