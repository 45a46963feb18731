"""MTEB files results under a model's name and revision: different weights must never share an entry, and the
metadata MTEB records must describe the model (the base model's Hub id and commit; a Hypencoder's q-net)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hydra_st.evaluation.mteb_tasks import beir_retrieval_task
from hydra_st.hypencoder import Hypencoder, QNetConverter


def _hypencoder(base, folder: Path, seed: int) -> Hypencoder:
    Hypencoder.from_base(base, converter=QNetConverter([32, 1], linear_skip=True), init_seed=seed).save(str(folder))
    return Hypencoder(str(folder))


def test_two_local_models_with_the_same_folder_name_get_separate_mteb_results(
    tiny_st_model, toy_dataset_dir: Path, tmp_path: Path
) -> None:
    mteb = pytest.importorskip("mteb")
    first = _hypencoder(tiny_st_model, tmp_path / "a" / "model", seed=1)
    second = _hypencoder(tiny_st_model, tmp_path / "b" / "model", seed=2)
    assert first.model_card_data.model_name == second.model_card_data.model_name == "local/model"
    cache = mteb.ResultCache(str(tmp_path / "mteb"))
    results = [
        mteb.evaluate(model, beir_retrieval_task(str(toy_dataset_dir)), cache=cache, show_progress_bar=False)
        for model in (first, second)
    ]
    # before: both were local/model at "no_revision_available", and the second got the first's cached scores
    assert results[0].model_revision != results[1].model_revision
    assert results[1].model_revision == second.model_card_data.base_model_revision
    stored = sorted(p.parent.name for p in (tmp_path / "mteb").rglob("model_meta.json"))
    assert stored == sorted(r.model_revision for r in results)
    fresh = mteb.evaluate(second, beir_retrieval_task(str(toy_dataset_dir)), cache=None, show_progress_bar=False)
    assert results[1].task_results[0].get_score() == fresh.task_results[0].get_score()


def test_the_revision_follows_the_weights_not_the_folder(tiny_st_model, tmp_path: Path) -> None:
    model = _hypencoder(tiny_st_model, tmp_path / "one", seed=1)
    model.save(str(tmp_path / "two"))
    assert model.model_card_data.base_model_revision is not None
    assert Hypencoder(str(tmp_path / "two")).model_card_data.base_model_revision == (
        model.model_card_data.base_model_revision
    )


def test_load_base_model_records_the_hub_id_and_snapshot_revision(minilm) -> None:
    from hydra_st.hub.offline import ensure_base_model

    snapshot = ensure_base_model()
    assert snapshot is not None
    assert minilm.model_card_data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert minilm.model_card_data.base_model_revision == snapshot.name
    pytest.importorskip("mteb")
    from mteb.models.model_meta import ModelMeta

    meta = ModelMeta.from_sentence_transformer_model(minilm)
    assert (meta.name, meta.revision) == ("sentence-transformers/all-MiniLM-L6-v2", snapshot.name)


def test_load_base_model_names_a_local_folder_by_its_weights(tiny_st_model_dir: Path) -> None:
    from hydra_st.hub.offline import load_base_model
    from hydra_st.utils.hashing import fingerprint_model

    model = load_base_model(str(tiny_st_model_dir))
    assert model.model_card_data.model_name == f"local/{tiny_st_model_dir.name}"
    assert model.model_card_data.base_model_revision == fingerprint_model(model)


def test_hypencoder_wrapper_gives_mteb_the_qnet_metadata(tiny_st_model, toy_dataset_dir: Path, tmp_path: Path) -> None:
    mteb = pytest.importorskip("mteb")
    from mteb.models.model_meta import ModelMeta

    from hydra_st.hypencoder.mteb import HypencoderMTEBWrapper

    model = _hypencoder(tiny_st_model, tmp_path / "hyp", seed=1)
    plain = ModelMeta.from_sentence_transformer_model(model)
    assert plain.similarity_fn_name.value == "cosine"  # what MTEB reads off the sentence-transformers config
    wrapper = HypencoderMTEBWrapper(model)
    meta = wrapper.mteb_model_meta
    assert meta.similarity_fn_name.value == "custom"
    assert meta.n_parameters == sum(p.numel() for p in model.parameters())
    assert meta.embed_dim == 32
    assert (meta.name, meta.revision) == (plain.name, plain.revision)
    cache = mteb.ResultCache(str(tmp_path / "mteb"))
    result = mteb.evaluate(wrapper, beir_retrieval_task(str(toy_dataset_dir)), cache=cache, show_progress_bar=False)
    direct = mteb.evaluate(model, beir_retrieval_task(str(toy_dataset_dir)), cache=None, show_progress_bar=False)
    assert result.task_results[0].get_score() == direct.task_results[0].get_score()  # same q-net scoring
    written = json.loads(next((tmp_path / "mteb").rglob("model_meta.json")).read_text())
    assert written["similarity_fn_name"] == "custom" and written["n_parameters"] == meta.n_parameters
    with pytest.raises(TypeError, match="wraps a Hypencoder"):
        HypencoderMTEBWrapper(tiny_st_model)


def test_one_hydra_model_with_other_cards_gets_separate_mteb_results(
    tiny_st_model, toy_dataset_dir: Path, tmp_path: Path
) -> None:
    mteb = pytest.importorskip("mteb")
    from hydra_st.hydra import Hydra, TaskCard
    from hydra_st.hydra.mteb import HydraMTEBWrapper

    folder = tmp_path / "hydra"
    Hydra.from_base(tiny_st_model, out_dim=16, cond_dim=8, rank=2, hidden_dim=16).save(str(folder))
    model = Hydra(str(folder))
    task = beir_retrieval_task(str(toy_dataset_dir))
    cards = [
        TaskCard(name="toy", description="Find the documents that answer a question about animals."),
        TaskCard(name="toy", description="Find financial news about a company."),
    ]
    cache = mteb.ResultCache(str(tmp_path / "mteb"))
    wrappers = [HydraMTEBWrapper(model, cards={task.metadata.name: card}) for card in cards]
    names = {w.mteb_model_meta.experiment_name for w in wrappers}
    assert len(names) == 2 and None not in names
    assert HydraMTEBWrapper(model).mteb_model_meta.experiment_name is None  # bundled / metadata cards: plain entry
    for wrapper in wrappers:
        mteb.evaluate(wrapper, task, cache=cache, show_progress_bar=False)
    stored = {p.parent.name for p in (tmp_path / "mteb").rglob(f"{task.metadata.name}.json")}
    assert stored == names  # two entries under the same revision, one per card
