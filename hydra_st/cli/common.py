"""Arguments and checks shared by several ``hydra-st`` commands."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

HYDRA_COMMAND = "hydra-st hydra-evaluate"
HYPENCODER_COMMAND = "hydra-st retrieve (after hydra-st encode)"


def _whole_number(value: str, minimum: int, meaning: str = "") -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}{meaning}, got {number}")
    return number


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1 (a count or size where 0 would silently give empty results).

    Example:
        >>> positive_int("3")
        3
    """
    return _whole_number(value, 1)


def non_negative_int(value: str) -> int:
    """argparse type: an integer >= 0 (for options where 0 means "off").

    Example:
        >>> non_negative_int("0")
        0
    """
    return _whole_number(value, 0, " (0 turns it off)")


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


def looks_like_path(name: str) -> bool:
    """Whether a ``--model`` value can only be a local path (a Hub id is ``name`` or ``owner/name``)."""
    backslash = os.sep != "/" and os.sep in name
    return Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or backslash


def model_family(name: str) -> str | None:
    """``"hydra"``, ``"hypencoder"`` or ``None`` (a plain sentence-transformer or a Hub id) from a model folder.

    Read from ``modules.json`` (and the Router config and module folders, so a copy missing one file is still
    recognised), without loading anything.
    """
    path = Path(name)
    if not path.is_dir():
        return None
    texts = []
    for config in (path / "modules.json", *path.glob("*/router_config.json")):
        try:
            texts.append(json.dumps(json.loads(config.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue  # unreadable here: the model loader reports it with the file name
    found = " ".join(texts) + " " + " ".join(p.name for p in path.iterdir())
    if "HyperHead" in found or "BaseModelReference" in found or "base_model_reference.json" in found:
        return "hypencoder"
    if "HydraHead" in found:
        return "hydra"
    return None


def model_not_found(name: str, exc: OSError) -> FileNotFoundError:
    """The error for a ``--model`` that is neither a local folder nor loadable from the Hub."""
    return FileNotFoundError(
        f"--model {name}: no such local model folder, and it cannot be loaded as a Hub model id ({exc})"
    )


def check_model(name: str, expected: str | None, command: str) -> None:
    """Fail early and clearly when ``--model`` does not exist or is of the wrong family for ``command``.

    Args:
        name: the ``--model`` value.
        expected: ``"hydra"``, ``"hypencoder"``, or ``None`` for anything but a Hydra model (Hypencoder or
            bi-encoder).
        command: the command that was run, for the message.
    """
    if not Path(name).exists() and looks_like_path(name):
        raise FileNotFoundError(f"--model {name}: no such model folder; check the path")
    family = model_family(name)
    if family is None and not Path(name).is_dir():
        return  # a Hub id: the loader fetches it (or says why it cannot)
    if family == expected or (expected is None and family != "hydra"):
        return
    if family == "hydra":
        raise ValueError(f"--model {name} is a Hydra model, which `{command}` cannot use: use `{HYDRA_COMMAND}`")
    if family == "hypencoder":
        raise ValueError(
            f"--model {name} is a Hypencoder model, which `{command}` cannot use: use `{HYPENCODER_COMMAND}`"
        )
    raise ValueError(f"--model {name} is not a saved Hydra model (no HydraHead in modules.json)")


def write_run_and_result(run: Any, result: Any, out_dir: Path, name: str) -> dict[str, float | str | None]:
    """Write ``<out_dir>/<name>.trec`` and ``<name>.json``; return the row for the printed table."""
    from hydra_st.evaluation import write_trec_run

    # the old result goes first: an interruption must never leave a new run beside the old run's metrics
    (out_dir / f"{name}.json").unlink(missing_ok=True)
    write_trec_run(run, out_dir / f"{name}.trec", tag=f"hydra_st-{name}")
    result.save(out_dir / f"{name}.json")
    return {"queries": str(result.num_queries), **result.aggregate}
