"""Evaluation: IR metrics (through ir_measures / pytrec_eval), paired significance tests, TREC run files and result
tables."""

from __future__ import annotations

from hydra_st.evaluation.metrics import (
    DEFAULT_METRICS,
    TRAIN_OVERLAP_POOLS,
    EvaluationResult,
    evaluate_run,
    parse_metric,
    split_by_train_overlap,
)
from hydra_st.evaluation.runs import RunFormatError, read_trec_run, trec_eval_order, write_trec_run
from hydra_st.evaluation.significance import PairedComparison, format_p_value, paired_comparison
from hydra_st.evaluation.tables import format_table

__all__ = [
    "DEFAULT_METRICS",
    "TRAIN_OVERLAP_POOLS",
    "EvaluationResult",
    "PairedComparison",
    "RunFormatError",
    "evaluate_run",
    "format_table",
    "format_p_value",
    "paired_comparison",
    "parse_metric",
    "read_trec_run",
    "split_by_train_overlap",
    "trec_eval_order",
    "write_trec_run",
]
