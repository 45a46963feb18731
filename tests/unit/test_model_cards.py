"""hydra_st.hub.model_cards: a card's base_model is a real Hub id or nothing; a loaded card moves to a new repo."""

from __future__ import annotations

import pytest

from hydra_st.hub.model_cards import card_base_model, hub_model_id, retarget_card


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
        ("C:\\models\\minilm", None),  # a Windows path
        ("/models/minilm", None),
        ("a/b/c", None),
        ("minilm", None),  # no owner: not what a base_model link needs
        ("org/bad--name", None),  # not a valid repo id
        (["org/x"], None),
        (None, None),
    ],
)
def test_hub_model_id(value, expected) -> None:
    assert hub_model_id(value) == expected


def test_an_existing_relative_folder_is_not_a_hub_id(tmp_path, monkeypatch) -> None:
    (tmp_path / "models" / "my-base").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert hub_model_id("models/my-base") is None


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        ("---\nbase_model: org/base\n---\n# m\n", "org/base"),
        ('---\nbase_model: "org/base"\n---\n# m\n', "org/base"),  # YAML quotes are not part of the id
        ("---\nbase_model:\n- org/base\n---\n# m\n", "org/base"),
        ("---\nbase_model:\n- org/a\n- org/b\n---\n# m\n", None),  # a merge of several: no single base
        ("---\nlicense: mit\n---\n```\nbase_model: org/base\n```\n", None),  # only the front matter counts
        ("---\nbase_model: [unclosed\n---\n# m\n", None),
        ("---\nbase_model: /home/me/base\n---\n# m\n", None),
        ("", None),
        (None, None),
    ],
)
def test_card_base_model(card, expected) -> None:
    assert card_base_model(card) == expected


def test_retarget_card_leaves_a_card_without_a_usage_line_alone() -> None:
    card = "# some-model\n\nNo usage here.\n"
    assert retarget_card(card, "Hydra", "me/new") == card
    # an id that merely contains the old one is not touched: only whole quoted ids are replaced
    card = '# m\nmodel = Hydra("org/m")\nsee "org/m-v2" too\n'
    assert retarget_card(card, "Hydra", "me/n") == '# n\nmodel = Hydra("me/n")\nsee "org/m-v2" too\n'
