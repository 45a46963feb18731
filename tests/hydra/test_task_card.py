from __future__ import annotations

import json

import pytest

from hydra_st.hydra import TaskCard, TaskCardError, available_cards, load_card
from hydra_st.hydra.task_card import MAX_EXAMPLE_CHARS, MAX_EXAMPLES, coerce_card

SHARED = ("scifact", "nfcorpus", "msmarco-dl19-subset", "cranfield", "med", "cacm", "vaswani", "adi")


def make(**kw) -> TaskCard:
    base = dict(
        name="toy",
        description="Find recipes for a dish.",
        domain="cooking",
        query_type="a dish",
        example_queries=["pancakes"],
        example_documents=["Mix flour and eggs."],
        relevance="makes the dish",
    )
    base.update(kw)
    return TaskCard(**base)


def test_round_trips_json_yaml_and_files(tmp_path):
    card = make()
    assert TaskCard.from_json(card.to_json()) == card
    assert TaskCard.from_yaml(card.to_yaml()) == card
    for name in ("c.yaml", "c.json"):
        card.save(tmp_path / name)
        assert TaskCard.load(tmp_path / name) == card


def test_render_is_deterministic_and_complete():
    card = make(description="  Find   recipes\nfor a dish. ")
    text = card.render()
    assert text == make(description="  Find   recipes\nfor a dish. ").render()
    assert text.splitlines() == [
        "Task: toy",
        "Description: Find recipes for a dish.",
        "Domain: cooking",
        "Queries: a dish",
        "Relevant: makes the dish",
        "Example query: pancakes",
        "Example document: Mix flour and eggs.",
    ]
    assert card.fingerprint == make(description="  Find   recipes\nfor a dish. ").fingerprint
    assert card.fingerprint != make(domain="baking").fingerprint


def test_lists_become_tuples_so_cards_are_hashable():
    card = make(example_queries=["a", "b"])
    assert card.example_queries == ("a", "b")
    assert hash(card) == hash(make(example_queries=("a", "b")))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"description": ""}, "description is empty"),
        ({"description": "   "}, "description is empty"),
        ({"description": 3}, "description must be a string"),
        ({"name": ""}, "name must be a non-empty"),
        ({"name": "bad name!"}, "letters, digits"),
        ({"domain": 5}, "domain must be a string"),
        ({"example_queries": "one string"}, "must be a list"),
        ({"example_queries": [1]}, r"example_queries\[0\] must be a string"),
        ({"example_queries": [""]}, r"example_queries\[0\] is empty"),
        ({"example_documents": ["x" * (MAX_EXAMPLE_CHARS + 1)]}, "cut it to at most"),
        ({"example_queries": ["q"] * (MAX_EXAMPLES + 1)}, "keep at most"),
        ({"description": "x" * 5000}, "shorten it"),
    ],
)
def test_bad_cards_raise_clear_errors(kw, match):
    with pytest.raises(TaskCardError, match=match):
        make(**kw)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "does not parse"),
        ("[1, 2]", "must be a mapping"),
        (json.dumps({"name": "x"}), "missing required field"),
        (json.dumps({"name": "x", "description": "d", "colour": "red"}), "unknown task card field"),
        (json.dumps({"name": "x", "description": "d", "example_queries": 7}), "must be a list"),
    ],
)
def test_malformed_json(text, match):
    with pytest.raises(TaskCardError, match=match):
        TaskCard.from_json(text)


def test_malformed_yaml_and_missing_file(tmp_path):
    with pytest.raises(TaskCardError, match="does not parse"):
        TaskCard.from_yaml("name: [unclosed")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndescription: ''\n")
    with pytest.raises(TaskCardError, match="bad.yaml.*description is empty"):
        TaskCard.load(bad)
    with pytest.raises(FileNotFoundError):
        TaskCard.load(tmp_path / "nope.yaml")


def test_null_optional_fields_are_accepted():
    card = TaskCard.from_dict({"name": "x", "description": "d", "domain": None, "example_queries": None})
    assert card.domain == "" and card.example_queries == ()


def test_bundled_cards_cover_every_shared_dataset():
    assert set(SHARED) <= set(available_cards())
    for name in SHARED:
        card = load_card(name)
        assert card.name == name
        assert card.example_queries and card.example_documents and card.relevance
    # a TaskCardError (a ValueError, which the CLI prints as one line), not a KeyError, whose str() adds quotes
    with pytest.raises(TaskCardError, match="available: adi, ") as missing:
        load_card("nope")
    assert "TaskCard.load" not in str(missing.value) and not str(missing.value).startswith("'")
    with pytest.raises(TaskCardError, match=r"TaskCard\.load\(path\)"):  # a file path given where a name belongs
        load_card("my_cards/task.yaml")


def test_coerce_card_accepts_every_form(tmp_path):
    card = make()
    card.save(tmp_path / "c.json")
    assert coerce_card(card) is card
    assert coerce_card(card.to_dict()) == card
    assert coerce_card(tmp_path / "c.json") == card
    assert coerce_card("scifact").name == "scifact"
    with pytest.raises(TaskCardError, match="neither"):
        coerce_card("no-such-card")
    with pytest.raises(TaskCardError, match="expected a TaskCard"):
        coerce_card(42)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("dup.yaml", "name: x\ndescription: first\ndescription: second\n"),
        ("dup.json", '{"name": "x", "description": "first", "description": "second"}'),
    ],
)
def test_duplicate_keys_are_rejected(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(TaskCardError, match=rf"{name}: duplicate key 'description'"):
        TaskCard.load(tmp_path / name)


def test_card_suffix_is_case_insensitive_and_a_bom_is_accepted(tmp_path):
    card = make()
    (tmp_path / "card.YAML").write_text(card.to_yaml())
    assert TaskCard.load(tmp_path / "card.YAML") == card
    assert coerce_card(str(tmp_path / "card.YAML")) == card
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + card.to_json().encode())
    assert TaskCard.load(tmp_path / "bom.json") == card


def test_card_file_problems_name_the_path(tmp_path):
    with pytest.raises(TaskCardError, match=r"card file 'cards/nonexist\.yaml' does not exist"):
        coerce_card("cards/nonexist.yaml")
    with pytest.raises(TaskCardError, match=r"card file .*nope\.json' does not exist"):
        coerce_card(str(tmp_path / "nope.json"))
    (tmp_path / "latin1.yaml").write_bytes("name: x\ndescription: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(TaskCardError, match=r"latin1\.yaml: not valid UTF-8"):
        TaskCard.load(tmp_path / "latin1.yaml")
    (tmp_path / "x.yaml").mkdir()
    with pytest.raises(TaskCardError, match=r"x\.yaml is a directory"):
        coerce_card(str(tmp_path / "x.yaml"))
