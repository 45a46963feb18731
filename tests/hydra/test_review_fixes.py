"""Regression tests for review findings: corrupt checkpoints, the preference cache key, stale model records and
the head's normalised input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hydra_st.hydra import Hydra, TaskCard
from hydra_st.hydra.checkpoints import CheckpointError
from hydra_st.hydra.preferences import PreferenceConfig, task_preferences
from hydra_st.hydra.tasks import QuerySet, TaskData
from hydra_st.hydra.trainer import HydraTrainer, TrainingConfig
from tests.hydra.synthetic import card


# ---------------------------------------------------------------------------------------------- checkpoints
def _static_setup() -> tuple[Hydra, list[TaskData], dict, TrainingConfig]:
    """A tiny run on a static-embedding base (no transformer: fast), as the reviewer's repro builds it."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer, models, pre_tokenizers

    from hydra_st.hydra import PreferenceConfig, build_preferences

    torch.manual_seed(0)
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "cats": 1, "dogs": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    base = SentenceTransformer(modules=[StaticEmbedding(tok, embedding_dim=16)], device="cpu")
    model = Hydra.from_base(base, out_dim=8, cond_dim=4, rank=2, hidden_dim=8)
    docs = np.random.default_rng(0).normal(size=(40, 16)).astype("float32")
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    doc_ids, qids = [f"d{i}" for i in range(40)], [f"q{i}" for i in range(16)]
    task_card = TaskCard(name="toy", description="Find documents about cats and dogs.")
    train = QuerySet(qids, ["cats"] * 16, docs[:16])
    task = TaskData("toy", task_card, doc_ids, ["dogs"] * 40, docs, train, QuerySet([], []), QuerySet([], []))
    dense = {
        q: dict(zip(doc_ids, map(float, row), strict=True)) for q, row in zip(qids, docs[:16] @ docs.T, strict=True)
    }
    prefs = {"toy": build_preferences(qids, [dense], doc_ids, PreferenceConfig(candidates=20, pairs_per_query=4))}
    config = TrainingConfig(epochs=1, batch_size=8, init="identity", show_progress_bar=False, checkpoint_every=1)
    return model, [task], prefs, config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    HydraTrainer(*_static_setup(), output_dir=out).train()
    return out / "checkpoint-1"


def _state_file(folder: Path) -> Path:
    return folder / "training_state.safetensors"


def _edit_tensors(edit):
    def go(folder: Path) -> None:
        from safetensors.torch import load_file, save_file

        state = load_file(str(_state_file(folder)))
        edit(state)
        save_file(state, str(_state_file(folder)))

    return go


def _edit_meta(edit):
    def go(folder: Path) -> None:
        path = folder / "trainer_state.json"
        meta = json.loads(path.read_text())
        path.write_text(json.dumps(edit(meta)))

    return go


def _drop(prefix: str):
    return _edit_tensors(lambda s: [s.pop(k) for k in [k for k in s if k.startswith(prefix)]])


def _first(state: dict, prefix: str) -> str:
    return next(k for k in sorted(state) if k.startswith(prefix))


CORRUPTIONS = {
    "json is a list": (_edit_meta(lambda m: []), "holds a list"),
    "global_step missing": (
        _edit_meta(lambda m: {k: v for k, v in m.items() if k != "global_step"}),
        "no global_step",
    ),
    "global_step a string": (_edit_meta(lambda m: {**m, "global_step": "two"}), "global_step is 'two'"),
    "global_step a bool": (_edit_meta(lambda m: {**m, "global_step": True}), "global_step is True"),
    "best without score": (_edit_meta(lambda m: {**m, "best": {"step": 1}}), "best is"),
    "history not a list": (_edit_meta(lambda m: {**m, "history": {}}), "history is not a list"),
    "processes a string": (_edit_meta(lambda m: {**m, "processes": "two"}), "processes is 'two'"),
    "tasks not objects": (_edit_meta(lambda m: {**m, "tasks": ["toy"]}), "tasks is not a list of objects"),
    "optimizer moment missing": (_drop("optim.0.exp_avg_sq"), "optimizer state of parameter 0"),
    "no state for a parameter": (_drop("optim.1."), r"no optimizer state for parameter\(s\) \[1\]"),
    "optimizer moment of the wrong shape": (
        _edit_tensors(lambda s: s.__setitem__("optim.0.exp_avg", torch.zeros(3))),
        r"optim.0.exp_avg has shape \(3,\)",
    ),
    "state for a parameter the optimizer lacks": (
        _edit_tensors(lambda s: s.__setitem__("optim.999.step", torch.ones(1))),
        "optim.999.step",
    ),
    "NaN head weights": (
        _edit_tensors(lambda s: s.__setitem__(k := _first(s, "head."), torch.full_like(s[k], float("nan")))),
        "NaN or infinite",
    ),
    "infinite optimizer moment": (
        _edit_tensors(lambda s: s.__setitem__("optim.0.exp_avg", torch.full_like(s["optim.0.exp_avg"], np.inf))),
        "optim.0.exp_avg holds NaN or infinite",
    ),
}


@pytest.mark.parametrize("label", list(CORRUPTIONS))
def test_a_corrupt_checkpoint_is_refused_naming_it_and_the_fix(checkpoint, tmp_path, label):
    mutate, detail = CORRUPTIONS[label]
    folder = tmp_path / "ck"
    shutil.copytree(checkpoint, folder)
    mutate(folder)
    with pytest.raises(CheckpointError, match=detail) as info:
        HydraTrainer(*_static_setup()).train(resume_from=folder)
    assert str(folder) in str(info.value) and "resume from an earlier checkpoint or start over" in str(info.value)


def test_an_intact_checkpoint_still_resumes(checkpoint, tmp_path):
    folder = tmp_path / "ck"
    shutil.copytree(checkpoint, folder)
    trainer = HydraTrainer(*_static_setup())
    trainer.train(resume_from=folder)
    assert trainer.global_step == 2


# ---------------------------------------------------------------------------------------------- preferences
def _lexical_task() -> TaskData:
    """A task whose texts share words, so that BM25's settings change its ranking."""
    rng = np.random.default_rng(0)
    words = "cats dogs rain stock market clouds purr bark fell water snow river".split()
    texts = [" ".join(rng.choice(words, 6)) for _ in range(60)]
    emb = rng.normal(size=(60, 8)).astype("float32")
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    qids = [f"q{i}" for i in range(5)]
    train = QuerySet(qids, [" ".join(rng.choice(words, 3)) for _ in qids], emb[:5].copy())
    task_card = TaskCard(name="toy", description="d")
    return TaskData(
        "toy", task_card, [f"d{i}" for i in range(60)], texts, emb, train, QuerySet([], []), QuerySet([], [])
    )


def test_the_preference_cache_is_keyed_on_the_bm25_teachers_settings(tmp_path):
    from hydra_st.teachers import BM25Teacher

    def other() -> BM25Teacher:
        return BM25Teacher(k1=0.01, b=0.0, stemmer=None, stopwords=None, method="bm25+")

    task, cfg = _lexical_task(), PreferenceConfig(candidates=20, pairs_per_query=4, depth=30)
    default = task_preferences(task, BM25Teacher, cfg, tmp_path)
    cached_other = task_preferences(task, other, cfg, tmp_path)
    fresh_other = task_preferences(task, other, cfg, tmp_path / "fresh")
    assert not np.array_equal(default.candidates, fresh_other.candidates)  # the settings matter on this task
    assert np.array_equal(cached_other.candidates, fresh_other.candidates)
    assert len(list((tmp_path / "hydra" / "preferences").glob("*.safetensors"))) == 2  # cached apart
    from hydra_st.hydra.preferences import teacher_key

    # the progress bar changes nothing: the same cache entry
    assert teacher_key(BM25Teacher(show_progress_bar=True)) == teacher_key(BM25Teacher()) == ""
    assert teacher_key(BM25Teacher(k1=1.2)) != teacher_key(BM25Teacher(b=0.5)) != ""


def test_a_default_bm25_teacher_keeps_the_cache_key_it_had(tmp_path):
    """Caches written before the key covered the teacher (always a default BM25Teacher) stay valid."""
    from hydra_st.hydra.preferences import _fingerprint_arrays
    from hydra_st.teachers import BM25Teacher
    from hydra_st.utils.hashing import fingerprint_texts

    task, cfg = _lexical_task(), PreferenceConfig(candidates=20, pairs_per_query=4, depth=30)
    task_preferences(task, BM25Teacher, cfg, tmp_path)
    qs = task.train
    old_key = (
        fingerprint_texts(qs.ids, qs.texts)
        + fingerprint_texts(task.doc_ids, task.doc_texts)
        + cfg.key()
        + _fingerprint_arrays(task.doc_embeddings, qs.embeddings)
    )
    assert (tmp_path / "hydra" / "preferences" / f"toy-train-{old_key}.safetensors").is_file()


# ---------------------------------------------------------------------------------------------- model records
def _records_model(tiny_hydra: Hydra, folder: Path) -> None:
    from hydra_st.hydra.pipeline import PipelineConfig, save_trained_model

    task = TaskData("toy", card(), ["d1"], ["x"], np.zeros((1, 32), "float32"), *[QuerySet([], [])] * 3)
    summary = {"steps": 999, "best_dev": {"score": 0.77, "step": 500}}
    save_trained_model(tiny_hydra, folder, PipelineConfig(), [task], summary, results_md="| toy | 0.7777 |")


def _has_records(folder: Path) -> bool:
    return all((folder / name).exists() for name in ("hydra_training.json", "hydra_results.md", "cards/toy.yaml"))


def _has_no_records(folder: Path) -> bool:
    return not any((folder / name).exists() for name in ("hydra_training.json", "hydra_results.md", "cards"))


def test_saving_another_model_over_a_trained_one_drops_the_old_records(tiny_hydra, tiny_st_model, tmp_path):
    folder = tmp_path / "model"
    _records_model(tiny_hydra, folder)
    assert _has_records(folder)
    Hydra.from_base(tiny_st_model, out_dim=8, cond_dim=8, rank=2, hidden_dim=16).save(str(folder))
    readme = (folder / "README.md").read_text()
    assert _has_no_records(folder) and "Untrained" in readme
    assert '"steps": 999' not in readme and "0.7777" not in readme


def test_a_loaded_model_keeps_its_records_only_while_unchanged(tiny_hydra, tmp_path):
    folder = tmp_path / "model"
    _records_model(tiny_hydra, folder)
    records = {name: (folder / name).read_bytes() for name in ("hydra_training.json", "hydra_results.md")}
    Hydra(str(folder)).save(str(folder))  # saved back unchanged: its own records stay
    assert _has_records(folder) and all((folder / n).read_bytes() == b for n, b in records.items())

    # copied over a folder with another run's records: the copy carries this model's records, and only those
    other = tmp_path / "other"
    _records_model(tiny_hydra, other)
    TaskCard(name="stale", description="Another run's task.").save(other / "cards" / "stale.yaml")
    Hydra(str(folder)).save(str(other))
    assert _has_records(other) and not (other / "cards" / "stale.yaml").exists()

    changed = Hydra(str(folder))
    with torch.no_grad():
        next(changed.head.parameters()).add_(1.0)
    changed.save(str(folder))  # saved back changed: the records describe the weights it no longer has
    assert _has_no_records(folder) and "Trained further after loading" in (folder / "README.md").read_text()


# ---------------------------------------------------------------------------------------------- normalised input
def _base_without_normalize(tiny_st_model):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(modules=list(tiny_st_model)[:2], device="cpu")  # Transformer, Pooling


def test_from_base_appends_normalize_so_encode_agrees_with_hydra_run(tiny_st_model):
    from sentence_transformers.sentence_transformer.modules import Normalize

    from hydra_st.hydra.evaluate import hydra_run

    model = Hydra.from_base(_base_without_normalize(tiny_st_model), out_dim=16, cond_dim=8, rank=2, hidden_dim=16)
    assert isinstance(model.base_modules()[-1], Normalize)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    docs = ["Cats purr when content.", "The stock market fell sharply.", "Rain forms in clouds."]
    queries = ["why do cats purr", "stock prices drop"]
    # hydra_run is fed unit-length base embeddings, as the trainer and hydra-evaluate feed it
    q_emb = _base_without_normalize(tiny_st_model).encode(queries, normalize_embeddings=True)
    d_emb = _base_without_normalize(tiny_st_model).encode(docs, normalize_embeddings=True)
    run = hydra_run(model, card(), ["q0", "q1"], q_emb, ["d0", "d1", "d2"], d_emb, top_k=3)
    direct = model.similarity(
        model.encode_query(queries, task_card=card()), model.encode_document(docs, task_card=card())
    )
    for qi, q in enumerate(["q0", "q1"]):
        for di in range(3):
            assert run[q][f"d{di}"] == pytest.approx(float(direct[qi, di]), abs=1e-5)


def test_a_head_without_normalised_input_is_refused(tiny_hydra, tmp_path):
    from hydra_st.hydra.modules import HydraHead

    with pytest.raises(ValueError, match="is Pooling, not Normalize.*Insert .*Normalize"):
        Hydra(modules=[*tiny_hydra.base_modules()[:2], HydraHead(in_dim=32, out_dim=8)])
    folder = tmp_path / "m"
    tiny_hydra.save(str(folder))
    entries = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(json.dumps([e for e in entries if not e["path"].endswith("Normalize")]))
    with pytest.raises(ValueError, match=f"{folder}: the module before the HydraHead is Pooling, not Normalize"):
        Hydra(str(folder))
