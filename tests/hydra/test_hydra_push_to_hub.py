"""Publishing a Hydra with sentence-transformers' own ``push_to_hub``: what reaches the Hub loads back the same.

The Hub is replaced at its network boundary (the ``fake_hub`` fixture of ``tests/conftest.py``).
"""

from __future__ import annotations

import numpy as np

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


def test_the_published_hydra_pushed_again_keeps_its_base_model_and_records(fake_hub):
    model = Hydra(str(REPO_ROOT / "models" / "hydra-minilm-l6"))
    uploaded = fake_hub(model, "someone/hydra-copy")
    front = card_front_matter(uploaded)
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in front
    for record in ("hydra_training.json", "hydra_results.md", "cards"):
        assert (uploaded / record).exists(), record
    readme = (uploaded / "README.md").read_text(encoding="utf-8")
    assert 'Hydra("someone/hydra-copy")' in readme and "**Gate rule.**" in readme
