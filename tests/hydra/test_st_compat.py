"""Hydra behaves like any sentence-transformers model: pickle, copies, half precision, pools, re-saving."""

from __future__ import annotations

import copy
import json
import logging
import pickle

import numpy as np
import pytest
import torch

from hydra_st.hydra import Hydra
from tests.hydra.synthetic import card

TEXTS = ["cats purr when content", "stock markets fell sharply", "rain falls in spring"]


def test_pickle_and_deepcopy_keep_a_working_head(tiny_hydra):
    expected = tiny_hydra.encode_query(TEXTS, task_card=card())
    for other in (pickle.loads(pickle.dumps(tiny_hydra)), copy.deepcopy(tiny_hydra)):
        # a card the original never compiled: the copy's head must embed it with the copy's own base modules
        np.testing.assert_allclose(other.encode_query(TEXTS, task_card=card()), expected, atol=1e-6)
        assert other.head.__dict__["_owner"] is other


def test_multi_process_encode_gives_the_same_embeddings(tiny_hydra):
    expected = tiny_hydra.encode_query(TEXTS, task_card=card())
    pooled = tiny_hydra.encode_query(TEXTS, task_card=card(), device=["cpu"], batch_size=1)
    np.testing.assert_allclose(pooled, expected, atol=1e-6)


def test_half_precision_encodes(tiny_hydra):
    expected = tiny_hydra.encode_query(TEXTS, task_card=card())
    half = copy.deepcopy(tiny_hydra).to(torch.bfloat16)
    got = half.encode_query(TEXTS, task_card=card(), convert_to_tensor=True).float().numpy()
    np.testing.assert_allclose(got, expected, atol=0.05)


def test_compiled_head_is_reused_across_batches_and_calls(tiny_hydra, monkeypatch):
    calls = []
    generate = tiny_hydra.head.generator.forward
    monkeypatch.setattr(tiny_hydra.head.generator, "forward", lambda c: calls.append(1) or generate(c))
    tiny_hydra.encode_query(TEXTS, task_card=card(), batch_size=1)
    tiny_hydra.encode_document(TEXTS, task_card=card(), batch_size=1)
    assert len(calls) == 1
    with torch.no_grad():
        tiny_hydra.head.generator.base_weight.mul_(1.5)  # changed weights: compiled again
    tiny_hydra.encode_query(TEXTS, task_card=card())
    assert len(calls) == 2


def test_encoding_without_a_card_warns_once(tiny_hydra, caplog):
    with caplog.at_level(logging.WARNING, logger="hydra_st.hydra.modules"):
        tiny_hydra.encode(TEXTS)
        tiny_hydra.encode(TEXTS)
        tiny_hydra.encode(TEXTS, task_card=card())
    warnings = [r for r in caplog.records if "no task_card" in r.getMessage()]
    assert len(warnings) == 1


def test_resaving_a_loaded_model_keeps_its_card_and_records(tiny_hydra, tmp_path):
    first = tmp_path / "first"
    tiny_hydra.save(str(first))
    (first / "hydra_training.json").write_text(json.dumps({"steps": 7}))
    (first / "hydra_results.md").write_text("| task | nDCG@10 |\n|---|---|\n| toy | 0.5 |\n")
    card().save(first / "cards" / "toy.yaml")
    from hydra_st.hydra.model_card import write_model_card

    published = write_model_card(Hydra(str(first)), first, limitations="Measured: nothing.")

    loaded = Hydra(str(first))
    loaded.save(str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "README.md").read_text() == published
    for name in ("hydra_training.json", "hydra_results.md", "cards/toy.yaml"):
        assert (tmp_path / "copy" / name).read_bytes() == (first / name).read_bytes()

    with torch.no_grad():  # a changed head: its card must not claim the source's training or results
        loaded.head.generator.base_weight.mul_(1.1)
    loaded.save(str(tmp_path / "changed"))
    text = (tmp_path / "changed" / "README.md").read_text()
    assert "Trained further after loading" in text and "0.5" not in text
    assert not (tmp_path / "changed" / "hydra_results.md").exists()


def test_a_local_model_gets_a_name_for_mteb(tiny_hydra, tmp_path):
    tiny_hydra.save(str(tmp_path / "my-hydra"))
    assert Hydra(str(tmp_path / "my-hydra")).model_card_data.model_name == "local/my-hydra"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_card_encoder_follows_the_head_dtype(tiny_hydra, dtype):
    head = copy.deepcopy(tiny_hydra).head.to(dtype)
    cond = head.conditioning(card())
    assert cond.dtype == dtype
