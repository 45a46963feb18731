from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from hydra_st.hydra import Hydra, HydraHead
from tests.hydra.synthetic import card

TEXTS = ["cats purr when content", "stock markets fell sharply"]


def test_encode_with_card_shape_and_card_dependence(tiny_hydra):
    a = tiny_hydra.encode_query(TEXTS, task_card=card())
    b = tiny_hydra.encode_document(TEXTS, task_card=card("other", "Find financial news."))
    generic = tiny_hydra.encode(TEXTS)
    assert a.shape == (2, 16) == generic.shape
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert not np.allclose(a, tiny_hydra.encode_document(TEXTS, task_card=card("other", "Find financial news.")))
    assert not np.allclose(b, generic)
    assert tiny_hydra.get_embedding_dimension() == 16
    assert "task_card" in tiny_hydra.get_model_kwargs()


def test_card_forms_agree_and_heads_are_cached(tiny_hydra):
    c = card()
    head = tiny_hydra.head
    head.eval()
    e1 = tiny_hydra.encode(TEXTS, task_card=c)
    assert len(head._head_cache) == 1
    e2 = tiny_hydra.encode(TEXTS, task_card=c.to_dict())
    assert len(head._head_cache) == 1  # same content, same cache entry
    assert np.allclose(e1, e2)
    with torch.no_grad():
        head.generator.base_weight.add_(0.3 * torch.randn_like(head.generator.base_weight))  # weights changed
    e3 = tiny_hydra.encode(TEXTS, task_card=c)
    assert not np.allclose(e1, e3)


def test_fresh_head_is_card_independent(tiny_st_model):
    model = Hydra.from_base(tiny_st_model, out_dim=16, cond_dim=8, rank=2, hidden_dim=16)
    assert np.allclose(model.encode(TEXTS, task_card=card()), model.encode(TEXTS, task_card=card("b", "Other.")))


def test_save_load_identical_with_hydra_and_plain_st(tiny_hydra, tmp_path):
    c = card()
    ref = tiny_hydra.encode_query(TEXTS, task_card=c)
    path = tmp_path / "m"
    tiny_hydra.save(str(path))
    modules = json.loads((path / "modules.json").read_text())
    assert modules[-1]["type"] == "hydra_head.HydraHead"
    for f in ("hydra_head.py", "card_encoder.py", "generator.py", "README.md"):
        assert (path / f).is_file()
    assert not list(path.rglob("*.bin")) and not list(path.rglob("*.pt"))
    assert np.allclose(Hydra(str(path)).encode_query(TEXTS, task_card=c), ref, atol=1e-6)
    plain = SentenceTransformer(str(path), trust_remote_code=True)
    assert type(plain[-1]).__name__ == "HydraHead" and not isinstance(plain[-1], HydraHead)
    assert np.allclose(plain.encode_query(TEXTS, task_card=c.to_dict()), ref, atol=1e-6)
    # re-save pitfall: a model re-saved by plain sentence-transformers must still load
    resaved = tmp_path / "resaved"
    plain.save(str(resaved))
    assert (resaved / "hydra_head.py").is_file()
    again = SentenceTransformer(str(resaved), trust_remote_code=True)
    assert np.allclose(again.encode_query(TEXTS, task_card=c.to_dict()), ref, atol=1e-6)
    assert np.allclose(Hydra(str(resaved)).encode_query(TEXTS, task_card=c), ref, atol=1e-6)


def test_plain_st_without_trust_remote_code_refuses(tiny_hydra, tmp_path):
    tiny_hydra.save(str(tmp_path / "m"))
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(tmp_path / "m"))


def test_bad_inputs(tiny_hydra, tiny_st_model, tmp_path):
    with pytest.raises(TypeError, match="task_card must be"):
        tiny_hydra.encode(TEXTS, task_card=42)
    with pytest.raises(ValueError, match="description is empty"):
        tiny_hydra.encode(TEXTS, task_card={"name": "x", "description": ""})
    with pytest.raises(ValueError, match="additional keyword"):
        tiny_hydra.encode(TEXTS, card=card())
    wrong = Hydra(modules=[*list(tiny_st_model), HydraHead(in_dim=24, out_dim=8)])
    with pytest.raises(ValueError, match="in_dim=32"):
        wrong.encode(TEXTS)
    with pytest.raises(ValueError, match="safetensors only"):
        tiny_hydra.save(str(tmp_path / "x"), safe_serialization=False)
    detached = HydraHead(in_dim=32, out_dim=8)
    with pytest.raises(RuntimeError, match="not attached"):
        detached.embed_texts(["x"])


def test_corrupt_saved_head_fails_clearly(tiny_hydra, tmp_path):
    path = tmp_path / "m"
    tiny_hydra.save(str(path))
    weights = path / "3_HydraHead" / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="HydraHead weights cannot be loaded.*SafetensorError.*re-download"):
        Hydra(str(path))
    with pytest.raises(ValueError, match="HydraHead weights cannot be loaded"):  # the remote-code copy says the same
        SentenceTransformer(str(path), trust_remote_code=True)
    weights.unlink()  # a pickled state dict beside it is never read in its place
    torch.save(tiny_hydra[3].state_dict(), path / "3_HydraHead" / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="only safetensors are read"):
        Hydra(str(path))
    weights.write_bytes(good)
    cfg = path / "3_HydraHead" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "rank": 7}))  # weights of another head's shapes
    with pytest.raises(ValueError, match="another config.json"):
        Hydra(str(path))
    shutil.rmtree(path)
    tiny_hydra.save(str(path))
    cfg = path / "3_HydraHead" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "colour": 1}))
    with pytest.raises(ValueError, match="unknown keys"):
        Hydra(str(path))


def test_card_keeps_the_base_model_id_across_save_and_load(tiny_hydra, tmp_path):
    from hydra_st.hydra.model_card import base_model_id, write_model_card

    first = tmp_path / "first"
    first.mkdir()
    # the tiny base was loaded from a local folder whose card names no base: no Hub id to report
    assert base_model_id(tiny_hydra) is None
    (first / "README.md").write_text("---\nbase_model: someone/base-encoder\n---\n", encoding="utf-8")
    assert base_model_id(tiny_hydra, first) == "someone/base-encoder"  # read back from the card of the first save
    text = write_model_card(tiny_hydra, first, model_name="again")
    assert "base_model: someone/base-encoder" in text and "HydraMTEBWrapper" in text


@pytest.mark.parametrize(
    ("rule", "expected", "names_default"),
    [("positive", "the rule `positive`: 2 of its 3 training tasks", True), ("confident", "`confident`: 2 of", False)],
)
def test_card_of_a_gated_model_names_its_gate_rule_and_the_open_gates(
    tiny_st_model, tmp_path, rule, expected, names_default
):
    from hydra_st.hydra.model_card import write_model_card

    model = Hydra.from_base(tiny_st_model, out_dim=32, cond_dim=8, rank=2, hidden_dim=16, gated=True)
    info = {"config": {"gate_rule": rule}, "gates": {"a": 1.0, "b": 2.2e-9, "c": 1.0}}
    (tmp_path / "hydra_training.json").write_text(json.dumps(info), encoding="utf-8")
    text = " ".join(write_model_card(model, tmp_path).split())  # the template wraps its lines
    assert "**Gate rule.**" in text and expected in text
    assert ("hydra_st's default rule is `confident`" in text) == names_default
    (tmp_path / "hydra_training.json").write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        write_model_card(model, tmp_path)


def test_card_states_its_measured_limitations(tiny_hydra, tmp_path):
    from hydra_st.hydra.model_card import measured_limitations, write_model_card

    def scores(base, hydra, loto):
        return {"base": {"ndcg@10": base}, "hydra": {"ndcg@10": hydra}, "hydra_loto": {"ndcg@10": loto}}

    results = {"a": scores(0.50, 0.52, 0.49), "b": scores(0.40, 0.39, 0.38)}
    text = write_model_card(tiny_hydra, tmp_path, limitations=measured_limitations(results))
    limitations = text.split("## Limitations")[1]
    assert "0.4550 against the base model's 0.4500 (+0.0050)" in limitations
    assert "Below the base model on: b." in limitations
    assert "the mean is 0.4350 (-0.0150): on a new task, expect less than the base model's score." in limitations
    assert "handful of tasks" in write_model_card(tiny_hydra, tmp_path / "plain").split("## Limitations")[1]
    assert "query-to-query noise" not in limitations  # no paired comparisons given
    paired = {"a": {"hydra": {"p_value": 0.01}}, "b": {"hydra": {"p_value": 0.4}}}
    with_paired = measured_limitations(results, paired=paired)
    assert "larger than query-to-query noise (paired randomization test, p < 0.05) on 1 of 2 tasks (a)." in with_paired


def test_published_model_carries_the_current_remote_code():
    from pathlib import Path

    from hydra_st.hydra.modules import REMOTE_FILES

    root = Path(__file__).resolve().parents[2]
    package = root / "hydra_st" / "hydra"
    published = root / "models" / "hydra-minilm-l6"
    for copied, source in REMOTE_FILES.items():  # what Hydra.save writes beside the weights
        assert (published / copied).read_text() == (package / source).read_text(), f"re-save or copy {copied}"


def test_saves_use_their_own_temporary_files(tiny_hydra, tmp_path):
    """Another save's temporary files in the same folder (fixed names before) are neither written nor removed."""
    import os

    source = tmp_path / "src"
    tiny_hydra.save(str(source))
    (source / "cards").mkdir()
    (source / "cards" / "toy.yaml").write_text("name: toy\n", encoding="utf-8")
    loaded = Hydra(str(source))
    target = tmp_path / "dst"
    target.mkdir()
    # another process's in-flight temporary files, under the names the old code used
    for name in (".hydra_head.py.tmp", ".card_encoder.py.tmp", ".generator.py.tmp", ".modules.json.tmp"):
        (target / name).mkdir()
    (target / ".cards.tmp").mkdir()
    (target / ".cards.tmp" / "other.yaml").write_text("another save's copy", encoding="utf-8")
    loaded.save(str(target))  # unchanged head: the companion folder cards/ is copied along
    assert (target / "cards" / "toy.yaml").read_text(encoding="utf-8") == "name: toy\n"
    assert (target / ".cards.tmp" / "other.yaml").read_text(encoding="utf-8") == "another save's copy"
    assert json.loads((target / "modules.json").read_text())[-1]["type"] == "hydra_head.HydraHead"
    assert (target / "modules.json").read_bytes() == (source / "modules.json").read_bytes()
    assert not (target / "modules.json").read_bytes().endswith(b"\n")  # as sentence-transformers writes it
    mask = os.umask(0)
    os.umask(mask)
    for name in ("hydra_head.py", "card_encoder.py", "generator.py", "modules.json"):
        assert (target / name).stat().st_mode & 0o777 == 0o666 & ~mask, name  # not mkstemp's 0600
    left = sorted(p.name for p in target.iterdir() if p.name.startswith("."))
    assert left == [
        ".card_encoder.py.tmp",
        ".cards.tmp",
        ".generator.py.tmp",
        ".hydra_head.py.tmp",
        ".modules.json.tmp",
    ]


def test_similarity_names_the_fix_when_base_embeddings_meet_hydra_ones(tiny_hydra):
    queries = tiny_hydra.encode_query(["cats"], task_card=card())
    documents = tiny_hydra.encode_document(["dogs", "cats"], task_card=card())
    assert tuple(tiny_hydra.similarity(queries, documents).shape) == (1, 2)
    assert tuple(tiny_hydra.similarity_pairwise(documents, documents).shape) == (2,)
    assert tuple(tiny_hydra.similarity(queries[:, :8], documents[:, :8]).shape) == (1, 2)  # as with truncate_dim
    base_documents = np.zeros((2, tiny_hydra.head.in_dim), dtype=np.float32)
    with pytest.raises(ValueError, match="encode queries and documents with this model"):
        tiny_hydra.similarity(queries, base_documents)
    with pytest.raises(ValueError, match="16-d and 32-d"):
        tiny_hydra.similarity_pairwise(documents, base_documents)


@pytest.mark.parametrize("payload", ["null", "7", '["rank", 7]'])
def test_a_head_config_that_is_no_object_fails_clearly(tiny_hydra, tmp_path, payload):
    path = tmp_path / "m"
    tiny_hydra.save(str(path))
    (path / "3_HydraHead" / "config.json").write_text(payload)
    with pytest.raises(ValueError, match="not a HydraHead config object: re-save or re-download"):
        Hydra(str(path))
    with pytest.raises(ValueError, match="not a HydraHead config object"):  # the remote-code copy says the same
        SentenceTransformer(str(path), trust_remote_code=True)
