"""Atomic file writes, and strict reads of the files hydra_st reads back.

Everything hydra_st writes to disk (embeddings, indexes, graphs, runs, results, checkpoints) goes through
these helpers: the data is written to a temporary file in the same folder, flushed, fsynced and renamed over
the target, so a crash or a full disk never leaves a half-written file where a good one was. The temporary file of
a process killed mid-write is removed by a later write of the same file (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np


def _apply_umask(path: str) -> None:
    # mkstemp creates files 0600; give the finished file the permissions a plain open() would (0666 & ~umask),
    # so published models and results are readable by others as usual.
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


STALE_TEMPORARY_AGE_S = 600
"""A temporary sibling untouched this long, whose writer process on this host is gone, is removed (see
:func:`remove_stale_temporaries`)."""


def _host_tag() -> str:
    # no dots, so that the file name splits unambiguously into target, host, pid and mkstemp's random part
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname() or "host")[:64]


def _temporary_prefix(target: Path) -> str:
    """``.<name>.<host>.<pid>.``: which process on which host writes this temporary file."""
    return f".{target.name}.{_host_tag()}.{os.getpid()}."


def _process_is_gone(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) is a liveness probe only on POSIX (on Windows it sends Ctrl-C)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, under another user
        return False
    return False


def remove_stale_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Remove what a killed process left beside ``target``: a temporary file of :func:`atomic_open`, or a staging or
    set-aside folder of :func:`replace_folder`.

    A crash that Python sees removes its own temporaries; a ``SIGKILL`` (the out-of-memory killer, a job scheduler)
    cannot, and an interrupted write of a large embedding matrix or model would stay on disk as a hidden
    ``.<name>.<host>.<pid>.*.tmp`` (or ``*.old``) sibling. Such a sibling is removed only when all of these hold:
    this host wrote it, its process no longer runs, and it is older than :data:`STALE_TEMPORARY_AGE_S` (a live
    writer keeps it fresh). A folder is removed only while ``target`` itself is a folder: a kill between the two
    renames of :func:`replace_folder` leaves no ``target``, and its siblings then hold the only copies. Anything else
    (another host's file on a shared disk, an older name without a process id, a file this user may not delete) is
    left alone. :func:`atomic_open` and :func:`staging_folder` call this before each write.

    Returns:
        The paths removed.
    """
    target = Path(target)
    pattern = re.compile(re.escape(f".{target.name}.{_host_tag()}.") + r"(\d+)\.[^.]+\.(tmp|old)")
    removed: list[Path] = []
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return removed
    now = time.time()
    for path in siblings:
        match = pattern.fullmatch(path.name)
        if not match or int(match.group(1)) == os.getpid() or not _process_is_gone(int(match.group(1))):
            continue
        try:
            if now - path.stat().st_mtime <= STALE_TEMPORARY_AGE_S:
                continue
            if path.is_file() and match.group(2) == "tmp":
                path.unlink()
            elif path.is_dir() and not path.is_symlink() and target.is_dir():
                shutil.rmtree(path)
            else:
                continue
            removed.append(path)
        except OSError:  # gone already, or not ours to delete
            continue
    return removed


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing and rename it over ``path`` on success.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_open(target, "w") as f:
        ...     _ = f.write("hello")
        >>> target.read_text()
        'hello'
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', not {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    fd, tmp_name = tempfile.mkstemp(prefix=_temporary_prefix(target), suffix=".tmp", dir=target.parent)
    _apply_umask(tmp_name)
    try:
        handle: IO[Any] = os.fdopen(fd, mode, encoding="utf-8") if mode == "w" else os.fdopen(fd, "wb")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """Serialise ``obj`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, sort_keys=False) + "\n")


def atomic_save_numpy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save ``array`` in ``.npy`` format atomically (never pickled: object arrays are refused)."""
    if array.dtype == object:
        raise TypeError("refusing to save an object array: it would need pickle")
    with atomic_open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def load_numpy(path: str | os.PathLike[str], mmap: bool = False) -> np.ndarray:
    """Load a ``.npy`` file without ever unpickling; a damaged file raises ``ValueError`` naming it (callers add
    how to rebuild it: caches re-encode, stores name the command)."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npy array ({exc})") from exc


def atomic_save_safetensors(
    path: str | os.PathLike[str], tensors: dict[str, Any], metadata: dict[str, str] | None = None
) -> None:
    """Save a dict of torch tensors as safetensors atomically."""
    from safetensors.torch import save

    payload = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, payload)


def staging_folder(target: str | os.PathLike[str]) -> Path:
    """A new, empty sibling folder of ``target`` to build its replacement in (see :func:`replace_folder`).

    It gets the permissions a plain ``mkdir`` would give (``mkdtemp`` makes folders 0700), so a published model
    folder stays readable by others. Its name, ``.<name>.<host>.<pid>.*.tmp``, lets a later save remove it if this
    process is killed (:func:`remove_stale_temporaries`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    staging = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target), suffix=".tmp", dir=target.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(staging, 0o777 & ~mask)
    return staging


def replace_folder(staging: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Rename the finished folder ``staging`` to ``target``, so that ``target`` is always a whole folder.

    An existing ``target`` is renamed aside first, put back if the rename fails, and deleted only once
    ``staging`` is in place: a crash leaves the old folder or the new one at ``target``, and at worst a
    ``.<name>.*`` sibling that the next save removes. Only a kill between the two renames leaves no ``target``; the
    old folder is then the ``*.old`` sibling and the new one the ``*.tmp`` sibling, and both are kept. On failure
    ``staging`` is left for the caller to remove.

    Example:
        >>> import pathlib, tempfile
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "model"
        >>> target.mkdir(); _ = (target / "v").write_text("old")
        >>> staging = staging_folder(target); _ = (staging / "v").write_text("new")
        >>> replace_folder(staging, target)
        >>> (target / "v").read_text(), staging.exists()
        ('new', False)
    """
    staging, target = Path(staging), Path(target)
    if not target.exists():
        os.replace(staging, target)
        return
    old = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target), suffix=".old", dir=target.parent))
    os.replace(target, old)  # onto the new, empty folder: a rename, nothing is deleted yet
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old)


@contextmanager
def replacing_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a replacement for the folder ``target`` in the yielded staging folder; it replaces ``target`` when the
    block ends without error (:func:`replace_folder`), and is removed when it raises, leaving ``target`` as it was.

    Example:
        >>> import pathlib, tempfile
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "checkpoint-1"
        >>> with replacing_folder(target) as folder:
        ...     _ = (folder / "state.json").write_text("{}")
        >>> sorted(p.name for p in target.iterdir())
        ['state.json']
    """
    staging = staging_folder(target)
    try:
        yield staging
        replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class DuplicateKeyError(ValueError):
    """A JSON object names one key twice; :func:`reject_duplicate_keys` raises it, callers name the file."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for ``json.loads``: a key given twice raises instead of keeping the last value.

    Example:
        >>> json.loads('{"a": 1, "a": 2}', object_pairs_hook=reject_duplicate_keys)
        Traceback (most recent call last):
        ...
        hydra_st.utils.io.DuplicateKeyError: duplicate key 'a'
    """
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise DuplicateKeyError(key)
        record[key] = value
    return record
