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


PLAIN = "plain"
"""``check_model``'s ``expected`` for a plain sentence-transformer (a bi-encoder of neither family)."""


def check_model(name: str, expected: str | None, command: str) -> None:
    """Fail early and clearly when ``--model`` does not exist or is of the wrong family for ``command``.

    Args:
        name: the ``--model`` value.
        expected: ``"hydra"``, ``"hypencoder"``, :data:`PLAIN` for a plain sentence-transformer only, or ``None``
            for anything but a Hydra model (Hypencoder or bi-encoder).
        command: the command that was run, for the message.

    Raises:
        FileNotFoundError: ``name`` looks like a path and does not exist.
        ValueError: the folder holds a model of another family; the message names the command that takes it.

    Example:
        >>> import pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "modules.json").write_text('[{"idx": 0, "path": "", "type": "hydra_head.HydraHead"}]')
        >>> check_model(str(folder), PLAIN, "hydra-st evaluate")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: --model ... is a Hydra model, which `hydra-st evaluate` cannot use: use `hydra-st hydra-evaluate`
    """
    if not Path(name).exists() and looks_like_path(name):
        raise FileNotFoundError(f"--model {name}: no such model folder; check the path")
    family = model_family(name)
    if family is None and not Path(name).is_dir():
        return  # a Hub id: the loader fetches it (or says why it cannot)
    if family == expected or (expected is None and family != "hydra") or (expected == PLAIN and family is None):
        return
    if family == "hydra":
        raise ValueError(f"--model {name} is a Hydra model, which `{command}` cannot use: use `{HYDRA_COMMAND}`")
    if family == "hypencoder":
        raise ValueError(
            f"--model {name} is a Hypencoder model, which `{command}` cannot use: use `{HYPENCODER_COMMAND}`"
        )
    if expected == "hypencoder":
        raise ValueError(f"--model {name} is not a saved Hypencoder model (no HyperHead in modules.json)")
    raise ValueError(f"--model {name} is not a saved Hydra model (no HydraHead in modules.json)")


FULL_DEPTH = 1000
"""The run depth of ``evaluate`` and ``hydra-evaluate`` (and MTEB's deepest cut-off): ``map`` is MAP@1000 there."""


def depth_caption(top_k: int) -> str | None:
    """The line printed under a metrics table whose runs are shallower than :data:`FULL_DEPTH`, else ``None``.

    ``map`` (and any metric deeper than the run) is computed over the documents a run holds, so it means MAP@top-k.

    Example:
        >>> depth_caption(100)
        'runs cut at top-k 100: map is MAP@100 (MAP@1000 at the default top-k 1000)'
        >>> depth_caption(1000) is None
        True
    """
    if top_k >= FULL_DEPTH:
        return None
    return f"runs cut at top-k {top_k}: map is MAP@{top_k} (MAP@{FULL_DEPTH} at the default top-k {FULL_DEPTH})"


def write_run_and_result(run: Any, result: Any, out_dir: Path, name: str) -> dict[str, float | str | None]:
    """Write ``<out_dir>/<name>.trec`` and ``<name>.json``; return the row for the printed table."""
    from hydra_st.evaluation import write_trec_run

    # the old result goes first: an interruption must never leave a new run beside the old run's metrics
    (out_dir / f"{name}.json").unlink(missing_ok=True)
    write_trec_run(run, out_dir / f"{name}.trec", tag=f"hydra_st-{name}")
    result.save(out_dir / f"{name}.json")
    return {"queries": str(result.num_queries), **result.aggregate}
