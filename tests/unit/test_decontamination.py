"""No training or dev query repeats the text of a held-out query, in either model family's training data."""

from __future__ import annotations

import numpy as np
import pytest

from hydra_st.data.decontamination import drop_held_out_repeats, held_out_query_texts, normalised_query
from tests.conftest import TOY_CORPUS, TOY_QRELS, TOY_QUERIES, write_beir_folder

# q9 is test query q1 again under another id (as scifact's train 871 is its test 870), in the train split
REPEAT = {"_id": "q9", "text": "  Why do cats PURR? "}
TRAIN_QRELS = "query-id\tcorpus-id\tscore\nq9\td1\t1\nq2\td2\t2\nq3\td3\t1\n"
TEST_QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\n"


@pytest.fixture
def data_dir(tmp_path):
    write_beir_folder(tmp_path / "toy", TOY_CORPUS, [*TOY_QUERIES, REPEAT], {"train": TRAIN_QRELS, "test": TEST_QRELS})
    # a collection with no train split: its training queries are pseudo-queries made from document titles
    titled = [{**TOY_CORPUS[0], "title": "Why do cats purr"}, *TOY_CORPUS[1:]]
    write_beir_folder(tmp_path / "titles", titled, TOY_QUERIES, {"test": TOY_QRELS})
    return tmp_path


def test_held_out_texts_are_every_other_query_of_the_file(data_dir) -> None:
    held_out = held_out_query_texts("toy", ["q9", "q2", "q3"], data_dir)
    assert held_out == {normalised_query(q["text"]) for q in TOY_QUERIES if q["_id"] in ("q1", "q4")}
    kept, dropped = drop_held_out_repeats({"q9": REPEAT["text"], "q2": "what makes stock prices drop"}, held_out)
    assert (list(kept), dropped) == (["q2"], ["q9"])


def test_a_hydra_task_trains_on_no_repeat_of_a_held_out_query(data_dir) -> None:
    from hydra_st.hydra.task_card import TaskCard
    from hydra_st.hydra.tasks import QueryEmbeddingCache, build_task

    class Teacher:  # stands in for the DenseTeacher: only the corpus embeddings are asked for
        def encode_corpus(self, ids, texts):
            return np.ones((len(ids), 3), dtype=np.float32) / np.sqrt(3)

    class Base:
        def get_embedding_dimension(self):
            return 3

        def encode_query(self, texts, **kwargs):
            return np.ones((len(texts), 3), dtype=np.float32) / np.sqrt(3)

    cache = QueryEmbeddingCache(Base(), "toy-model", cache_dir=data_dir / "cache")
    card = TaskCard(name="toy", description="Toy questions about cats, stocks and rain.")
    for name, with_test in (("toy", True), ("toy", False), ("titles", True)):
        task = build_task(name, Teacher(), cache, card=card, data_dir=data_dir, with_test=with_test, n_pseudo=4)
        texts = {normalised_query(t) for t in [*task.train.texts, *task.dev.texts]}
        assert "why do cats purr" not in texts, (name, with_test)
        assert "1 left out as repeats of a held-out query's text" in task.train_source, (name, with_test)


def test_hypencoder_teacher_examples_hold_no_repeat_of_a_held_out_query(data_dir, tiny_st_model) -> None:
    from hydra_st.hypencoder.training_data import build_teacher_examples

    options = {"depth": 5, "base_model": tiny_st_model, "data_dir": str(data_dir), "show_progress_bar": False}
    train = build_teacher_examples("toy", cache_dir=str(data_dir / "cache"), **options)
    assert sorted(train.query_ids) == ["q2", "q3"]
    pseudo = build_teacher_examples("titles", "pseudo", cache_dir=str(data_dir / "cache"), **options)
    assert "why do cats purr" not in {normalised_query(t) for t in pseudo.query_texts}
