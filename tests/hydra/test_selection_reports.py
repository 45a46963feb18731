"""The results reports of evaluation/hydra_eval.py and hydra_ablation.py flag a run whose training kept step 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydra_st.hydra.pipeline import PipelineConfig, kept_untrained_note
from hydra_st.hydra.trainer import TrainingConfig
from tests.conftest import load_repo_script

FLAG = "training kept step 0 (no improvement on dev): Hydra equals the base model"


def _script(name: str):
    return load_repo_script(f"evaluation/{name}.py")


def test_kept_untrained_note():
    config = PipelineConfig()
    assert kept_untrained_note({"score": 0.0, "step": 0}, config) == FLAG
    assert kept_untrained_note({"score": 0.01, "step": 40}, config) is None
    assert kept_untrained_note(None, config) is None
    pca = PipelineConfig(out_dim=256, gated=False, training=TrainingConfig(init="pca"))
    assert "not a trained one" in kept_untrained_note({"score": 0.0, "step": 0}, pca)
    shifted = PipelineConfig(query_shift=True)
    assert "apart from the calibrated query shift" in kept_untrained_note({"score": 0.0, "step": 0}, shifted)


@pytest.mark.parametrize("step", [0, 40])
def test_hydra_eval_report_flags_a_kept_step_0_next_to_the_targets(tmp_path, monkeypatch, step):
    hydra_eval = _script("hydra_eval")
    scores = {"ndcg@10": 0.5}
    results = {t: {s: dict(scores) for s in ("base", "hydra", "hydra_wrong_card", "rrf_teacher")} for t in "ab"}

    def fake_pipeline(config, output_dir, **kwargs):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "hydra_results.md").write_text("| table |\n", encoding="utf-8")
        training = {"steps": 84, "best_dev": {"score": 0.0, "step": step}}
        return {"table": "", "results": results, "training": training, "train_sources": {"a": "x", "b": "y"}}

    monkeypatch.setattr(hydra_eval, "run_pipeline", fake_pipeline)
    out, res = tmp_path / "out", tmp_path / "results"
    assert hydra_eval.main(["--tasks", "a,b", "--no-loto", "--output-dir", str(out), "--results", str(res)]) == 0
    md = (res / "hydra.md").read_text(encoding="utf-8")
    targets = md.split("## Targets", 1)[1].split("## Tables", 1)[0]
    assert (f"- **{FLAG}**" in targets) == (step == 0)


def test_ablation_report_flags_each_variant_and_seed_that_kept_step_0():
    ablation = _script("hydra_ablation")
    tasks = ["a", "b"]

    def run(step):
        return {"ndcg@10": {"a": 0.5, "b": 0.4}, "best_dev": {"score": 0.0, "step": step}}

    results = {
        "tasks": tasks,
        "seeds": [0, 1],
        "reference": {"base": {"a": 0.5, "b": 0.4}, "rrf_teacher": {"a": 0.6, "b": 0.5}},
        "variants": {
            "default": {"label": "the published setup", "runs": {"0": run(0), "1": run(40)}},
            "head_256_pca": {"label": "pca", "runs": {"0": run(0), "1": run(0)}},
            "no_gate": {"label": "no gate", "runs": {"0": run(40), "1": run(80)}},
        },
        "wall_seconds": 1.0,
    }
    md = ablation.render(results, [])
    assert f"- **default, seed 0: {FLAG}**" in md
    assert "- **head_256_pca, seeds 0, 1: training kept step 0 (no improvement on dev): Hydra is its untrained" in md
    assert "no_gate, seed" not in md
