from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval

from hydra_st.evaluation import RunFormatError, evaluate_run, format_table, parse_metric, read_trec_run, write_trec_run


def test_metrics_match_hand_computed_values() -> None:
    qrels = {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2, "d4": 1}}
    run = {"q1": {"d2": 3.0, "d1": 2.0, "d9": 1.0}, "q2": {"d3": 5.0, "d4": 4.0}}
    result = evaluate_run(qrels, run, metrics=["mrr@10", "recall@1", "ndcg@10", "map", "precision@2"])
    assert result.per_query["q1"]["mrr@10"] == pytest.approx(0.5)
    assert result.per_query["q2"]["mrr@10"] == pytest.approx(1.0)
    assert result.aggregate["recall@1"] == pytest.approx((0.0 + 0.5) / 2)
    assert result.per_query["q2"]["ndcg@10"] == pytest.approx(1.0)
    # q1: one relevant doc at rank 2 -> DCG = 1/log2(3), IDCG = 1
    assert result.per_query["q1"]["ndcg@10"] == pytest.approx(1 / 1.5849625, rel=1e-6)
    assert result.per_query["q1"]["map"] == pytest.approx(0.5)
    assert result.aggregate["precision@2"] == pytest.approx((0.5 + 1.0) / 2)
    assert result.num_queries == 2


def test_mrr_cutoff_is_respected() -> None:
    qrels = {"q": {"rel": 1}}
    run = {"q": {f"d{i}": float(100 - i) for i in range(12)} | {"rel": 0.5}}
    assert evaluate_run(qrels, run, ["mrr@10"]).aggregate["mrr@10"] == 0.0
    assert evaluate_run(qrels, run, ["mrr"]).aggregate["mrr"] == pytest.approx(1 / 13)


def test_missing_queries_count_as_zero_and_unjudged_are_ignored() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    run = {"q1": {"d1": 1.0}, "q_unjudged": {"d1": 1.0}}
    result = evaluate_run(qrels, run, ["ndcg@10"])
    assert result.aggregate["ndcg@10"] == pytest.approx(0.5)
    assert set(result.per_query) == {"q1", "q2"}


def test_bad_metric_names() -> None:
    with pytest.raises(ValueError, match="cannot parse metric"):
        parse_metric("ndcg@@10")
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metric("bogus@3")
    with pytest.raises(ValueError, match="qrels are empty"):
        evaluate_run({}, {"q": {"d": 1.0}})


def test_trec_run_roundtrip_and_result_json(tmp_path: Path) -> None:
    run = {"q1": {"d1": 0.25, "d2": 0.75}, "q2": {"d3": -1.5}}
    write_trec_run(run, tmp_path / "run.trec", tag="t")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines[0] == "q1 Q0 d2 1 0.75 t" and lines[1] == "q1 Q0 d1 2 0.25 t"
    assert read_trec_run(tmp_path / "run.trec") == run
    result = evaluate_run({"q1": {"d2": 1}}, run, ["ndcg@10"], metadata={"retriever": "x"})
    result.save(tmp_path / "res.json")
    assert '"retriever": "x"' in (tmp_path / "res.json").read_text()


def test_malformed_run_file(tmp_path: Path) -> None:
    (tmp_path / "bad.trec").write_text("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 nan? t\n")
    with pytest.raises(RunFormatError, match=r"bad\.trec:2: score 'nan\?' is not a number"):
        read_trec_run(tmp_path / "bad.trec")
    (tmp_path / "short.trec").write_text("q1 d1 0.5\n")
    with pytest.raises(RunFormatError, match=r"short\.trec:1"):
        read_trec_run(tmp_path / "short.trec")


def test_write_refuses_non_finite_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    write_trec_run({"q": {"d": 1.0}}, path)
    with pytest.raises(ValueError, match="non-finite"):
        write_trec_run({"q": {"d": float("nan")}}, path)
    assert read_trec_run(path) == {"q": {"d": 1.0}}  # the previous good file survives
    assert [p.name for p in tmp_path.iterdir()] == ["run.trec"]  # no temp file left behind


def test_format_table_marks_missing() -> None:
    text = format_table({"a": {"x": 0.5}}, ["x", "y"])
    assert text.splitlines()[-1] == "| a | 0.5000 | – |"


def test_paired_comparison_separates_signal_from_noise():
    from hydra_st.evaluation import paired_comparison

    rng = np.random.default_rng(0)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0, 1, 200))}
    same = paired_comparison(base, dict(base))
    assert same.mean_difference == 0 and same.p_value == 1.0 and same.ci_low == same.ci_high == 0
    better = {q: min(1.0, v + 0.05) for q, v in base.items()}
    clear = paired_comparison(better, base)
    assert clear.p_value < 0.001 and 0 < clear.ci_low < clear.mean_difference < clear.ci_high
    noisy = {q: v + float(rng.normal(0, 0.2)) for q, v in base.items()}  # no systematic difference
    unclear = paired_comparison(noisy, base)
    assert unclear.ci_low < 0 < unclear.ci_high or unclear.p_value > 0.01
    assert paired_comparison(noisy, base) == unclear  # seeded: the same report twice
    assert "CI" in str(clear) and "p < 0.001" in str(clear) and "p = 1.000" in str(same)
    assert set(clear.to_json()) >= {"mean_difference", "p_value"}


def test_paired_comparison_refuses_unpaired_input():
    from hydra_st.evaluation import paired_comparison

    with pytest.raises(ValueError, match="same queries"):
        paired_comparison({"a": 1.0, "b": 0.0}, {"a": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        paired_comparison({}, {})
    with pytest.raises(ValueError, match="confidence"):
        paired_comparison({"a": 1.0}, {"a": 0.0}, confidence=95)


def test_every_alias_of_one_measure_gets_its_value() -> None:
    # ir_measures reports RR@10 once; each name that spells it must be filled, not only the last one
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    run = {"q1": {"d1": 2.0}, "q2": {"d1": 3.0, "d2": 1.0}}
    result = evaluate_run(qrels, run, metrics=["mrr@10", "RR@10", "rr@10", "ndcg@10"])
    assert result.aggregate["mrr@10"] == result.aggregate["RR@10"] == result.aggregate["rr@10"] == pytest.approx(0.75)
    assert result.per_query["q2"] == pytest.approx({"mrr@10": 0.5, "RR@10": 0.5, "rr@10": 0.5, "ndcg@10": 0.6309298})
    assert list(evaluate_run(qrels, run, metrics=["map", "map"]).aggregate) == ["map"]  # a repeated name: one entry


def test_trec_run_scores_round_trip_exactly(tmp_path: Path) -> None:
    # two near-duplicate documents: rounded to 8 digits they tie, and trec_eval would break the tie by doc id
    qrels = {"q1": {"d1": 1}}
    run = {"q1": {"d1": 0.812345669, "d2": 0.812345671, "d3": float(np.float32(0.1))}, "q2": {"d4": 1e-300}}
    write_trec_run(run, tmp_path / "run.trec")
    back = read_trec_run(tmp_path / "run.trec")
    assert back == run  # bit for bit
    in_memory = evaluate_run(qrels, run, ["mrr@10"]).aggregate
    assert evaluate_run(qrels, back, ["mrr@10"]).aggregate == in_memory == {"mrr@10": 0.5}


def test_old_run_files_with_rounded_scores_still_read(tmp_path: Path) -> None:
    (tmp_path / "old.trec").write_text("q1 Q0 d2 1 0.81234567 hydra_st\nq1 Q0 d1 2 1.5e-05 hydra_st\n")
    assert read_trec_run(tmp_path / "old.trec") == {"q1": {"d2": 0.81234567, "d1": 1.5e-05}}


def test_mean_over_unjudged_queries_names_them() -> None:
    result = evaluate_run({"q1": {"d1": 1}}, {"q1": {"d1": 1.0}}, ["ndcg@10"])
    with pytest.raises(ValueError, match=r"none of the 2 given query ids \(e\.g\. \['x', 'y'\]\).*\['q1'\]"):
        result.mean_over(["y", "x"], "ndcg@10")


# ties: trec_eval's order (score descending, then doc id descending) for every metric, mrr@10 included


def test_mrr_at_10_breaks_a_tie_as_trec_eval_and_the_other_metrics_do() -> None:
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 1.0, "z": 1.0}}  # a tie: trec_eval ranks z (the larger id) first
    result = evaluate_run(qrels, run, metrics=["mrr@10", "precision@1", "RR"])
    reference = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run)["q"]["recip_rank"]
    assert result.aggregate == {"mrr@10": reference, "precision@1": 0.0, "RR": reference}
    assert reference == 0.5


def test_mrr_at_10_is_zero_when_a_tie_pushes_the_relevant_document_to_rank_11() -> None:
    # ten documents tie with the relevant "a"; trec_eval ranks all of them (larger ids) before it
    run = {"q": {"a": 1.0, **{f"b{i}": 1.0 for i in range(10)}}}
    assert evaluate_run({"q": {"a": 1}}, run, metrics=["mrr@10", "RR"]).aggregate == {"mrr@10": 0.0, "RR": 1 / 11}


def test_every_metric_agrees_with_pytrec_eval_on_runs_full_of_ties() -> None:
    rng = random.Random(0)
    docs = [f"d{i:02d}" for i in range(30)]
    qrels = {f"q{q}": {d: rng.choice([0, 1, 2]) for d in rng.sample(docs, 6)} for q in range(40)}
    # scores from a set of three values: nearly every rank is a tie
    run = {q: {d: float(rng.choice([0, 1, 2])) for d in rng.sample(docs, 25)} for q in qrels}
    ours = evaluate_run(qrels, run, metrics=["mrr@10", "ndcg@10", "precision@1", "recall@10", "map"]).per_query
    full = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank", "ndcg_cut.10", "P.1", "recall.10", "map"}).evaluate(
        run
    )
    for q in qrels:
        # trec_eval's reciprocal rank over the whole run, cut at 10: an independent reference for mrr@10
        rr = full[q]["recip_rank"]
        assert ours[q]["mrr@10"] == pytest.approx(rr if rr >= 1 / 10 else 0.0), q
        assert ours[q]["ndcg@10"] == pytest.approx(full[q]["ndcg_cut_10"]), q
        assert ours[q]["precision@1"] == pytest.approx(full[q]["P_1"]), q
        assert ours[q]["recall@10"] == pytest.approx(full[q]["recall_10"]), q
        assert ours[q]["map"] == pytest.approx(full[q]["map"]), q


@pytest.mark.parametrize(
    "scores",
    [
        {"a": 0.5 + 1e-12, "b": 0.5},  # equal as C floats: a tie that trec_eval breaks by doc id ("b" first)
        {"a": 1.0 + 2**-30, "b": 1.0},
        {"a": 1e308, "b": 1e300},  # both beyond float32's range: both +inf to trec_eval
        {"a": 0.5 + 1e-7, "b": 0.5},  # distinct as C floats: "a" first
    ],
)
def test_scores_are_compared_as_trec_eval_stores_them(scores) -> None:
    qrels, run = {"q": {"a": 1}}, {"q": scores}
    reference = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recip_rank"}).evaluate(run)["q"]
    ours = evaluate_run(qrels, run, metrics=["ndcg@10", "mrr@10"]).aggregate
    assert ours == pytest.approx({"ndcg@10": reference["ndcg_cut_10"], "mrr@10": reference["recip_rank"]})


def test_a_nan_score_in_a_run_in_memory_is_refused() -> None:
    # NaN has no place in any order: each provider would rank it differently
    with pytest.raises(ValueError, match=r"document 'd2' for query 'q1' is NaN"):
        evaluate_run({"q1": {"d1": 1}}, {"q1": {"d1": 1.0, "d2": float("nan")}}, metrics=["mrr@10"])


def test_a_written_run_ranks_tied_documents_as_trec_eval_scores_them(tmp_path: Path) -> None:
    run = {"q": {"a": 1.0, "z": 1.0, "b": 1.0 + 1e-12, "m": 3.0}}  # b ties with a and z in float32
    write_trec_run(run, tmp_path / "run.trec")
    ranked = [line.split()[2:4] for line in (tmp_path / "run.trec").read_text().splitlines()]
    assert ranked == [["m", "1"], ["z", "2"], ["b", "3"], ["a", "4"]]
    qrels = {"q": {"b": 1}}
    reference = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run)["q"]["recip_rank"]
    assert reference == 1 / 3  # the rank the file gives b is the one trec_eval scores
