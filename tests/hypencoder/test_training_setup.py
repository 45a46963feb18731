"""Up-front checks of Hypencoder training (settings, machine, process count, output folder), the per-step loss log
and the model card's description of the training data."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from hydra_st.hypencoder import Hypencoder
from hydra_st.hypencoder.training import HypencoderTrainingConfig, main, train_hypencoder
from tests.hypencoder.test_training import synthetic_examples

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "training_recipes" / "hypencoder"
TINY = dict(steps=3, batch_size=4, num_negatives=3, qnet_width=8, warmup_steps=1, learning_rate=1e-2)


@pytest.fixture
def no_work(monkeypatch):
    """Loading a base model or building teacher data fails the test: the checks must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the settings were checked")

    monkeypatch.setattr("hydra_st.hub.offline.load_base_model", forbidden)
    monkeypatch.setattr("hydra_st.hypencoder.training.build_teacher_examples", forbidden)


def _tiny_run(tiny_st_model, output=None, overwrite=False, **changes):
    cfg = HypencoderTrainingConfig(**{**TINY, **changes})
    model = Hypencoder.from_base(tiny_st_model, converter=cfg.converter(32))
    extra = {"overwrite": True} if overwrite else {}  # (the keyword is new: the checks also run on older code)
    return train_hypencoder(cfg, output_path=output, model=model, data=[synthetic_examples()], show_progress_bar=False,
                            **extra)  # fmt: skip


# ---------------------------------------------------------------- settings (findings 8 and 9)
def test_check_converts_what_yaml_reads_as_strings():
    config = HypencoderTrainingConfig(learning_rate="1e-4", base_learning_rate=" 2e-5", datasets="adi",
                                      pseudo_query_datasets="adi,med", freeze_base="no", steps="300", rrf_k=60,
                                      data_dir=Path("/data"))  # fmt: skip
    config.check()
    assert (config.learning_rate, config.base_learning_rate) == (1e-4, 2e-5)
    assert config.datasets == ["adi"] and config.pseudo_query_datasets == ["adi", "med"]
    assert config.freeze_base is False and config.steps == 300 and config.data_dir == "/data"
    assert config.rrf_k == 60 and isinstance(config.rrf_k, int)  # an int stays an int: nothing computed changes


def test_check_leaves_a_valid_config_unchanged():
    config = HypencoderTrainingConfig()
    before = asdict(config)
    config.check()
    after = asdict(config)
    assert after == before and [type(v) for v in after.values()] == [type(v) for v in before.values()]


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("steps", 0, "steps must be >= 1, got 0"),
        ("steps", -5, "steps must be >= 1"),
        ("steps", "abc", "steps must be a whole number, got 'abc'"),
        ("steps", True, "steps must be a whole number"),
        ("steps", 2.5, "steps must be a whole number"),
        ("batch_size", 0, "batch_size must be >= 1"),
        ("num_negatives", 0, "num_negatives must be >= 1"),
        ("warmup_steps", -1, "warmup_steps must be >= 0"),
        ("num_pseudo_queries", 0, "num_pseudo_queries must be >= 1"),
        ("max_queries_per_dataset", 0, "max_queries_per_dataset must be >= 1"),
        ("qnet_width", 0, "qnet_width must be >= 1"),
        ("depth", 1, "depth must be >= 2"),
        ("checkpoint_every", -1, "checkpoint_every must be >= 0"),
        ("learning_rate", 0, "learning_rate must be > 0"),
        ("learning_rate", "fast", "learning_rate must be a number, got 'fast'"),
        ("learning_rate", float("nan"), "learning_rate must be a .*number"),
        ("base_learning_rate", -2e-5, "base_learning_rate must be > 0"),
        ("margin_weight", -1.0, "margin_weight must be >= 0"),
        ("qnet_lr_scale", 0.0, "qnet_lr_scale must be > 0"),
        ("datasets", ["adi", 3], "datasets: each entry must be a dataset name"),
        ("datasets", 7, "datasets must be a list of dataset names"),
        ("freeze_base", "maybe", "freeze_base must be true or false"),
        ("freeze_base", 1, "freeze_base must be true or false"),
        ("mixed_precision", "fp32", "mixed_precision must be one of"),
        ("document_pooling", "max", "document_pooling must be one of"),
        ("device", "gpu0", "device: 'gpu0' is not a torch device"),
        ("split", "test", "never reads the test split"),
        ("in_batch_weight", 0.0, None),  # valid alone ...
    ],
)
def test_check_names_the_bad_field(field, value, message):
    config = HypencoderTrainingConfig(**{field: value})
    if message is None:
        config.check()
        return
    with pytest.raises(ValueError, match=message) as caught:
        config.check()
    assert getattr(caught.value, "field", None) == field


def test_check_refuses_a_loss_of_nothing():
    with pytest.raises(ValueError, match="margin_weight and in_batch_weight are both 0"):
        HypencoderTrainingConfig(margin_weight=0, in_batch_weight=0.0).check()


@pytest.mark.parametrize("changes", [{"steps": 0}, {"steps": -5}, {"batch_size": 0}, {"learning_rate": "x"}])
def test_bad_settings_fail_before_any_model_or_data_is_built(no_work, changes):
    with pytest.raises(ValueError, match=next(iter(changes))):
        train_hypencoder(HypencoderTrainingConfig(datasets=[], pseudo_query_datasets=["adi"], **changes))


def test_nothing_to_train_on_fails_before_any_work(no_work):
    with pytest.raises(ValueError, match="nothing to train on"):
        train_hypencoder(HypencoderTrainingConfig(datasets=[], pseudo_query_datasets=[]))


def test_checkpoints_need_an_output_folder(no_work):
    with pytest.raises(ValueError, match="checkpoint_every needs an output folder"):
        train_hypencoder(HypencoderTrainingConfig(checkpoint_every=10))


@pytest.mark.parametrize(
    "override,named",
    [
        ("learning_rate=fast", "override 'learning_rate=fast': learning_rate must be a number"),
        ("steps=0", "override 'steps=0': steps must be >= 1"),
        ("stepz=10", "unknown training settings ['stepz'] (override 'stepz=10')"),
        ("steps", "override 'steps': expected key=value"),
    ],
)
def test_cli_reports_a_bad_override_in_one_line(no_work, tmp_path, capsys, override, named):
    code = main(["--config", str(RECIPES / "minilm_frozen_cpu.yaml"), "--output", str(tmp_path / "o"), override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and named in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_cli_names_the_recipe_file_of_a_bad_value(no_work, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("datasets: adi\nsteps: three\n", encoding="utf-8")
    assert main(["--config", str(recipe), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{recipe} (steps): steps must be a whole number, got 'three'") and len(err.splitlines()) == 1


def test_cli_passes_overwrite_and_resume_from(monkeypatch, tmp_path):
    seen = {}

    def fake_train(config, output_path=None, overwrite=False, **kwargs):
        seen.update(config=config, output=output_path, overwrite=overwrite)
        return None, {}

    monkeypatch.setattr("hydra_st.hypencoder.training.train_hypencoder", fake_train)
    args = ["--config", str(RECIPES / "minilm_frozen_cpu.yaml"), "--output", str(tmp_path), "--overwrite"]
    assert main([*args, "--resume-from", "ckpt", "learning_rate=1e-4", "datasets=adi"]) == 0
    config = seen["config"]
    assert seen["overwrite"] and config.resume_from == "ckpt"
    assert config.learning_rate == 1e-4 and config.datasets == ["adi"]  # converted, not a string / letters


# ---------------------------------------------------------------- machine and processes (findings 7 and 15)
def test_gpu_recipe_without_a_gpu_fails_up_front(no_work, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="this recipe needs a GPU; to train on the CPU set device=cpu"):
        train_hypencoder(HypencoderTrainingConfig(device="cuda"))
    recipe = str(RECIPES / "bert_base_trainable_gpu.yaml")
    assert main(["--config", recipe, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{recipe} (device): device=cuda but no CUDA device" in err and len(err.splitlines()) == 1


def test_fp16_on_the_cpu_is_refused(tiny_st_model):
    with pytest.raises(ValueError, match="mixed_precision=fp16 needs a GPU"):
        _tiny_run(tiny_st_model, mixed_precision="fp16")


def test_the_recipe_decides_the_precision_and_says_so_when_the_launcher_differs(monkeypatch, caplog):
    from hydra_st.hypencoder.training import _accelerator

    # what `accelerate launch --config_file accelerate_single_gpu.yaml` exports
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with caplog.at_level("WARNING", logger="hydra_st.hypencoder.training"):
        accelerator = _accelerator(HypencoderTrainingConfig(device="cpu", mixed_precision="no"))
    assert accelerator.mixed_precision == "no"
    assert "asked for mixed_precision=bf16, the recipe says no" in caplog.text


@pytest.mark.parametrize("variable", ["WORLD_SIZE", "OMPI_COMM_WORLD_SIZE"])
def test_several_processes_are_refused_before_data_preparation(no_work, monkeypatch, variable):
    monkeypatch.setenv(variable, "2")
    with pytest.raises(ValueError, match="train_hypencoder runs in one process"):
        train_hypencoder(HypencoderTrainingConfig(datasets=["adi"]))


# ---------------------------------------------------------------- output folder (finding 6)
def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_a_folder_with_a_model_is_refused_without_overwrite(tiny_st_model, tmp_path):
    out = tmp_path / "out"
    _tiny_run(tiny_st_model, out)
    old = _files(out)
    with pytest.raises(ValueError, match="already holds a model .*overwrite=True"):
        _tiny_run(tiny_st_model, out, learning_rate=1e-3)
    assert _files(out) == old


def test_overwrite_replaces_the_old_model_as_a_whole(tiny_st_model, tmp_path):
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    cfg = HypencoderTrainingConfig(**TINY, freeze_base=False, shared_transformer=False, query_side_only=True)
    two = Hypencoder.from_base(tiny_st_model, converter=cfg.converter(32), shared_transformer=False)
    train_hypencoder(cfg, output_path=out, model=two, data=[synthetic_examples()], show_progress_bar=False)
    assert (out / "query_0_Transformer").is_dir() and (out / "document_0_Transformer").is_dir()
    (out / "notes.txt").write_text("of the old run", encoding="utf-8")
    _tiny_run(tiny_st_model, out, overwrite=True)
    _tiny_run(tiny_st_model, fresh)
    assert sorted(_files(out)) == sorted(_files(fresh))  # nothing of the old model (or its folder) is left
    assert not (out / "query_0_Transformer").exists() and _siblings(out) == []
    reloaded = Hypencoder(str(out))
    assert reloaded.similarity(reloaded.encode_query(["q"]), reloaded.encode_document(["d"])).shape == (1, 1)


def test_the_old_model_stays_when_training_fails(tiny_st_model, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _tiny_run(tiny_st_model, out)
    old = _files(out)

    def nan_loss(*args, **kwargs):
        return torch.tensor(float("nan"), requires_grad=True), {}

    monkeypatch.setattr("hydra_st.hypencoder.training.hypencoder_loss", nan_loss)
    with pytest.raises(FloatingPointError):
        _tiny_run(tiny_st_model, out, overwrite=True)
    assert _files(out) == old and _siblings(out) == []


def test_a_folder_of_other_files_is_never_written_into(tiny_st_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("mine", encoding="utf-8")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="holds no model: refusing"):
            _tiny_run(tiny_st_model, out, overwrite=overwrite)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


# ---------------------------------------------------------------- loss log, progress bar, card (finding 16)
def test_every_step_is_logged_and_shown(tiny_st_model, tmp_path, monkeypatch):
    from hydra_st.hypencoder import training

    postfixes = []
    real_tqdm = training.tqdm

    class RecordingBar(real_tqdm):  # type: ignore[misc, valid-type]
        def set_postfix(self, *args, **kwargs):
            postfixes.append(kwargs.get("loss"))
            return super().set_postfix(*args, **kwargs)

    monkeypatch.setattr(training, "tqdm", RecordingBar)
    _, log = _tiny_run(tiny_st_model, tmp_path / "out", steps=5)
    assert [e["step"] for e in log["losses"]] == [0, 1, 2, 3, 4]
    assert len(postfixes) == 5
    saved = json.loads((tmp_path / "out" / "training_log.json").read_text(encoding="utf-8"))
    assert saved["losses"] == log["losses"]


def test_card_describes_pseudo_query_training(tiny_st_model):
    from hydra_st.hypencoder.model_card import render_model_card

    model = Hypencoder.from_base(tiny_st_model, converter=HypencoderTrainingConfig(qnet_width=8).converter(32))
    pseudo = asdict(HypencoderTrainingConfig(datasets=[], pseudo_query_datasets=["adi", "med"]))
    text = render_model_card(model, "x", pseudo)
    assert "train queries" not in text and "pseudo-queries made from the corpora of adi, med" in text
    both_config = HypencoderTrainingConfig(datasets=["scifact"], pseudo_query_datasets=["med"])
    both = render_model_card(model, "x", asdict(both_config))
    assert "the train queries of scifact (positives from their train qrels) and pseudo-queries" in both
    assert "| `checkpoint_every` |" not in both and "| `resume_from` |" not in both
