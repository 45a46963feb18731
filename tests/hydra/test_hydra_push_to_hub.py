"""Publishing a Hydra with sentence-transformers' own ``push_to_hub``: what reaches the Hub loads back the same.

The Hub is replaced at its network boundary (the ``fake_hub`` fixture of ``tests/conftest.py``).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from hydra_st.hydra import Hydra, load_card
from tests.conftest import REPO_ROOT, card_front_matter


def test_a_pushed_hydra_loads_back_with_the_same_embeddings(tiny_hydra, fake_hub):
    from sentence_transformers import SentenceTransformer

    uploaded = fake_hub(tiny_hydra, "someone/tiny-hydra")
    card = load_card("scifact")
    texts = ["Aspirin lowers the risk of heart attacks."]
    expected = tiny_hydra.encode_query(texts, task_card=card)
    assert np.allclose(Hydra(str(uploaded)).encode_query(texts, task_card=card), expected, atol=1e-6)
    plain = SentenceTransformer(str(uploaded), trust_remote_code=True)  # the root remote code travelled too
    assert np.allclose(plain.encode_query(texts, task_card=card), expected, atol=1e-6)
    readme = (uploaded / "README.md").read_text(encoding="utf-8")
    assert 'Hydra("someone/tiny-hydra")' in readme
    # the tiny base was loaded from a local folder: the card claims no Hub model as its base
    assert "base_model:" not in card_front_matter(uploaded)
    assert "a local model with no recorded Hub id" in readme


@pytest.mark.integration
def test_the_published_hydra_pushed_again_keeps_its_card_records_and_base_model(fake_hub):
    published = REPO_ROOT / "models" / "hydra-minilm-l6"
    model = Hydra(str(published))
    uploaded = fake_hub(model, "someone/hydra-copy")
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card_front_matter(uploaded)
    for record in ("hydra_training.json", "hydra_results.md", "cards"):
        assert (uploaded / record).exists(), record
    # the head is unchanged, so the card is the published one (its measured limitations included), moved to the
    # new repository: only the ids differ
    expected = (published / "README.md").read_text(encoding="utf-8")
    expected = expected.replace('"hydra-st/hydra-minilm-l6"', '"someone/hydra-copy"')
    expected = expected.replace("# hydra-minilm-l6\n", "# hydra-copy\n", 1)
    assert (uploaded / "README.md").read_text(encoding="utf-8") == expected
    assert (
        "hydra-st/hydra-minilm-l6" not in expected and "## Limitations" in expected
    )  # the equality pins its measured text


def test_a_changed_hydra_loaded_by_hub_id_names_its_base_not_itself(tiny_hydra, tmp_path, monkeypatch, fake_hub):
    import huggingface_hub.constants
    import torch

    # a Hub download, as the Hugging Face cache holds one: the tiny model's card names its base
    saved = tmp_path / "saved"
    tiny_hydra.save(str(saved))
    readme = saved / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8").replace("---\n", "---\nbase_model: someone/tiny-base\n", 1))
    cache = tmp_path / "hf-cache"
    repo = cache / "models--someone--tiny-hydra"
    shutil.copytree(saved, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    model = Hydra("someone/tiny-hydra", local_files_only=True)
    assert model[0].auto_model.config._name_or_path == "someone/tiny-hydra"  # its own id, not its base's
    with torch.no_grad():
        next(model.head.parameters()).add_(0.01)  # trained further: a new card is written
    front = card_front_matter(fake_hub(model, "someone/tiny-hydra-tuned"))
    assert "base_model: someone/tiny-base" in front
