"""``hydra-st``: the command-line entry point.

Each command group lives in its own module with a ``register(subparsers)`` function; this file only
collects them, so a command group that fails to import (a missing optional dependency) does not take the
others down.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "hydra_st.cli.evaluate_commands",
    "hydra_st.cli.hydra_commands",
    "hydra_st.cli.hypencoder_commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hydra-st",
        description="Hypernetwork retrieval models for sentence-transformers: baselines, Hydra and Hypencoder.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # the command group is not part of this install
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        # Expected user errors (missing data, malformed files, missing extras) get one clear line, no traceback.
        print(f"hydra-st {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
