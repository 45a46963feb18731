"""``hydra-st``: the command-line entry point.

Each command group lives in its own module with a ``register(subparsers)`` function; this file only
collects them, so a command group that fails to import (a missing optional dependency) does not take the
others down.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
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
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (also: $HYDRA_ST_DEBUG=1)"
    )
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
    except user_errors() as exc:
        # Expected user errors (missing data, malformed or unreadable files, missing extras) get one clear line,
        # no traceback; --debug keeps the traceback for a bug report.
        if args.debug or os.environ.get("HYDRA_ST_DEBUG", "") not in ("", "0"):
            raise
        print(f"hydra-st {args.command}: error: {exc}", file=sys.stderr)
        return 1


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions ``main`` reports as one line: OSError covers missing, unreadable and existing-file errors."""
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, ImportError, json.JSONDecodeError)
    try:
        from safetensors import SafetensorError  # a damaged weights file, raised by the Rust reader

        errors = (*errors, SafetensorError)
    except ImportError:
        pass
    return errors


if __name__ == "__main__":
    sys.exit(main())
