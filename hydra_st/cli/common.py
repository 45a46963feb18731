"""Arguments shared by several ``hydra-st`` commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` and ``--cache-dir``."""
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder holding BEIR-layout datasets (default: $HYDRA_ST_DATA_DIR or the cache)",
    )
    parser.add_argument(
        "--cache-dir", default=None, help="cache for embeddings and models (default: $HYDRA_ST_CACHE_DIR)"
    )


def write_run_and_result(run: Any, result: Any, out_dir: Path, name: str) -> dict[str, float | str | None]:
    """Write ``<out_dir>/<name>.trec`` and ``<name>.json``; return the row for the printed table."""
    from hydra_st.evaluation import write_trec_run

    write_trec_run(run, out_dir / f"{name}.trec", tag=f"hydra_st-{name}")
    result.save(out_dir / f"{name}.json")
    return {"queries": str(result.num_queries), **result.aggregate}
