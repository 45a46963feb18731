"""evaluation/hydra_gate_rule.py: the held-out dev-half study that chose the default gate rule."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import load_repo_script
from tests.hydra.synthetic import make_task


@pytest.fixture(scope="module")
def study():
    return load_repo_script("evaluation/hydra_gate_rule.py")


def test_dev_halves_are_disjoint_complete_and_seeded(study):
    task, _ = make_task("alpha", 0, n_q=64)
    first, second = study.split_dev(task, seed=0)
    assert set(first.ids).isdisjoint(second.ids) and sorted(first.ids + second.ids) == sorted(task.dev.ids)
    assert first.embeddings.shape == (len(first), task.dev.embeddings.shape[1]) and set(first.qrels) == set(first.ids)
    again, _ = study.split_dev(task, seed=0)
    other, _ = study.split_dev(task, seed=1)
    assert again.ids == first.ids and other.ids != first.ids


def test_rules_follow_the_package_and_the_decision_follows_the_docstring(study):
    noisy, steady = np.array([0.3, -0.2, 0.0, -0.04]), np.array([0.02, 0.03, 0.01, 0.02])
    assert study.rule_opens("positive", noisy) and not study.rule_opens("confident", noisy)
    assert study.rule_opens("positive", steady) and study.rule_opens("confident", steady)
    assert not study.rule_opens("positive", np.zeros(0)) and not study.rule_opens("confident", np.zeros(0))

    def cell(gain_b, positive, confident):
        return {"gain_b": gain_b, "positive_open": positive, "confident_open": confident}

    # positive opens two gates, one of which loses on B; confident opens only the one that holds
    rows = [cell(-0.01, True, False), cell(0.004, True, True), cell(0.002, False, False)]
    summary = study.summarise(rows)
    assert summary["positive"]["open"] == 2 and summary["positive"]["heldout_losses"] == 1
    assert summary["confident"]["mean_heldout_gain"] == pytest.approx(0.004 / 3)
    assert summary["every gate open"]["open"] == 3 and summary["every gate open"]["heldout_losses"] == 1
    assert study.decide(summary) == "confident"
    # fewer losses, but a mean held-out gain more than TIE_MARGIN below positive's: the current rule stays
    rows = [cell(0.02, True, False), cell(-0.001, True, False), cell(0.0, False, False)]
    assert study.decide(study.summarise(rows)) == "positive"
