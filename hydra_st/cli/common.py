"""Arguments shared by several ``hydra-st`` commands."""

from __future__ import annotations

import argparse


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
