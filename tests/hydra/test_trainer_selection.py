"""HydraTrainer: resuming reproduces the dev history and selection, a checkpoint of another run is refused, what
model selection leaves out is said, and the loss log is written as training goes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hydra_st.hydra import Hydra
from hydra_st.hydra.evaluate import dev_score
from hydra_st.hydra.trainer import HydraTrainer, TrainingConfig
from tests.hydra.synthetic import make_task


@pytest.fixture
def two_tasks():
    (a, pa), (b, pb) = make_task("alpha", 1), make_task("beta", 2)
    return [a, b], {"alpha": pa, "beta": pb}


def _fresh_hydra(base):
    torch.manual_seed(0)  # the same initial hypernet for every run
    return Hydra.from_base(base, out_dim=16, cond_dim=8, rank=2, hidden_dim=16)


def _run(base, tasks, prefs, cfg, out, resume_from=None, run_config=None):
    model = _fresh_hydra(base)
    extra = {"run_config": run_config} if run_config is not None else {}
    trainer = HydraTrainer(
        model, tasks, prefs, cfg, output_dir=out, dev_evaluator=lambda m: dev_score(m, tasks), **extra
    )
    summary = trainer.train(resume_from=resume_from)
    return model, trainer, summary


def _dev_history(trainer):
    return [(h["step"], h["dev"]) for h in trainer.history if "dev" in h]


# 2 tasks x 16 training queries in batches of 8: 4 steps per epoch, 8 in all; dev at 0, 2, 4, 6, 8
_CFG = TrainingConfig(
    epochs=2,
    batch_size=8,
    eval_every=2,
    checkpoint_every=2,
    learning_rate=0.05,
    show_progress_bar=False,
    init="identity",
    view_dropout=0.5,
)


def _assert_same_end(full, full_trainer, resumed, resumed_trainer, full_summary, resumed_summary):
    assert _dev_history(resumed_trainer) == _dev_history(full_trainer)
    assert resumed_summary["best_dev"] == full_summary["best_dev"]
    for key, value in full.head.state_dict().items():  # the kept (best-dev) state, as saved
        assert torch.equal(resumed.head.state_dict()[key], value), key


@pytest.mark.parametrize("resume_step", [2, 4, 6])  # every one an eval step
def test_resume_from_a_checkpoint_on_an_eval_step_reproduces_dev_history_and_weights(
    tiny_st_model, two_tasks, tmp_path, resume_step
):
    tasks, prefs = two_tasks
    full, full_trainer, full_summary = _run(tiny_st_model, tasks, prefs, _CFG, tmp_path / "full")
    assert [s for s, _ in _dev_history(full_trainer)] == [0, 2, 4, 6, 8]
    resumed, resumed_trainer, resumed_summary = _run(
        tiny_st_model, tasks, prefs, _CFG, tmp_path / "r", resume_from=tmp_path / "full" / f"checkpoint-{resume_step}"
    )
    _assert_same_end(full, full_trainer, resumed, resumed_trainer, full_summary, resumed_summary)
    ends = [
        load_file(str(tmp_path / run / "checkpoint-final" / "training_state.safetensors")) for run in ("full", "r")
    ]
    assert ends[0].keys() == ends[1].keys()
    for key in ends[0]:
        assert torch.equal(ends[0][key], ends[1][key]), key


def test_a_checkpoint_written_before_its_eval_steps_dev_evaluation_gets_it_on_resume(
    tiny_st_model, two_tasks, tmp_path
):
    """hydra_st used to write the checkpoint of an eval step before that step's dev evaluation; such a checkpoint
    resumes with the evaluation run first, so the dev history and the selection still match."""
    tasks, prefs = two_tasks
    full, full_trainer, full_summary = _run(tiny_st_model, tasks, prefs, _CFG, tmp_path / "full")
    # checkpoint-4 as the old order wrote it: no step-4 dev result, the best state as of step 2 (checkpoint-2's)
    old, before = tmp_path / "old" / "checkpoint-4", tmp_path / "full" / "checkpoint-2"
    old.parent.mkdir()
    state = load_file(str(tmp_path / "full" / "checkpoint-4" / "training_state.safetensors"))
    state.update({k: v for k, v in load_file(str(before / "training_state.safetensors")).items() if k[:5] == "best."})
    old.mkdir()
    save_file(state, str(old / "training_state.safetensors"))
    meta = json.loads((tmp_path / "full" / "checkpoint-4" / "trainer_state.json").read_text(encoding="utf-8"))
    meta_before = json.loads((before / "trainer_state.json").read_text(encoding="utf-8"))
    meta["history"] = [h for h in meta["history"] if not ("dev" in h and h["step"] == 4)]
    meta["best"], meta["best_dev_per_task"] = meta_before["best"], meta_before["best_dev_per_task"]
    (old / "trainer_state.json").write_text(json.dumps(meta), encoding="utf-8")
    resumed, resumed_trainer, resumed_summary = _run(tiny_st_model, tasks, prefs, _CFG, tmp_path / "r", old)
    _assert_same_end(full, full_trainer, resumed, resumed_trainer, full_summary, resumed_summary)


def test_resume_after_early_stopping_trains_no_further(tiny_st_model, two_tasks, tmp_path):
    tasks, prefs = two_tasks
    scores = {0: 0.5, 2: 0.4, 4: 0.9, 6: 0.3, 8: 0.2}  # patience 1: stops at step 2 (no gain over step 0)
    cfg = TrainingConfig(
        epochs=2, batch_size=8, eval_every=2, checkpoint_every=2, patience=1, show_progress_bar=False, init="identity"
    )

    def run(out, resume_from=None):
        trainer = HydraTrainer(_fresh_hydra(tiny_st_model), tasks, prefs, cfg, output_dir=out)
        trainer.dev_evaluator = lambda m: scores[trainer.global_step]
        return trainer, trainer.train(resume_from=resume_from)

    full, summary = run(tmp_path / "full")
    assert summary["steps"] == 2 and summary["best_dev"] == {"score": 0.5, "step": 0}
    for ckpt in ("checkpoint-2", "checkpoint-final"):
        resumed, resumed_summary = run(tmp_path / ckpt, tmp_path / "full" / ckpt)
        assert resumed_summary["steps"] == 2 and resumed_summary["best_dev"] == summary["best_dev"]
        assert _dev_history(resumed) == _dev_history(full)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"learning_rate": 0.01}, "training.learning_rate is 0.05 there and 0.01 here"),
        ({"epochs": 1}, "training.epochs is 2 there and 1 here"),
        ({"seed": 3}, "training.seed is 0 there and 3 here"),
        ({"eval_every": 4}, "training.eval_every is 2 there and 4 here"),
    ],
)
def test_resume_refuses_a_checkpoint_of_another_training_config(tiny_st_model, two_tasks, tmp_path, change, message):
    tasks, prefs = two_tasks
    _run(tiny_st_model, tasks, prefs, _CFG, tmp_path / "full")
    cfg = TrainingConfig(**{**_CFG.__dict__, **change})
    with pytest.raises(ValueError, match="was written by another run") as info:
        _run(tiny_st_model, tasks, prefs, cfg, tmp_path / "r", tmp_path / "full" / "checkpoint-4")
    assert message in str(info.value)
    assert "same recipe, tasks, seed and number of processes" in str(info.value)
    assert "a fresh --output-dir" in str(info.value)


def test_resume_refuses_other_tasks_cards_pipeline_settings_or_process_count(tiny_st_model, two_tasks, tmp_path):
    from dataclasses import replace

    tasks, prefs = two_tasks
    _run(tiny_st_model, tasks, prefs, _CFG, tmp_path / "full", run_config={"rank": 4})
    ckpt = tmp_path / "full" / "checkpoint-4"
    with pytest.raises(ValueError, match=r"the tasks are \['alpha', 'beta'\] there and \['alpha'\] here"):
        _run(tiny_st_model, tasks[:1], prefs, _CFG, tmp_path / "r1", ckpt, run_config={"rank": 4})
    with pytest.raises(ValueError, match=r"the tasks are \['alpha', 'beta'\] there and \['beta', 'alpha'\] here"):
        _run(tiny_st_model, tasks[::-1], prefs, _CFG, tmp_path / "r2", ckpt, run_config={"rank": 4})
    other_card = [replace(tasks[0], card=replace(tasks[0].card, description="Another task.")), tasks[1]]
    with pytest.raises(ValueError, match="alpha: card fingerprint"):
        _run(tiny_st_model, other_card, prefs, _CFG, tmp_path / "r3", ckpt, run_config={"rank": 4})
    with pytest.raises(ValueError, match="rank is 4 there and 8 here"):
        _run(tiny_st_model, tasks, prefs, _CFG, tmp_path / "r4", ckpt, run_config={"rank": 8})
    meta = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    (ckpt / "trainer_state.json").write_text(json.dumps({**meta, "processes": 2}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"written by 2 process\(es\) and this run has 1"):
        _run(tiny_st_model, tasks, prefs, _CFG, tmp_path / "r5", ckpt, run_config={"rank": 4})


def test_resume_accepts_other_run_independent_fields_and_an_older_config(tiny_st_model, two_tasks, tmp_path):
    tasks, prefs = two_tasks
    full, full_trainer, full_summary = _run(tiny_st_model, tasks, prefs, _CFG, tmp_path / "full")
    ckpt = tmp_path / "full" / "checkpoint-4"
    meta = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    del meta["config"]["eval_final"]  # a checkpoint written before the option existed: it was off
    (ckpt / "trainer_state.json").write_text(json.dumps(meta), encoding="utf-8")
    cfg = TrainingConfig(**{**_CFG.__dict__, "show_progress_bar": True, "checkpoint_every": 3})
    resumed, resumed_trainer, resumed_summary = _run(tiny_st_model, tasks, prefs, cfg, tmp_path / "r", ckpt)
    _assert_same_end(full, full_trainer, resumed, resumed_trainer, full_summary, resumed_summary)


def test_older_checkpoint_without_a_task_list_is_checked_against_its_loss_history(tiny_st_model, two_tasks, tmp_path):
    tasks, prefs = two_tasks
    _run(tiny_st_model, tasks, prefs, _CFG, tmp_path / "full")
    ckpt = tmp_path / "full" / "checkpoint-4"
    meta = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    del meta["tasks"]
    (ckpt / "trainer_state.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ValueError, match=r"it trained on task\(s\) \['beta'\]"):
        _run(tiny_st_model, tasks[:1], prefs, _CFG, tmp_path / "r", ckpt)


def _scripted(scores):
    """A dev evaluator giving ``scores[step]`` (reads the step from the trainer it is bound to)."""
    box: dict = {}

    def evaluate(model):
        return scores[box["trainer"].global_step]

    return box, evaluate


def test_steps_after_the_last_dev_evaluation_are_reported_and_eval_final_lets_them_compete(
    tiny_st_model, two_tasks, tmp_path, caplog
):
    tasks, prefs = two_tasks
    scores = {0: 0.1, 3: 0.2, 6: 0.3, 8: 0.9}
    cfg = TrainingConfig(epochs=2, batch_size=8, eval_every=3, show_progress_bar=False, init="identity")
    box, dev = _scripted(scores)
    trainer = box["trainer"] = HydraTrainer(_fresh_hydra(tiny_st_model), tasks, prefs, cfg, dev_evaluator=dev)
    with caplog.at_level("INFO", logger="hydra_st.hydra.trainer"):
        summary = trainer.train()
    assert summary["best_dev"] == {"score": 0.3, "step": 6}  # the default: steps 7-8 never competed
    (warning,) = summary["selection_warnings"]
    assert "steps 7-8 were trained but never evaluated on dev" in warning
    assert "8 is not a multiple of eval_every (3)" in warning and "eval_final: true" in warning
    # an eval interval's remainder is logged (info), not warned about: the main command's recipe always has one
    assert [r.levelname for r in caplog.records if r.getMessage() == warning] == ["INFO"]

    box, dev = _scripted(scores)
    final = TrainingConfig(**{**cfg.__dict__, "eval_final": True})
    trainer = box["trainer"] = HydraTrainer(_fresh_hydra(tiny_st_model), tasks, prefs, final, dev_evaluator=dev)
    summary = trainer.train()
    assert summary["best_dev"] == {"score": 0.9, "step": 8} and summary["selection_warnings"] == []
    assert [h["step"] for h in summary["dev_history"]] == [0, 3, 6, 8]


def test_eval_every_beyond_the_run_and_a_kept_step_0_are_reported(tiny_st_model, two_tasks, caplog):
    tasks, prefs = two_tasks
    cfg = TrainingConfig(epochs=1, batch_size=8, eval_every=40, show_progress_bar=False, init="identity")
    trainer = HydraTrainer(_fresh_hydra(tiny_st_model), tasks, prefs, cfg, dev_evaluator=lambda m: 0.0)
    with caplog.at_level("WARNING", logger="hydra_st.hydra.trainer"):
        summary = trainer.train()
    assert summary["best_dev"] == {"score": 0.0, "step": 0}
    beyond, step0 = summary["selection_warnings"]
    assert "steps 1-4 were trained but never evaluated" in beyond and "eval_every (40) is more than" in beyond
    assert step0.startswith("training kept step 0 (no improvement on dev") and "eval_every" in step0
    assert "training kept step 0" in caplog.text
    assert {r.levelname for r in caplog.records if r.name == "hydra_st.hydra.trainer"} == {"WARNING"}
    # a run without a dev evaluator keeps its last state: nothing to warn about
    plain = HydraTrainer(_fresh_hydra(tiny_st_model), tasks, prefs, cfg).train()
    assert plain["selection_warnings"] == [] and plain["best_dev"] is None


def test_loss_log_is_written_as_training_goes(tiny_st_model, two_tasks, tmp_path):
    tasks, prefs = two_tasks
    cfg = TrainingConfig(epochs=2, batch_size=8, eval_every=2, show_progress_bar=False, init="identity")
    seen: list[list[int]] = []
    log = tmp_path / "loss_log.jsonl"

    def dev(model):  # what a process killed here would leave behind
        lines = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
        seen.append([json.loads(line)["step"] for line in lines if "loss" in json.loads(line)])
        return 0.0

    HydraTrainer(_fresh_hydra(tiny_st_model), tasks, prefs, cfg, output_dir=tmp_path, dev_evaluator=dev).train()
    assert seen == [[], [1, 2], [1, 2, 3, 4], [1, 2, 3, 4, 5, 6], list(range(1, 9))]
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in records if "dev" in r] == [0, 2, 4, 6, 8]
    assert not list(tmp_path.glob("checkpoint-[0-9]*"))  # no step checkpoints were asked for


def test_resumed_run_rewrites_the_loss_log_from_its_checkpoint(tiny_st_model, two_tasks, tmp_path):
    tasks, prefs = two_tasks
    _run(tiny_st_model, tasks, prefs, _CFG, tmp_path / "full")
    out = tmp_path / "full"
    full_log = (out / "loss_log.jsonl").read_text(encoding="utf-8")
    # resumed in the same folder, whose log already runs to step 8: the steps after the checkpoint are not doubled
    _run(tiny_st_model, tasks, prefs, _CFG, out, resume_from=out / "checkpoint-4")
    assert (out / "loss_log.jsonl").read_text(encoding="utf-8") == full_log


@pytest.mark.parametrize("name", ["checkpoint_every", "eval_every", "patience", "max_queries_per_task"])
def test_negative_counts_are_refused(name):
    with pytest.raises(ValueError, match=f"TrainingConfig.{name} must be >= 0"):
        TrainingConfig(**{name: -1})


def test_a_saved_config_without_eval_final_loads_with_it_off():
    saved = json.loads(json.dumps(TrainingConfig().__dict__))
    del saved["eval_final"]
    assert TrainingConfig(**saved).eval_final is False
