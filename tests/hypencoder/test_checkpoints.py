"""Checkpoints and resume of train_hypencoder: a resumed run ends with the uninterrupted run's weights, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hydra_st.hypencoder import Hypencoder
from hydra_st.hypencoder.training import HypencoderTrainingConfig, train_hypencoder
from tests.hypencoder.test_training import synthetic_examples

TINY = dict(steps=5, batch_size=4, num_negatives=3, qnet_width=8, warmup_steps=2, learning_rate=1e-2)
KINDS = {
    "frozen": {},
    "two-lr-groups": {"qnet_lr_scale": 0.5},
    "bi-encoder": {"bi_encoder": True},
    # the transformer trains, with dropout: the torch generator's state must be restored too
    "trainable": {"freeze_base": False, "base_learning_rate": 1e-3},
    "query-side": {"freeze_base": False, "shared_transformer": False, "query_side_only": True},
}


def _config(tmp_path: Path, **changes) -> HypencoderTrainingConfig:
    return HypencoderTrainingConfig(**{**TINY, "cache_dir": str(tmp_path / "cache"), **changes})


def _model(tiny_st_model_dir: Path, cfg: HypencoderTrainingConfig, seed: int = 0) -> Hypencoder:
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(str(tiny_st_model_dir), device="cpu")  # a fresh base: training changes it in place
    torch.manual_seed(seed)  # a resumed run takes every trained tensor from the checkpoint, whatever the init
    return Hypencoder.from_base(base, converter=cfg.converter(32), shared_transformer=cfg.shared_transformer,
                                learned_skip=cfg.uses_learned_skip)  # fmt: skip


def _run(tiny_st_model_dir, cfg, output, seed=0, data=None, model=None, **kwargs):
    model, log = train_hypencoder(cfg, output_path=output, model=model or _model(tiny_st_model_dir, cfg, seed),
                                  data=data or [synthetic_examples()], show_progress_bar=False, **kwargs)  # fmt: skip
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, log


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _saved_weights(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*.safetensors")
        if "checkpoints" not in p.parts
    }


def _score(model: Hypencoder) -> float:
    """A deterministic validation score of the model (its best step is neither the first nor the last)."""
    return -abs(float(sum(p.double().sum() for p in model.hyper_head.parameters())) - 1.0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_resume_ends_with_the_uninterrupted_weights(tiny_st_model_dir, tmp_path, kind):
    cfg = _config(tmp_path, checkpoint_every=2, **KINDS[kind])
    reference, ref_log = _run(tiny_st_model_dir, cfg, tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    for step in (2, 4):
        resumed_cfg = _config(tmp_path, resume_from=str(tmp_path / "a" / "checkpoints" / f"checkpoint-{step}"),
                              **KINDS[kind])  # fmt: skip
        weights, log = _run(tiny_st_model_dir, resumed_cfg, tmp_path / f"from-{step}", seed=step)
        assert _same_weights(reference, weights), f"resumed from step {step}"
        assert log["losses"] == ref_log["losses"] and log["num_queries"] == ref_log["num_queries"]
        assert log["resumed_from"] == [{"checkpoint": str(tmp_path / "a" / "checkpoints" / f"checkpoint-{step}"),
                                        "step": step}]  # fmt: skip
        assert _saved_weights(tmp_path / f"from-{step}") == _saved_weights(tmp_path / "a")


def test_resume_keeps_the_best_validation_state(tiny_st_model_dir, tmp_path):
    cfg = _config(tmp_path, steps=6, checkpoint_every=3, learning_rate=5e-2)
    reference, ref_log = _run(tiny_st_model_dir, cfg, tmp_path / "a", validation=_score, eval_every=2)
    assert [v["step"] for v in ref_log["validation"]] == [0, 2, 4, 6]
    resumed = _config(tmp_path, steps=6, learning_rate=5e-2, resume_from=str(tmp_path / "a" / "checkpoints"))
    assert (
        json.loads((tmp_path / "a" / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())["step"] == 6
    )
    first = _config(tmp_path, steps=6, learning_rate=5e-2, resume_from=str(tmp_path / "a/checkpoints/checkpoint-3"))
    weights, log = _run(tiny_st_model_dir, first, tmp_path / "b", validation=_score, eval_every=2)
    assert _same_weights(reference, weights)
    assert log["validation"] == ref_log["validation"] and log["best_step"] == ref_log["best_step"]
    # resuming a finished run (from its last checkpoint, found from the checkpoints folder) trains nothing more
    weights, log = _run(tiny_st_model_dir, resumed, tmp_path / "c", validation=_score, eval_every=2)
    assert _same_weights(reference, weights) and log["best_step"] == ref_log["best_step"]


def test_an_interrupted_run_resumes_in_its_own_folder(tiny_st_model_dir, tmp_path, monkeypatch):
    from hydra_st.hypencoder import training

    cfg = _config(tmp_path, checkpoint_every=2, freeze_base=False)
    reference, ref_log = _run(tiny_st_model_dir, cfg, tmp_path / "reference")
    real_loss, calls = training.hypencoder_loss, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # step 3, after checkpoint-2
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(training, "hypencoder_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_st_model_dir, cfg, out)
    monkeypatch.setattr(training, "hypencoder_loss", real_loss)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]  # no model yet, and no half-written one
    partial = json.loads((out / "checkpoints" / "checkpoint-2" / "training_log.json").read_text(encoding="utf-8"))
    assert [e["step"] for e in partial["losses"]] == [0, 1]  # the loss log so far, written with the checkpoint
    with pytest.raises(ValueError, match="already holds another run's checkpoints"):
        _run(tiny_st_model_dir, cfg, out)  # a fresh run must not mix its checkpoints with these
    resumed = _config(tmp_path, checkpoint_every=2, freeze_base=False, resume_from=str(out))
    weights, log = _run(tiny_st_model_dir, resumed, out, seed=7)
    assert _same_weights(reference, weights) and log["losses"] == ref_log["losses"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert _saved_weights(out) == _saved_weights(tmp_path / "reference")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_a_checkpoint_is_safetensors_and_json(tiny_st_model_dir, tmp_path):
    _run(tiny_st_model_dir, _config(tmp_path, checkpoint_every=2), tmp_path / "a")
    folder = tmp_path / "a" / "checkpoints" / "checkpoint-2"
    assert sorted(p.name for p in folder.iterdir()) == ["trainer_state.json", "training_log.json",
                                                        "training_state.safetensors"]  # fmt: skip
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "training_state.safetensors"))
    meta = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    assert meta["step"] == 2 and meta["config"]["checkpoint_every"] == 2 and meta["best"] is None
    assert tensors["rng.torch"].dtype == torch.uint8
    assert {k.split(".")[0] for k in tensors} == {"model", "optimizer", "rng"}
    assert {k.rsplit(".", 1)[1] for k in tensors if k.startswith("optimizer.")} == {"exp_avg", "exp_avg_sq", "step"}
    assert len({k for k in tensors if k.startswith("model.")}) == len(meta["trained_parameters"]) > 0
    assert all(n.startswith("1.sub_modules.query.") for n in meta["trained_parameters"])  # frozen base: the head
    assert meta["scheduler"]["last_epoch"] == 2 and len(meta["sampler_rng"][1]) == 625


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"learning_rate": 1e-3}, r"other settings \(learning_rate: 0.01 in the checkpoint, 0.001 now\)"),
        ({"steps": 7}, r"steps: 5 in the checkpoint, 7 now"),
        (
            {"data": "fewer queries"},
            r"another run \(training queries: 12 in the checkpoint, 11 now; training data: other than the",
        ),
        ({"eval_every": 2}, r"another run \(validation interval: None in the checkpoint, 2 now\)"),
    ],
)
def test_a_checkpoint_of_another_run_is_refused(tiny_st_model_dir, tmp_path, changes, message):
    _run(tiny_st_model_dir, _config(tmp_path, checkpoint_every=2), tmp_path / "a")
    changes = dict(changes)
    data, kwargs = None, {}
    if changes.pop("data", None):
        data = [synthetic_examples()]
        for column in ("query_ids", "query_texts", "candidates", "teacher_scores", "positives"):
            getattr(data[0], column).pop()
    if "eval_every" in changes:
        kwargs = {"validation": _score, "eval_every": changes.pop("eval_every")}
    cfg = _config(tmp_path, resume_from=str(tmp_path / "a" / "checkpoints" / "checkpoint-2"), **changes)
    with pytest.raises(ValueError, match=message):
        _run(tiny_st_model_dir, cfg, tmp_path / "b", data=data, **kwargs)
    assert not (tmp_path / "b").exists()


def test_where_a_checkpoint_lives_may_change(tiny_st_model_dir, tmp_path):
    """Only the run's mechanics (checkpoint interval, data and cache folders) may differ on resume."""
    reference, _ = _run(tiny_st_model_dir, _config(tmp_path, checkpoint_every=2), tmp_path / "a")
    cfg = _config(tmp_path, checkpoint_every=3, resume_from=str(tmp_path / "a" / "checkpoints" / "checkpoint-2"),
                  cache_dir=str(tmp_path / "other-cache"), data_dir=str(tmp_path))  # fmt: skip
    weights, _ = _run(tiny_st_model_dir, cfg, tmp_path / "b")
    assert _same_weights(reference, weights)
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["checkpoint-3"]


@pytest.mark.parametrize(
    "damage,message",
    [
        ("missing", "not a Hypencoder checkpoint"),
        ("json", "is damaged"),
        ("safetensors", "is damaged"),
        ("log", r"is incomplete \(no training_log.json\)"),
    ],
)
def test_a_missing_or_damaged_checkpoint_is_refused(tiny_st_model_dir, tmp_path, damage, message):
    _run(tiny_st_model_dir, _config(tmp_path, checkpoint_every=2), tmp_path / "a")
    folder = tmp_path / "a" / "checkpoints" / "checkpoint-2"
    if damage == "missing":
        folder = tmp_path / "nowhere"
    elif damage == "json":
        (folder / "trainer_state.json").write_text("{not json", encoding="utf-8")
    elif damage == "safetensors":
        (folder / "training_state.safetensors").write_bytes(b"\x00" * 16)
    else:
        (folder / "training_log.json").unlink()
    with pytest.raises(ValueError, match=message):
        _run(tiny_st_model_dir, _config(tmp_path, resume_from=str(folder)), tmp_path / "b")


def test_resume_restores_the_fp16_gradient_scaler(tiny_st_model_dir, tmp_path, monkeypatch):
    """As in test_training's fp16 test: a real CPU GradScaler stands in for the one accelerate gives a GPU run; its
    scale doubles after every step, so a resumed run must start from the checkpoint's scale, not afresh."""
    import contextlib

    from accelerate import Accelerator

    from hydra_st.hypencoder import training

    scalers = []
    make_accelerator = training._accelerator

    def with_fp16_scaler(config):
        accelerator = make_accelerator(config)
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=1)
        accelerator.native_amp = True
        accelerator.autocast = contextlib.nullcontext
        scalers.append(accelerator.scaler)
        return accelerator

    monkeypatch.setattr(training, "_accelerator", with_fp16_scaler)
    monkeypatch.setattr(Accelerator, "mixed_precision", property(lambda self: "fp16"))
    reference, _ = _run(tiny_st_model_dir, _config(tmp_path, checkpoint_every=2), tmp_path / "a")
    cfg = _config(tmp_path, resume_from=str(tmp_path / "a" / "checkpoints" / "checkpoint-2"))
    weights, _ = _run(tiny_st_model_dir, cfg, tmp_path / "b")
    assert _same_weights(reference, weights)
    assert scalers[0].get_scale() == scalers[1].get_scale() == 2.0 ** (16 + TINY["steps"])


def test_a_checkpoint_of_another_frozen_base_is_refused(tiny_st_model_dir, tmp_path):
    """A frozen base is not in the checkpoint (only what trains is), so a resumed run must start from the same one."""
    _run(tiny_st_model_dir, _config(tmp_path, checkpoint_every=2), tmp_path / "a")
    cfg = _config(tmp_path, resume_from=str(tmp_path / "a" / "checkpoints" / "checkpoint-2"))
    other = _model(tiny_st_model_dir, cfg)
    with torch.no_grad():
        next(other[0].parameters()).add_(0.01)  # the base transformer, frozen in this run
    with pytest.raises(
        ValueError, match=r"another run \(weights that do not train \(e.g. a frozen base\): other than"
    ):
        _run(tiny_st_model_dir, cfg, tmp_path / "b", model=other)
