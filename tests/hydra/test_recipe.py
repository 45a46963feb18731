"""training_recipes/hydra/train.py: the recipe's seed and folders reach the task data, and bad recipes are refused."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import load_repo_script

RECIPE_DIR = Path(__file__).resolve().parents[2] / "training_recipes" / "hydra"


@pytest.fixture
def recipe_script():
    return load_repo_script("training_recipes/hydra/train.py", "hydra_recipe_train_script")


def _recipe(tmp_path: Path, extra: str = "") -> Path:
    """The shipped recipe with ``training.seed: 3``, plus ``extra`` YAML lines."""
    data = yaml.safe_load((RECIPE_DIR / "recipe.yaml").read_text(encoding="utf-8"))
    data["training"]["seed"] = 3
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data) + extra, encoding="utf-8")
    return path


def test_train_script_passes_the_recipe_seed_and_folders_to_the_task_data(recipe_script, tmp_path, monkeypatch):
    calls: dict[str, dict] = {}

    def fake_load_tasks(names, base, **kwargs):
        calls["load_tasks"] = kwargs
        return []

    def fake_train_model(base, tasks, config, **kwargs):
        calls["train_model"] = {**kwargs, "seed": config.training.seed}
        return SimpleNamespace(save=lambda path: None), {"best_dev": None}

    monkeypatch.setattr(recipe_script, "load_base_model", lambda: object())
    monkeypatch.setattr(recipe_script, "check_datasets", lambda names, data_dir: Path(data_dir))
    monkeypatch.setattr(recipe_script, "load_tasks", fake_load_tasks)
    monkeypatch.setattr(recipe_script, "train_model", fake_train_model)
    monkeypatch.setattr(recipe_script, "save_trained_model", lambda *args, **kwargs: None)
    monkeypatch.setattr(recipe_script, "atomic_write_json", lambda path, obj: None)
    recipe = _recipe(tmp_path)
    argv = ["--recipe", str(recipe), "--output-dir", str(tmp_path / "out"), "--data-dir", "/data", "--cache-dir", "/c"]
    assert recipe_script.main(argv) == 0
    assert calls["load_tasks"]["seed"] == 3  # as hydra-st quickstart --seed 3 / run_pipeline would build them
    assert calls["load_tasks"]["data_dir"] == "/data" and calls["load_tasks"]["cache_dir"] == "/c"
    assert calls["train_model"]["cache_dir"] == "/c" and calls["train_model"]["seed"] == 3


def test_recipe_with_loto(recipe_script, tmp_path):
    assert recipe_script.load_recipe(_recipe(tmp_path, "loto: false\n")).loto is False
    with pytest.raises(ValueError, match="loto: true is not supported by train.py"):
        recipe_script.load_recipe(_recipe(tmp_path, "loto: true\n"))
    with pytest.raises(
        ValueError, match="unknown key 'epochz'; valid keys: cards, dev_aggregate, gate_rule, gated, loto"
    ):
        recipe_script.load_recipe(_recipe(tmp_path, "epochz: 3\n"))


def test_train_script_reports_a_bad_recipe_in_one_line(recipe_script, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        recipe_script.main(["--recipe", str(_recipe(tmp_path, "loto: true\n"))])
    assert done.value.code == 2
    assert "loto: true is not supported" in capsys.readouterr().err


def _write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_recipe_values_of_the_wrong_type_are_named_with_the_file(recipe_script, tmp_path):
    load = recipe_script.load_recipe
    # YAML 1.1 reads 1e-3 as a string: it is the number it looks like
    config = load(_write(tmp_path, "training:\n  learning_rate: 1e-3\n  weight_decay: '0.02'\n"))
    assert config.training.learning_rate == 0.001 and config.training.weight_decay == 0.02
    assert load(_write(tmp_path, "tasks: adi\n")).tasks == ("adi",)  # one name, not its letters
    assert load(_write(tmp_path, "tasks: 'adi, med'\n")).tasks == ("adi", "med")
    assert load(_write(tmp_path, "tasks: [adi, ' med']\n")).tasks == ("adi", "med")
    bad = {
        "training:\n  epochs: three\n": "r.yaml: training.epochs must be a whole number, got 'three'",
        "training:\n  learning_rate: fast\n": "r.yaml: training.learning_rate must be a number, got 'fast'",
        "gated: 'no'\n": "r.yaml: gated must be true or false, got 'no'",
        "preferences:\n  confidence_weighted: 1\n": "preferences.confidence_weighted must be true or false, got 1",
        "training:\n  loss_weights: {anchor: lots}\n": "training.loss_weights.anchor must be a number, got 'lots'",
        "tasks: 3\n": "tasks must be a list of names",
        "training: 3\n": "training must be a mapping",
        "training:\n  epochs: 0\n": "r.yaml: training: epochs and batch_size must be >= 1",
        "training:\n  checkpoint_every: -1\n": "TrainingConfig.checkpoint_every must be >= 0",
        "loto: 'no'\n": "r.yaml: loto must be true or false",
        "tasks: [adi\n": "r.yaml: not valid YAML",
    }
    for text, message in bad.items():
        with pytest.raises(ValueError) as info:
            load(_write(tmp_path, text))
        assert message in str(info.value), text
        assert "\n" not in str(info.value)  # one line


def test_unknown_recipe_keys_list_the_valid_keys(recipe_script, tmp_path):
    cases = {
        "bogus_key: 1\n": "r.yaml: unknown key 'bogus_key'; valid keys: cards, dev_aggregate, gate_rule, gated, loto",
        "training:\n  epoch: 2\n": "r.yaml: unknown key 'epoch' in training; valid keys: batch_size, checkpoint_every",
        "preferences:\n  bogus: 2\n": "r.yaml: unknown key 'bogus' in preferences; valid keys: candidates, confidence",
    }
    for text, message in cases.items():
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            recipe_script.load_recipe(_write(tmp_path, text))


@pytest.fixture
def data_dir(tmp_path):
    """A data dir with adi and medtr (no bundled card) as far as the up-front checks look."""
    root = tmp_path / "beir"
    for name in ("adi", "medtr"):
        (root / name).mkdir(parents=True)
        (root / name / "corpus.jsonl").write_text("", encoding="utf-8")
    return root


@pytest.fixture
def no_training(recipe_script, monkeypatch):
    """train.py with the base model, the task data and the training faked: records what reaches them."""
    calls: dict = {}

    def fake_load_tasks(names, base, **kwargs):
        calls["tasks"], calls["cards"] = tuple(names), kwargs.get("cards")
        return []

    def fake_train_model(base, tasks, config, **kwargs):
        calls["train_model"] = {**kwargs, "config": config}
        out = Path(kwargs["output_dir"]).parent
        calls["left_before_training"] = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
        return SimpleNamespace(), {"best_dev": None, "steps": 0}

    monkeypatch.setattr(recipe_script, "load_base_model", lambda: object())
    monkeypatch.setattr(recipe_script, "load_tasks", fake_load_tasks)
    monkeypatch.setattr(recipe_script, "train_model", fake_train_model)
    monkeypatch.setattr(recipe_script, "save_trained_model", lambda *args, **kwargs: calls.setdefault("saved", True))
    return calls


def _fails(recipe_script, capsys, argv) -> str:
    with pytest.raises(SystemExit) as done:
        recipe_script.main(argv)
    assert done.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_train_script_reports_a_missing_dataset_before_a_missing_card(
    recipe_script, data_dir, tmp_path, capsys, no_training
):
    common = ["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "out")]
    err = _fails(recipe_script, capsys, ["--tasks", "adi,nosuch", *common])
    assert "dataset(s) ['nosuch'] not found under" in err and "card" not in err
    err = _fails(recipe_script, capsys, ["--tasks", "adi,medtr", *common])
    assert "no bundled task card for ['medtr']" in err and "--card medtr=path/to/card.yaml" in err
    err = _fails(recipe_script, capsys, ["--tasks", "adi", "--card", "medtr=x.yaml", *common])
    assert "a card is given for ['medtr'], which are not among the tasks" in err
    err = _fails(recipe_script, capsys, ["--tasks", "medtr", "--card", "medtr=missing.yaml", *common])
    assert "the card of 'medtr'" in err
    err = _fails(recipe_script, capsys, ["--tasks", "adi", "--card", "medtr", *common])
    assert "expected NAME=PATH" in err
    err = _fails(recipe_script, capsys, ["--tasks", "adi", "--checkpoint-every", "-1", *common])
    assert "--checkpoint-every: must be >= 0" in err
    assert "tasks" not in no_training  # nothing was loaded


def test_train_script_takes_card_files_and_strips_task_names(recipe_script, data_dir, tmp_path, no_training):
    from hydra_st.hydra import TaskCard

    TaskCard(name="medtr", description="Medical abstracts for clinical questions.").save(tmp_path / "medtr.yaml")
    argv = ["--tasks", "adi, medtr", "--card", f"medtr={tmp_path / 'medtr.yaml'}", "--data-dir", str(data_dir)]
    assert recipe_script.main([*argv, "--output-dir", str(tmp_path / "out")]) == 0
    assert no_training["tasks"] == ("adi", "medtr")
    assert set(no_training["cards"]) == {"medtr"} and no_training["cards"]["medtr"].name == "medtr"
    # or in the recipe, a path relative to the recipe's folder
    (tmp_path / "recipes").mkdir()
    (tmp_path / "medtr.yaml").rename(tmp_path / "recipes" / "medtr.yaml")
    recipe = _write(tmp_path / "recipes", "tasks: [adi, medtr]\ncards: {medtr: medtr.yaml}\n")
    assert (
        recipe_script.main(
            ["--recipe", str(recipe), "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "o2")]
        )
        == 0
    )
    assert no_training["cards"]["medtr"].description.startswith("Medical abstracts")


def test_train_script_refuses_an_output_dir_holding_another_run(
    recipe_script, data_dir, tmp_path, capsys, no_training
):
    out = tmp_path / "out"
    (out / "model" / "1_Router").mkdir(parents=True)  # e.g. a Hypencoder saved there
    (out / "training" / "checkpoint-50").mkdir(parents=True)
    for name in ("training_state.safetensors", "trainer_state.json"):
        (out / "training" / "checkpoint-50" / name).write_text("", encoding="utf-8")
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    argv = ["--tasks", "adi", "--data-dir", str(data_dir), "--output-dir", str(out)]
    err = _fails(recipe_script, capsys, argv)
    assert f"output dir {out} already holds a run (model, training)" in err and "--overwrite" in err
    assert (out / "model" / "1_Router").is_dir() and "tasks" not in no_training
    # resuming that run in place is allowed, and nothing is deleted
    assert recipe_script.main([*argv, "--resume-from", str(out / "training" / "checkpoint-50")]) == 0
    assert no_training["left_before_training"] == ["model", "notes.txt", "training"]
    # --overwrite deletes the earlier run's outputs (and only those) before training
    assert recipe_script.main([*argv, "--overwrite"]) == 0
    assert no_training["left_before_training"] == ["notes.txt"]


def test_train_script_saves_the_model_with_its_records_and_cards(recipe_script, tiny_st_model, tmp_path, monkeypatch):
    """As hydra-st quickstart saves it: hydra_training.json, cards/, and a card that records the run."""
    import json

    from hydra_st.hydra import Hydra
    from hydra_st.hydra.evaluate import dev_score
    from hydra_st.hydra.trainer import HydraTrainer
    from tests.hydra.synthetic import make_task

    (a, pa), (b, pb) = make_task("alpha", 1), make_task("beta", 2)
    data = tmp_path / "beir"
    for task in (a, b):
        (data / task.name).mkdir(parents=True)
        (data / task.name / "corpus.jsonl").write_text("", encoding="utf-8")
        task.card.save(tmp_path / f"{task.name}.yaml")

    def fake_train_model(base, tasks, config, **kwargs):
        model = Hydra.from_base(tiny_st_model, out_dim=16, cond_dim=8, rank=2, hidden_dim=16)
        trainer = HydraTrainer(
            model, tasks, {"alpha": pa, "beta": pb}, config.training, dev_evaluator=lambda m: dev_score(m, tasks)
        )
        return model, trainer.train()

    monkeypatch.setattr(recipe_script, "load_base_model", lambda: object())
    monkeypatch.setattr(recipe_script, "load_tasks", lambda names, base, **kwargs: [a, b])
    monkeypatch.setattr(recipe_script, "train_model", fake_train_model)
    recipe = _write(tmp_path, "training:\n  epochs: 1\n  batch_size: 8\n  eval_every: 3\n  show_progress_bar: false\n")
    out = tmp_path / "out"
    argv = ["--recipe", str(recipe), "--tasks", "alpha,beta", "--data-dir", str(data), "--output-dir", str(out)]
    argv += ["--card", f"alpha={tmp_path / 'alpha.yaml'}", "--card", f"beta={tmp_path / 'beta.yaml'}"]
    assert recipe_script.main(argv) == 0
    model_dir = out / "model"
    record = json.loads((model_dir / "hydra_training.json").read_text(encoding="utf-8"))
    assert record["config"]["tasks"] == ["alpha", "beta"] and record["config"]["training"]["eval_every"] == 3
    assert record["steps"] == 4 and record["best_dev"]["step"] in (0, 3)
    assert "step 4 was trained but never evaluated" in record["selection_warnings"][0]
    assert sorted(p.name for p in (model_dir / "cards").iterdir()) == ["alpha.yaml", "beta.yaml"]
    readme = (model_dir / "README.md").read_text(encoding="utf-8")
    assert "Untrained" not in readme and "Not evaluated yet" not in readme and "table above" not in readme
    assert str(tmp_path) not in readme  # the usage snippet names no local folder, as the quickstart's
    assert '"steps": 4' in readme and '"best_dev"' in readme and '"tasks": [' in readme
    assert "Not evaluated on test queries" in readme and "**Note:** step 4 was" in readme
    summary = json.loads((out / "training_summary.json").read_text(encoding="utf-8"))
    assert summary["selection_warnings"] == record["selection_warnings"]
    loaded = Hydra(str(model_dir))
    assert loaded.encode_query(["a query"], task_card=a.card).shape == (1, 16)


def test_train_script_reports_a_bad_resume_in_one_line(recipe_script, data_dir, tmp_path, capsys, monkeypatch):
    from hydra_st.hydra.checkpoints import CheckpointError

    argv = ["--tasks", "adi", "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "out")]
    err = _fails(recipe_script, capsys, [*argv, "--resume-from", str(tmp_path / "nowhere")])
    assert "is not a Hydra checkpoint" in err
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for name in ("training_state.safetensors", "trainer_state.json"):
        (ckpt / name).write_text("", encoding="utf-8")

    def refuse(*args, **kwargs):
        raise CheckpointError(f"checkpoint {ckpt} was written by another run (training.seed is 1 there and 0 here)")

    monkeypatch.setattr(recipe_script, "load_base_model", lambda: object())
    monkeypatch.setattr(recipe_script, "load_tasks", lambda names, base, **kwargs: [])
    monkeypatch.setattr(recipe_script, "train_model", refuse)
    err = _fails(recipe_script, capsys, [*argv, "--resume-from", str(ckpt)])
    assert err.endswith(
        "--resume-from: checkpoint " + str(ckpt) + " was written by another run (training.seed is 1 there and 0 here)"
    )
