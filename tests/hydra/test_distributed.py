"""The Hydra recipe under torchrun with two processes (gloo on CPU), as the training recipes' README shows it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_two_process_training_saves_one_model(beir_data_dir, minilm, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    recipe = ROOT / "training_recipes" / "hydra" / "recipe.yaml"
    env = {**os.environ, "HYDRA_ST_DATA_DIR": str(beir_data_dir), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    script = ROOT / "training_recipes" / "hydra" / "train.py"
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", str(script), "--recipe", str(recipe),
           "--tasks", "adi", "--epochs", "1", "--output-dir", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("saved to") == 1  # only the main process saves
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["steps"] > 0 and (tmp_path / "out" / "model" / "modules.json").is_file()
    # one line a step, its loss the mean over both processes' batches (the reduce is a collective: no hang)
    logged = [json.loads(line) for line in (tmp_path / "out" / "training" / "loss_log.jsonl").read_text().splitlines()]
    steps = [entry for entry in logged if "loss" in entry]
    assert [entry["step"] for entry in steps] == list(range(1, summary["steps"] + 1))
    assert all(entry["loss"] == entry["loss"] for entry in steps)  # not NaN
