"""Publishing a Hypencoder with sentence-transformers' own ``push_to_hub``: what reaches the Hub loads back the same.

The Hub is replaced at its network boundary (the ``fake_hub`` fixture of ``tests/conftest.py``).
"""

from __future__ import annotations

import pytest
import torch

from hydra_st.hypencoder import Hypencoder, QNetConverter
from tests.conftest import REPO_ROOT, card_front_matter


def test_a_pushed_hypencoder_loads_back_with_the_same_scores(tiny_st_model, fake_hub):
    model = Hypencoder.from_base(tiny_st_model, converter=QNetConverter([32, 8, 1], linear_skip=True))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.hyper_head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    uploaded = fake_hub(model, "someone/tiny-hypencoder")
    queries, docs = ["what is a hypernetwork?"], ["A hypernetwork writes weights.", "Bananas are yellow."]
    expected = model.similarity(model.encode_query(queries), model.encode_document(docs))
    loaded = Hypencoder(str(uploaded))
    assert torch.allclose(loaded.similarity(loaded.encode_query(queries), loaded.encode_document(docs)), expected)
    readme = (uploaded / "README.md").read_text(encoding="utf-8")
    assert 'Hypencoder("someone/tiny-hypencoder")' in readme
    assert "base_model:" not in card_front_matter(uploaded) and "unknown" not in readme


def test_a_referenced_base_gives_the_card_its_base_model(tiny_st_model, fake_hub):
    model = Hypencoder.from_base(tiny_st_model, converter=QNetConverter([32, 1], linear_skip=True))
    model.freeze_transformer()
    model.reference_base("someone/tiny-base")  # the tiny transformer itself was loaded from a local folder
    assert "base_model: someone/tiny-base" in card_front_matter(fake_hub(model, "someone/tiny-hypencoder"))


@pytest.mark.integration
def test_the_published_hypencoder_pushed_again_keeps_its_card_and_ships_no_base_weights(fake_hub):
    published = REPO_ROOT / "models" / "hypencoder-minilm-l6"
    uploaded = fake_hub(Hypencoder(str(published)), "someone/hypencoder-copy")
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card_front_matter(uploaded)
    assert (uploaded / "base_model_reference.json").is_file()
    # the frozen base is referenced by its id, not uploaded again
    assert not any(p.stat().st_size > 20_000_000 for p in uploaded.rglob("*") if p.is_file())
    # the published card, moved to the new repository: only the ids differ
    expected = (published / "README.md").read_text(encoding="utf-8")
    expected = expected.replace('"hydra-st/hypencoder-minilm-l6"', '"someone/hypencoder-copy"')
    expected = expected.replace("# hypencoder-minilm-l6\n", "# hypencoder-copy\n", 1)
    assert (uploaded / "README.md").read_text(encoding="utf-8") == expected
    assert "hydra-st/hypencoder-minilm-l6" not in expected
