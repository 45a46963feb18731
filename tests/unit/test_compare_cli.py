"""``hydra-st compare``: two TREC run files against one qrels split, with paired significance tests."""

from __future__ import annotations

import json

from hydra_st.cli.main import main
from hydra_st.evaluation import write_trec_run


def test_compare_reports_means_differences_and_p_values(toy_dataset_dir, tmp_path, capsys):
    good = {"q1": {"d1": 3.0, "d2": 1.0}, "q2": {"d2": 3.0, "d1": 1.0}, "q3": {"d3": 2.0}}
    bad = {"q1": {"d2": 3.0, "d1": 1.0}, "q2": {"d1": 3.0}, "q3": {"d3": 2.0}}  # q2 never finds d2
    write_trec_run(good, tmp_path / "a.trec")
    write_trec_run(bad, tmp_path / "b.trec")
    out = tmp_path / "cmp.json"
    args = ["compare", str(tmp_path / "a.trec"), str(tmp_path / "b.trec"), "--dataset", str(toy_dataset_dir)]
    assert main([*args, "--metrics", "ndcg@10", "recall@1", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 judged queries" in printed and "| recall@1 |" in printed
    report = json.loads(out.read_text())["metrics"]
    assert report["recall@1"]["a"] == 1.0 and report["recall@1"]["b"] == 1 / 3
    assert report["recall@1"]["mean_difference"] == 2 / 3 and report["recall@1"]["queries"] == 3
    assert 0 < report["recall@1"]["p_value"] <= 1 and report["ndcg@10"]["ci_high"] > 0


def test_compare_refuses_runs_of_another_dataset(toy_dataset_dir, tmp_path, capsys):
    write_trec_run({"other-q": {"d1": 1.0}}, tmp_path / "a.trec")
    write_trec_run({"q1": {"d1": 1.0}}, tmp_path / "b.trec")
    args = ["compare", str(tmp_path / "a.trec"), str(tmp_path / "b.trec"), "--dataset", str(toy_dataset_dir)]
    assert main(args) == 1
    assert "shares no query id" in capsys.readouterr().err
    (tmp_path / "a.trec").write_text("q1 Q0 d1 1\n")
    assert main(args) == 1
    assert "expected 'qid Q0 docid rank score tag'" in capsys.readouterr().err


def test_compare_warns_about_ids_the_dataset_does_not_have(toy_dataset_dir, tmp_path, caplog):
    import logging

    # q4 is a query without judgments, x1 no query of the dataset, d9 no document of its corpus
    write_trec_run(
        {"q1": {"d1": 2.0, "d9": 1.0}, "q2": {"d2": 1.0}, "q4": {"d4": 1.0}, "x1": {"d1": 1.0}}, tmp_path / "a.trec"
    )
    write_trec_run({"q1": {"d1": 1.0}, "q2": {"d2": 1.0}}, tmp_path / "b.trec")
    args = ["compare", str(tmp_path / "a.trec"), str(tmp_path / "b.trec"), "--dataset", str(toy_dataset_dir)]
    with caplog.at_level(logging.WARNING, logger="hydra_st.cli.evaluate_commands"):
        assert main([*args, "--resamples", "100"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the clean run b gets none
    assert "a.trec: 2 of its 4 queries have no judgments in the test qrels" in warnings[0]
    assert f"(1 of them not queries of {toy_dataset_dir} at all)" in warnings[0]
    assert "1 of its 4 documents are not in the corpus (e.g. d9)" in warnings[0]


def test_compare_refuses_a_run_most_of_whose_queries_are_another_datasets(toy_dataset_dir, tmp_path, capsys):
    # it shares q1 with the qrels, but two of its three queries are not queries of the dataset
    write_trec_run({"q1": {"d1": 1.0}, "x1": {"d1": 1.0}, "x2": {"d2": 1.0}}, tmp_path / "a.trec")
    write_trec_run({"q1": {"d1": 1.0}}, tmp_path / "b.trec")
    args = ["compare", str(tmp_path / "a.trec"), str(tmp_path / "b.trec"), "--dataset", str(toy_dataset_dir)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "2 of its 3 queries are not queries of" in err and "a run of another dataset" in err
