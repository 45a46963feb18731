from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from hydra_st.hydra import Hydra
from hydra_st.hydra.checkpoints import load_checkpoint, restore_step_state, save_checkpoint
from hydra_st.hydra.evaluate import dev_score, evaluate_task, wrong_card_for
from hydra_st.hydra.tasks import QuerySet
from hydra_st.hydra.trainer import HydraTrainer, TrainingConfig
from tests.hydra.synthetic import make_task


@pytest.fixture
def setup(tiny_st_model):
    model = Hydra.from_base(tiny_st_model, out_dim=16, cond_dim=8, rank=2, hidden_dim=16)
    (a, pa), (b, pb) = make_task("alpha", 0), make_task("beta", 1)
    return model, [a, b], {"alpha": pa, "beta": pb}


def test_train_checkpoint_resume(setup, tmp_path):
    model, tasks, prefs = setup
    cfg = TrainingConfig(epochs=2, batch_size=8, checkpoint_every=2, show_progress_bar=False)
    trainer = HydraTrainer(model, tasks, prefs, cfg, output_dir=tmp_path, dev_evaluator=lambda m: dev_score(m, tasks))
    before = {k: v.clone() for k, v in model.head.state_dict().items()}
    summary = trainer.train()
    assert summary["steps"] == 8 and summary["best_dev"] is not None
    assert any(not torch.equal(before[k], v) for k, v in model.head.state_dict().items())
    log = [json.loads(line) for line in (tmp_path / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 9))
    assert (tmp_path / "checkpoint-2" / "training_state.safetensors").is_file()
    # resume from step 4: the trainer continues to step 8
    model2 = Hydra.from_base(model, out_dim=16, cond_dim=8, rank=2, hidden_dim=16)
    trainer2 = HydraTrainer(model2, tasks, prefs, cfg, output_dir=tmp_path / "r")
    summary2 = trainer2.train(resume_from=tmp_path / "checkpoint-4")
    assert summary2["steps"] == 8
    # the loss log carries on from the checkpoint's: steps 1-4 restored, 5-8 trained
    assert [h["step"] for h in trainer2.history if "loss" in h] == list(range(1, 9))


def _fresh_hydra(base):
    torch.manual_seed(0)  # the same initial hypernet for every run
    return Hydra.from_base(base, out_dim=16, cond_dim=8, rank=2, hidden_dim=16)


@pytest.mark.parametrize("resume_step", [4, 6])  # mid-epoch 1 (4 steps per epoch) and mid-epoch 2
def test_resumed_run_ends_with_the_uninterrupted_runs_weights(tiny_st_model, tmp_path, resume_step):
    """View dropout on: the resumed run must draw the dropout masks the uninterrupted run drew after the checkpoint."""
    (a, pa), (b, pb) = make_task("alpha", 1), make_task("beta", 2)
    tasks, prefs = [a, b], {"alpha": pa, "beta": pb}
    cfg = TrainingConfig(
        epochs=2, batch_size=8, checkpoint_every=2, show_progress_bar=False, init="identity", view_dropout=0.5
    )
    full = _fresh_hydra(tiny_st_model)
    HydraTrainer(full, tasks, prefs, cfg, output_dir=tmp_path / "full").train()
    resumed = _fresh_hydra(tiny_st_model)
    trainer = HydraTrainer(resumed, tasks, prefs, cfg, output_dir=tmp_path / "resumed")
    summary = trainer.train(resume_from=tmp_path / "full" / f"checkpoint-{resume_step}")
    assert summary["steps"] == 8
    for key, value in full.head.state_dict().items():
        assert torch.equal(resumed.head.state_dict()[key], value), key
    # and the resumed run's own checkpoint-final carries the same generator state as the uninterrupted run's
    from safetensors.torch import load_file

    ends = [
        load_file(str(tmp_path / run / "checkpoint-final" / "training_state.safetensors"))
        for run in ("full", "resumed")
    ]
    assert ends[0]["rng.view_dropout"].dtype == torch.uint8 and ends[0]["rng.view_dropout"].shape[0] == 1
    assert torch.equal(ends[0]["rng.view_dropout"], ends[1]["rng.view_dropout"])


def test_checkpoint_without_generator_state_resumes_with_a_warning(tiny_st_model, tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    (a, pa), (b, pb) = make_task("alpha", 1), make_task("beta", 2)
    tasks, prefs = [a, b], {"alpha": pa, "beta": pb}
    cfg = TrainingConfig(epochs=2, batch_size=8, checkpoint_every=4, show_progress_bar=False, init="identity")
    HydraTrainer(_fresh_hydra(tiny_st_model), tasks, prefs, cfg, output_dir=tmp_path / "full").train()
    st_path = tmp_path / "full" / "checkpoint-4" / "training_state.safetensors"
    state = load_file(str(st_path))
    del state["rng.view_dropout"]  # as written before the generator state was saved
    save_file(state, str(st_path))
    with caplog.at_level("WARNING", logger="hydra_st.hydra.trainer"):
        summary = HydraTrainer(_fresh_hydra(tiny_st_model), tasks, prefs, cfg).train(resume_from=st_path.parent)
    assert summary["steps"] == 8
    assert "no view-dropout generator state" in caplog.text and str(st_path.parent) in caplog.text


def test_checkpoint_carries_the_fp16_gradient_scale_and_each_process_generator(setup, tmp_path, caplog):
    """Under fp16 the gradient scaler's state is saved and restored too; a checkpoint from another number of
    processes resumes with a warning. (CPU has no fp16 scaler, so a CPU GradScaler stands in for accelerate's.)"""
    from types import SimpleNamespace

    model, tasks, prefs = setup
    cfg = TrainingConfig(epochs=1, batch_size=8, show_progress_bar=False)
    trainer = HydraTrainer(model, tasks, prefs, cfg, output_dir=tmp_path)
    optimizer = torch.optim.AdamW(model.head.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    acc = SimpleNamespace(num_processes=1, process_index=0, is_main_process=True, scaler=scaler)
    gen = torch.Generator().manual_seed(5)
    torch.rand(4, generator=gen)
    save_checkpoint(trainer, acc, optimizer, 0, gen)
    meta = json.loads((tmp_path / "checkpoint-0" / "trainer_state.json").read_text(encoding="utf-8"))
    assert meta["grad_scaler"]["scale"] == 1024.0 and meta["processes"] == 1

    resumed = HydraTrainer(model, tasks, prefs, cfg)
    load_checkpoint(resumed, tmp_path / "checkpoint-0", torch.optim.AdamW(model.head.parameters()))
    fresh_scaler, fresh_gen = torch.amp.GradScaler("cpu"), torch.Generator().manual_seed(0)
    fresh_acc = SimpleNamespace(num_processes=1, process_index=0, is_main_process=True, scaler=fresh_scaler)
    restore_step_state(resumed, tmp_path / "checkpoint-0", fresh_gen, fresh_acc)
    assert fresh_scaler.get_scale() == 1024.0 and torch.equal(fresh_gen.get_state(), gen.get_state())

    two = SimpleNamespace(num_processes=2, process_index=1, is_main_process=False, scaler=None)
    other_gen = torch.Generator().manual_seed(17)
    with caplog.at_level("WARNING", logger="hydra_st.hydra.trainer"):
        restore_step_state(resumed, tmp_path / "checkpoint-0", other_gen, two)
    assert "written by 1 process(es), this run has 2" in caplog.text
    assert torch.equal(other_gen.get_state(), torch.Generator().manual_seed(17).get_state())  # left as seeded


def test_every_process_resumes_its_own_view_dropout_generator(setup, tmp_path):
    """Each process restores its own row of the saved [processes, n] generator state (rank 1 used to read rank 0's
    bytes, or crash: a row is a view at an offset, which Generator.set_state ignores)."""
    from types import SimpleNamespace

    model, tasks, prefs = setup
    trainer = HydraTrainer(model, tasks, prefs, TrainingConfig(epochs=1, batch_size=8, show_progress_bar=False))
    generators = [torch.Generator().manual_seed(seed) for seed in (3, 20)]
    for gen in generators:
        torch.rand(7, generator=gen)  # each process has drawn its own masks
    trainer._resumed_step_state = (torch.stack([gen.get_state() for gen in generators]), None)
    for rank, saved in enumerate(generators):
        process = SimpleNamespace(num_processes=2, process_index=rank, is_main_process=rank == 0, scaler=None)
        restored = torch.Generator().manual_seed(0)
        restore_step_state(trainer, tmp_path, restored, process)
        assert torch.equal(torch.rand(5, generator=restored), torch.rand(5, generator=saved)), rank


@pytest.mark.parametrize("extra_processes", [0, 1])
def test_processes_share_an_epochs_batches_and_say_what_is_left_out(setup, monkeypatch, caplog, extra_processes):
    """Each of N processes takes every N-th batch and the same number of steps: the remainder of an epoch is left
    out, and said; fewer batches than processes is refused instead of training no step."""
    import accelerate
    from accelerate import Accelerator

    from hydra_st.hydra.training_batches import epoch_batches

    model, tasks, prefs = setup
    cfg = TrainingConfig(epochs=1, batch_size=8, show_progress_bar=False)
    trainer = HydraTrainer(model, tasks, prefs, cfg)
    batches = len(epoch_batches(trainer.tasks, cfg, 0))
    world = batches + 1 if extra_processes else 3  # this process is rank 0 of `world` (others are never started)
    assert batches > 3 and batches % 3, "the setup should give a number of batches that 3 processes cannot share"

    class SharedAccelerator(Accelerator):
        num_processes = property(lambda self: world)

    monkeypatch.setattr(accelerate, "Accelerator", SharedAccelerator)  # train() imports it when it runs
    if extra_processes:
        with pytest.raises(ValueError, match=f"{batches} batch\\(es\\), fewer than the {world} processes"):
            trainer.train()
        return
    with caplog.at_level("INFO", logger="hydra_st.hydra.trainer"):
        trainer.train()
    assert f"{batches % 3} of the {batches} batches of each epoch are left out" in caplog.text
    assert trainer.global_step == batches // 3


def test_a_checkpoint_write_that_fails_leaves_the_old_checkpoint_whole(setup, tmp_path, monkeypatch):
    """The checkpoint folder is built aside and renamed into place: a crash after the weights and before
    trainer_state.json keeps the checkpoint that was there, with both its files, and leaves no staging folder."""
    from types import SimpleNamespace

    import hydra_st.hydra.checkpoints as checkpoints

    model, tasks, prefs = setup
    trainer = HydraTrainer(model, tasks, prefs, TrainingConfig(epochs=1, show_progress_bar=False), output_dir=tmp_path)
    optimizer = torch.optim.AdamW(model.head.parameters())
    acc = SimpleNamespace(num_processes=1, process_index=0, is_main_process=True, scaler=None)
    gen = torch.Generator().manual_seed(5)
    save_checkpoint(trainer, acc, optimizer, 0, gen)
    folder = tmp_path / "checkpoint-0"
    before = {name: (folder / name).read_bytes() for name in checkpoints.CHECKPOINT_FILES}

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoints, "atomic_write_json", full_disk)
    with torch.no_grad():
        next(model.head.parameters()).add_(1.0)  # the new checkpoint would hold other weights
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(trainer, acc, optimizer, 1, gen)
    assert {name: (folder / name).read_bytes() for name in checkpoints.CHECKPOINT_FILES} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-0"]


def test_resuming_a_finished_run_keeps_its_model_selection(setup, tmp_path):
    model, tasks, prefs = setup
    cfg = TrainingConfig(epochs=2, batch_size=8, eval_every=2, show_progress_bar=False)
    scores = iter([0.5, 0.9, 0.4, 0.3, 0.2, 0.1])  # dev peaks at step 2, so the kept state is not the last one
    dev = lambda m: next(scores)  # noqa: E731
    summary = HydraTrainer(model, tasks, prefs, cfg, output_dir=tmp_path, dev_evaluator=dev).train()
    assert summary["best_dev"] == {"score": 0.9, "step": 2}
    kept = {k: v.clone() for k, v in model.head.state_dict().items()}
    model2 = Hydra.from_base(model, out_dim=16, cond_dim=8, rank=2, hidden_dim=16)
    trainer2 = HydraTrainer(model2, tasks, prefs, cfg, output_dir=tmp_path / "r", dev_evaluator=dev)
    summary2 = trainer2.train(resume_from=tmp_path / "checkpoint-final")
    # nothing left to train, and the best-dev state (not the last step's) is what the resumed run ends on
    assert summary2["best_dev"] == summary["best_dev"]
    for key, value in model2.head.state_dict().items():
        torch.testing.assert_close(value, kept[key])


def test_trained_model_evaluates_and_encodes_consistently(setup):
    model, tasks, prefs = setup
    HydraTrainer(model, tasks, prefs, TrainingConfig(epochs=1, batch_size=8, show_progress_bar=False)).train()
    res = evaluate_task(
        tasks[0], model, {t.name: t.card for t in tasks}, systems=("base", "hydra", "hydra_wrong_card")
    )
    assert set(res) == {"base", "hydra", "hydra_wrong_card"}
    assert 0 <= res["hydra"]["ndcg@10"] <= 1
    assert wrong_card_for("alpha", ["alpha", "beta"]) == "beta"


def test_corrupt_and_mismatched_checkpoints(setup, tmp_path):
    model, tasks, prefs = setup
    cfg = TrainingConfig(epochs=1, batch_size=8, show_progress_bar=False)
    HydraTrainer(model, tasks, prefs, cfg, output_dir=tmp_path).train()
    final = tmp_path / "checkpoint-final"
    (final / "training_state.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt"):
        HydraTrainer(model, tasks, prefs, cfg).train(resume_from=final)
    with pytest.raises(FileNotFoundError, match="not a Hydra checkpoint"):
        HydraTrainer(model, tasks, prefs, cfg).train(resume_from=tmp_path / "nowhere")
    other = Hydra.from_base(model, out_dim=8, cond_dim=8, rank=2, hidden_dim=16)
    HydraTrainer(other, tasks, prefs, cfg, output_dir=tmp_path / "o").train()
    with pytest.raises(ValueError, match="does not match"):
        HydraTrainer(model, tasks, prefs, cfg).train(resume_from=tmp_path / "o" / "checkpoint-final")


def test_bad_trainer_inputs(setup):
    model, tasks, prefs = setup
    with pytest.raises(ValueError, match="no preferences"):
        HydraTrainer(model, tasks, {"alpha": prefs["alpha"]})
    with pytest.raises(ValueError, match="other queries"):
        HydraTrainer(model, tasks, {"alpha": prefs["beta"], "beta": prefs["beta"]})
    with pytest.raises(ValueError, match="init"):
        TrainingConfig(init="random")
    with pytest.raises(ValueError, match="unknown loss"):
        TrainingConfig(loss_weights={"bogus": 1.0})
    with pytest.raises(ValueError, match="at least one task"):
        HydraTrainer(model, [], {})


def test_dev_aggregates():
    from hydra_st.hydra.evaluate import aggregate_gains

    gains = {"a": 0.02, "b": -0.01}
    assert aggregate_gains(gains, "mean") == pytest.approx(0.005)
    assert aggregate_gains(gains, "min") == pytest.approx(-0.01)
    assert aggregate_gains(gains, "penalized") == pytest.approx(0.005 - 0.005)
    with pytest.raises(ValueError, match="aggregate"):
        aggregate_gains(gains, "max")
    with pytest.raises(ValueError, match="no task"):
        aggregate_gains({}, "mean")


def test_dict_dev_evaluator_is_aggregated(setup):
    model, tasks, prefs = setup
    cfg = TrainingConfig(epochs=1, batch_size=8, show_progress_bar=False)
    trainer = HydraTrainer(model, tasks, prefs, cfg, dev_evaluator=lambda m: {"alpha": 0.1, "beta": 0.3})
    summary = trainer.train()
    assert summary["best_dev"]["score"] == pytest.approx(0.2)
    assert summary["dev_history"][0]["dev_per_task"] == {"alpha": 0.1, "beta": 0.3}


def test_evaluate_task_splits_test_queries_by_train_pool(setup):
    model, tasks, _ = setup
    task = tasks[0]  # test queries q16..q23, each with one relevant document d16..d23
    train = replace(task.train, qrels={task.train.ids[0]: {task.doc_ids[16]: 1, task.doc_ids[17]: 1}})
    in_pool = replace(task, train=train, dev=QuerySet([], []))
    res = evaluate_task(in_pool, model, {}, systems=("base", "hydra"))
    for scores in res.values():
        assert (scores["queries/train_pool"], scores["queries/new_pool"]) == (2, 6)
        whole = (2 * scores["ndcg@10/train_pool"] + 6 * scores["ndcg@10/new_pool"]) / 8
        assert whole == pytest.approx(scores["ndcg@10"])
    pseudo = replace(in_pool, train_source="400 pseudo-queries")
    assert set(evaluate_task(pseudo, model, {}, systems=("base",))["base"]) == {"ndcg@10", "mrr@10", "recall@100"}


def test_evaluate_task_fills_per_query_scores_for_paired_comparisons(setup):
    from hydra_st.hydra.evaluate import paired_against_base

    model, tasks, _ = setup
    per_query: dict = {}
    res = evaluate_task(tasks[0], model, {}, systems=("base", "hydra"), per_query=per_query)
    assert set(per_query) == {"base", "hydra"} and set(per_query["base"]) == set(tasks[0].test.ids)
    assert np.mean(list(per_query["hydra"].values())) == pytest.approx(res["hydra"]["ndcg@10"])
    paired = paired_against_base(per_query)
    assert set(paired) == {"hydra"}  # no LOTO model was scored
    assert paired["hydra"]["mean_difference"] == pytest.approx(res["hydra"]["ndcg@10"] - res["base"]["ndcg@10"])
    with pytest.raises(ValueError, match="base model"):
        paired_against_base({"hydra": per_query["hydra"]})
