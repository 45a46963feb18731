"""Training loop (frozen and trainable base) on synthetic teacher data, and the teacher data on real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hydra_st.hypencoder import Hypencoder, QNetConverter
from hydra_st.hypencoder.training import HypencoderTrainingConfig, train_hypencoder
from hydra_st.hypencoder.training_data import TeacherExamples, build_teacher_examples, query_token_states

ROOT = Path(__file__).resolve().parents[2]
DOCS = [f"document number {i} about topic {i % 5}" for i in range(40)]
QUERIES = [f"topic {i % 5} question {i}" for i in range(12)]


def synthetic_examples() -> TeacherExamples:
    rng = np.random.default_rng(0)
    ex = TeacherExamples("synthetic", [f"d{i}" for i in range(40)], DOCS, [], [], [], [], [])
    for qi, text in enumerate(QUERIES):
        cand = rng.choice(40, 20, replace=False)
        ex.query_ids.append(f"q{qi}")
        ex.query_texts.append(text)
        ex.candidates.append(cand)
        ex.teacher_scores.append(np.sort(rng.random(20))[::-1].astype(np.float32))
        ex.positives.append(np.array([0]))
    return ex


@pytest.mark.parametrize("freeze,bi", [(True, False), (True, True), (False, False)])
def test_train_steps_change_head(tiny_st_model, tmp_path, freeze, bi):
    cfg = HypencoderTrainingConfig(
        steps=3,
        batch_size=4,
        num_negatives=3,
        freeze_base=freeze,
        bi_encoder=bi,
        qnet_width=8,
        warmup_steps=1,
        learning_rate=1e-2,
        cache_dir=str(tmp_path / "c"),
    )
    assert cfg.uses_learned_skip == (not bi)
    model = Hypencoder.from_base(tiny_st_model, converter=cfg.converter(32), learned_skip=cfg.uses_learned_skip)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model, log = train_hypencoder(
        cfg, output_path=tmp_path / "out", model=model, data=[synthetic_examples()], show_progress_bar=False
    )
    after = model.state_dict()
    head_changed = any(not torch.equal(before[k], after[k]) for k in before if "1.sub_modules.query" in k)
    base_changed = any(not torch.equal(before[k], after[k]) for k in before if k.startswith("0."))
    assert head_changed and base_changed == (not freeze)
    assert all(np.isfinite(e["loss"]) for e in log["losses"])
    assert (model.converter.vector_dimensions == [32, 1]) == bi
    reloaded = Hypencoder(str(tmp_path / "out"))
    q = reloaded.encode_query(["topic 1"])
    assert reloaded.similarity(q, reloaded.encode_document(DOCS[:3])).shape == (1, 3)
    assert (tmp_path / "out" / "training_log.json").exists() and (tmp_path / "out" / "README.md").exists()


def test_qnet_lr_scale_splits_the_head_into_skip_and_layer_groups(tiny_st_model):
    from hydra_st.hypencoder.training import _head_parameter_groups

    cfg = HypencoderTrainingConfig(qnet_width=8, learning_rate=1e-3, qnet_lr_scale=0.1)
    model = Hypencoder.from_base(tiny_st_model, converter=cfg.converter(32), learned_skip=True)
    head = model.hyper_head
    skip, layers = _head_parameter_groups(head, cfg)
    assert (skip["lr"], layers["lr"]) == (1e-3, pytest.approx(1e-4))
    names = {id(p): n for n, p in head.named_parameters()}
    assert {names[id(p)].split(".")[0] for p in skip["params"]} == {
        "skip_query_embedding", "skip_key_projection", "skip_value_projection", "skip_hyper_projection",
        "skip_base_vector",
    }  # fmt: skip
    assert len(skip["params"]) + len(layers["params"]) == len(list(head.parameters()))
    # the matched bi-encoder has no learned skip: one group at learning_rate, the scale has nothing to split
    bi_cfg = HypencoderTrainingConfig(bi_encoder=True, qnet_lr_scale=0.1)
    bi = Hypencoder.from_base(tiny_st_model, converter=bi_cfg.converter(32), learned_skip=bi_cfg.uses_learned_skip)
    assert [g["lr"] for g in _head_parameter_groups(bi.hyper_head, bi_cfg)] == [bi_cfg.learning_rate]
    with pytest.raises(ValueError, match="qnet_lr_scale must be > 0"):
        HypencoderTrainingConfig(qnet_lr_scale=0.0).check()


def test_query_side_training_keeps_documents_frozen(tiny_st_model, tmp_path):
    cfg = HypencoderTrainingConfig(steps=3, batch_size=4, num_negatives=3, freeze_base=False, shared_transformer=False,
                                   query_side_only=True, qnet_width=8, warmup_steps=1, learning_rate=1e-2,
                                   base_learning_rate=1e-2, cache_dir=str(tmp_path / "c"))  # fmt: skip
    model = Hypencoder.from_base(tiny_st_model, converter=cfg.converter(32), shared_transformer=False)
    docs_before = model.encode_document(DOCS[:5], convert_to_tensor=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model, _ = train_hypencoder(cfg, model=model, data=[synthetic_examples()], show_progress_bar=False)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert any(k.startswith("0.sub_modules.query.0.") for k in changed)  # the query transformer trained
    assert not any(k.startswith("0.sub_modules.document.") for k in changed)
    assert torch.allclose(model.encode_document(DOCS[:5], convert_to_tensor=True), docs_before)


def test_query_side_training_needs_separate_transformers(tiny_st_model):
    with pytest.raises(ValueError, match="shared_transformer=False"):
        train_hypencoder(HypencoderTrainingConfig(freeze_base=False, query_side_only=True), data=[])
    cfg = HypencoderTrainingConfig(steps=1, freeze_base=False, shared_transformer=False, query_side_only=True)
    shared = Hypencoder.from_base(tiny_st_model, converter=cfg.converter(32))
    with pytest.raises(ValueError, match="a transformer per route"):
        train_hypencoder(cfg, model=shared, data=[synthetic_examples()], show_progress_bar=False)


def test_query_token_states_padding(tiny_st_model):
    model = Hypencoder.from_base(tiny_st_model, converter=QNetConverter([32, 1]))
    states, mask = query_token_states(model, ["short", "a much longer query with many tokens in it"], batch_size=1)
    assert states.shape[:2] == mask.shape and mask[0].sum() < mask[1].sum()


def test_training_refuses_test_split():
    with pytest.raises(ValueError, match="never reads the test split"):
        build_teacher_examples("scifact", split="test")


@pytest.mark.integration
def test_teacher_examples_on_real_train_split(beir_data_dir):
    from hydra_st.data import load_dataset
    from hydra_st.hub.offline import load_base_model
    from hydra_st.teachers import DenseTeacher

    train = load_dataset("scifact", split="train")
    if not DenseTeacher(load_base_model()).cache_path(train.doc_ids, train.doc_texts).is_file():
        pytest.skip(
            "scifact MiniLM embeddings not cached; set HYDRA_ST_CACHE_DIR to the shared cache (no re-encoding)"
        )
    ex = build_teacher_examples("scifact", split="train", max_queries=8, depth=20, show_progress_bar=False)
    assert 0 < len(ex.query_ids) <= 8 and set(ex.query_ids) <= set(train.qrels)
    bonus = 20.0 / 61.0  # label_scale / (rrf_k + 1): what a train-qrels positive gets on top of its RRF score
    for qid, cand, scores, pos in zip(ex.query_ids, ex.candidates, ex.teacher_scores, ex.positives, strict=True):
        assert len(cand) == len(scores) >= 2 and pos.max() < len(cand)
        assert {ex.doc_ids[int(cand[p])] for p in pos} <= train.relevant(qid)
        assert scores[pos].min() >= bonus - 1e-6
        # candidates come from the fused teacher run: all of them are real documents, without duplicates
        assert len(set(cand.tolist())) == len(cand)


@pytest.mark.integration
def test_teacher_examples_do_not_depend_on_the_hash_seed(beir_data_dir, tmp_path):
    """Judged documents the fused run missed are appended in a fixed order, not in a set's hash-seed-dependent
    one, so two processes sample the same positives (nfcorpus: 43 judged documents per train query)."""
    import os
    import subprocess
    import sys

    from hydra_st.data import load_dataset
    from hydra_st.hub.offline import load_base_model
    from hydra_st.teachers import DenseTeacher

    train = load_dataset("nfcorpus", split="train")
    if not DenseTeacher(load_base_model()).cache_path(train.doc_ids, train.doc_texts).is_file():
        pytest.skip("nfcorpus MiniLM embeddings not cached; set HYDRA_ST_CACHE_DIR to the shared cache")
    script = (
        "from hydra_st.hypencoder.training_data import build_teacher_examples\n"
        "ex = build_teacher_examples('nfcorpus', max_queries=4, depth=20, show_progress_bar=False)\n"
        "print([c.tolist() for c in ex.candidates])\n"
    )
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        outputs.append(done.stdout.strip().splitlines()[-1])
    assert outputs[0] == outputs[1]


def test_split_and_early_stopping_restores_best(tiny_st_model):
    from hydra_st.hypencoder.validation import split_examples

    ex = synthetic_examples()
    train, held_out = split_examples(ex, 0.25, seed=1)
    assert len(held_out.query_ids) == 3 and len(train.query_ids) == 9
    assert not set(train.query_ids) & set(held_out.query_ids)
    cfg = HypencoderTrainingConfig(steps=4, batch_size=4, num_negatives=3, qnet_width=8, warmup_steps=1,
                                   learning_rate=1e-2)  # fmt: skip
    model = Hypencoder.from_base(tiny_st_model, converter=cfg.converter(32))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    calls = iter(range(100))
    model, log = train_hypencoder(cfg, model=model, data=[train], validation=lambda m: -next(calls), eval_every=2,
                                  show_progress_bar=False)  # fmt: skip
    assert log["best_step"] == 0 and [v["step"] for v in log["validation"]] == [0, 2, 4]
    assert all(torch.equal(initial[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("freeze", [True, False])
def test_early_stopping_restores_a_middle_steps_trained_and_frozen_parameters(tiny_st_model, freeze):
    """The kept state holds the trained parameters only: restoring it gives the whole model of the best step."""
    cfg = HypencoderTrainingConfig(steps=6, batch_size=4, num_negatives=3, qnet_width=8, warmup_steps=1,
                                   learning_rate=1e-2, freeze_base=freeze)  # fmt: skip
    model = Hypencoder.from_base(tiny_st_model, converter=cfg.converter(32))
    seen: dict[int, dict[str, torch.Tensor]] = {}
    scores = iter([0.0, 0.1, 0.5, 0.2])  # steps 0, 2, 4, 6: step 4 is best

    def validation(m):
        seen[len(seen) * 2] = {k: v.detach().clone() for k, v in m.state_dict().items()}
        return next(scores)

    model, log = train_hypencoder(cfg, model=model, data=[synthetic_examples()], validation=validation,
                                  eval_every=2, show_progress_bar=False)  # fmt: skip
    assert log["best_step"] == 4
    assert not all(torch.equal(seen[4][k], v) for k, v in seen[6].items())  # training moved on after step 4
    assert all(torch.equal(seen[4][k], v) for k, v in model.state_dict().items())


def test_teacher_examples_from_pseudo_queries_read_no_qrels(toy_dataset_dir, tiny_st_model, tmp_path):
    import shutil

    shutil.rmtree(toy_dataset_dir / "qrels")  # pseudo-queries need the corpus only
    (toy_dataset_dir / "queries.jsonl").unlink()
    ex = build_teacher_examples(
        "toy",
        split="pseudo",
        depth=5,
        base_model=tiny_st_model,
        data_dir=str(toy_dataset_dir.parent),
        cache_dir=str(tmp_path / "cache"),
        show_progress_bar=False,
    )
    # d4 has a one-word title and no text: no pseudo-query; the other four give one each
    assert sorted(ex.query_ids) == ["pseudo-d1", "pseudo-d2", "pseudo-d3", "pseudo-d5"]
    assert ex.query_texts[ex.query_ids.index("pseudo-d3")].startswith("Rain forms when water vapour")
    for qid, cand, pos, scores in zip(ex.query_ids, ex.candidates, ex.positives, ex.teacher_scores, strict=True):
        source = ex.doc_ids.index(qid.removeprefix("pseudo-"))
        assert [cand[p] for p in pos] == [source]  # the source document is the one positive
        assert scores[pos[0]] == scores.max()  # and gets the relevance bonus on top of its fused score


@pytest.mark.parametrize(
    "recipe",
    [
        p
        for p in sorted((ROOT / "training_recipes" / "hypencoder").glob("*.yaml"))
        if not p.name.startswith("accelerate")
    ],
    ids=lambda p: p.name,
)
def test_recipes_are_valid_training_configs(recipe):
    import yaml

    values = yaml.safe_load(recipe.read_text())
    config = HypencoderTrainingConfig(**values)  # a misspelt field raises a TypeError here
    config.check()


def test_document_vectors_keep_an_unnormalised_document_route_unnormalised(tiny_st_model, tmp_path):
    from hydra_st.hypencoder.encoding import document_vectors

    model = Hypencoder.from_base(tiny_st_model, converter=QNetConverter([32, 1]), normalize_documents=False)
    vecs = document_vectors(model, [f"d{i}" for i in range(len(DOCS))], DOCS, cache_dir=str(tmp_path),
                            show_progress_bar=False)  # fmt: skip
    assert torch.allclose(vecs, model.encode_document(DOCS, convert_to_tensor=True), atol=1e-5)
    assert not torch.allclose(vecs.norm(dim=1), torch.ones(len(DOCS)))


def _train_synthetic(model, cfg):
    trained, log = train_hypencoder(cfg, model=model, data=[synthetic_examples()], show_progress_bar=False)
    return {k: v.clone() for k, v in trained.state_dict().items()}, log


def test_fp16_loss_scaling_is_undone_before_clipping_and_updates_the_scaler(tiny_st_model, monkeypatch):
    """fp16 needs a GPU, where accelerate gives its Accelerator a GradScaler; here a real Accelerator gets a real CPU
    GradScaler. The loss is scaled by 2**16 (exact in float32), so once the prepared optimizer's scaler unscales the
    gradients before clipping, training gives the weights of the unscaled run; the scaler also steps and grows."""
    import contextlib

    from accelerate import Accelerator

    from hydra_st.hypencoder import training

    cfg = HypencoderTrainingConfig(steps=4, batch_size=4, num_negatives=3, qnet_width=8, warmup_steps=1,
                                   learning_rate=1e-2)  # fmt: skip
    reference, ref_log = _train_synthetic(Hypencoder.from_base(tiny_st_model, converter=cfg.converter(32)), cfg)

    scalers = []
    make_accelerator = training._accelerator

    def with_fp16_scaler(config):
        accelerator = make_accelerator(config)
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=1)
        accelerator.native_amp = True  # what accelerate sets for fp16 on a GPU ...
        accelerator.autocast = contextlib.nullcontext  # ... minus the float16 autocast, so the numbers stay float32
        scalers.append(accelerator.scaler)
        return accelerator

    monkeypatch.setattr(training, "_accelerator", with_fp16_scaler)
    monkeypatch.setattr(Accelerator, "mixed_precision", property(lambda self: "fp16"))
    scaled, log = _train_synthetic(Hypencoder.from_base(tiny_st_model, converter=cfg.converter(32)), cfg)
    assert [e["loss"] for e in log["losses"]] == [e["loss"] for e in ref_log["losses"]]
    assert all(torch.equal(reference[k], scaled[k]) for k in reference)
    assert scalers[0].get_scale() == 2.0 ** (16 + cfg.steps)  # scaler.update() ran after every (finite) step


def _toy_train_folder(root: Path, corpus: list[dict], queries: list[dict] | None = None) -> str:
    from tests.conftest import TOY_QRELS, TOY_QUERIES, write_beir_folder

    write_beir_folder(root / "toy", corpus, queries or TOY_QUERIES, {"train": TOY_QRELS})
    return str(root)


def _fused(data_dir: str, cache_dir: Path, model) -> list[tuple[str, list[int], list[float]]]:
    ex = build_teacher_examples("toy", depth=5, base_model=model, data_dir=data_dir, cache_dir=str(cache_dir),
                                show_progress_bar=False)  # fmt: skip
    return [
        (q, c.tolist(), s.tolist()) for q, c, s in zip(ex.query_ids, ex.candidates, ex.teacher_scores, strict=True)
    ]


def test_teacher_run_cache_is_keyed_on_the_corpus_texts(tiny_st_model, tmp_path):
    from tests.conftest import TOY_CORPUS

    texts = [d["text"] for d in TOY_CORPUS]
    shuffled = [{**d, "text": texts[(i + 2) % len(texts)]} for i, d in enumerate(TOY_CORPUS)]  # same ids
    a = _toy_train_folder(tmp_path / "a", TOY_CORPUS)
    b = _toy_train_folder(tmp_path / "b", shuffled)
    shared = tmp_path / "shared-cache"
    run_a = _fused(a, shared, tiny_st_model)
    run_b = _fused(b, shared, tiny_st_model)
    assert run_a != _fused(b, tmp_path / "fresh-cache", tiny_st_model)  # the two corpora do rank differently
    assert run_b == _fused(b, tmp_path / "fresh-cache", tiny_st_model)  # so B must not reuse A's cached run


def test_teacher_run_cache_is_keyed_on_query_texts_and_model_weights(tiny_st_model, tmp_path):
    import copy

    from tests.conftest import TOY_CORPUS, TOY_QUERIES

    data_dir = _toy_train_folder(tmp_path / "a", TOY_CORPUS)
    reworded = _toy_train_folder(
        tmp_path / "b", TOY_CORPUS, [{**q, "text": q["text"] + " exactly"} for q in TOY_QUERIES]
    )
    other_weights = copy.deepcopy(tiny_st_model)  # same architecture, so the same str(): only the weights differ
    with torch.no_grad():
        next(other_weights.parameters()).add_(0.01)
    cache = tmp_path / "cache"
    runs = cache / "hypencoder" / "teacher_runs"
    _fused(data_dir, cache, tiny_st_model)
    _fused(data_dir, cache, tiny_st_model)  # the same inputs: a cache hit
    assert len(list(runs.glob("*.json"))) == 1
    _fused(reworded, cache, tiny_st_model)
    assert len(list(runs.glob("*.json"))) == 2
    _fused(data_dir, cache, other_weights)
    assert len(list(runs.glob("*.json"))) == 3


@pytest.mark.parametrize(
    "damage,problem",
    [("{not json", "unreadable"), ('["a", "list"]', "must map query ids"), ('{"q1": {"d1": "high"}}', "must map")],
)
def test_damaged_teacher_run_cache_is_rebuilt_with_a_warning(tiny_st_model, tmp_path, caplog, damage, problem):
    import json

    from tests.conftest import TOY_CORPUS

    data_dir = _toy_train_folder(tmp_path / "a", TOY_CORPUS)
    expected = _fused(data_dir, tmp_path / "cache", tiny_st_model)
    (path,) = (tmp_path / "cache" / "hypencoder" / "teacher_runs").glob("*.json")
    path.write_text(damage, encoding="utf-8")
    with caplog.at_level("WARNING", logger="hydra_st.hypencoder.training_data"):
        assert _fused(data_dir, tmp_path / "cache", tiny_st_model) == expected
    assert str(path) in caplog.text and problem in caplog.text
    assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)  # rewritten
