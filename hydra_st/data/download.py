"""Download official BEIR datasets into the data dir (needs network access)."""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from hydra_st.data.files import DatasetFormatError

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
BEIR_DATASETS = frozenset(
    {
        "msmarco", "trec-covid", "nfcorpus", "nq", "hotpotqa", "fiqa", "arguana", "webis-touche2020", "cqadupstack",
        "quora", "dbpedia-entity", "scidocs", "fever", "climate-fever", "scifact",
    }
)  # fmt: skip


def download_beir_dataset(name: str, data_dir: Path, url: str | None = None) -> Path:
    """Download and unpack ``name`` from the official BEIR location into ``data_dir/name``.

    The archive is downloaded and unpacked in a temporary folder beside the target and moved into place only
    when complete, so an interrupted download never leaves a partial dataset. An existing non-empty target is
    never replaced (it may hold the user's own files): that raises :class:`DatasetFormatError` instead.
    """
    if url is None and name not in BEIR_DATASETS:
        raise FileNotFoundError(
            f"dataset {name!r} is not under {data_dir} and is not an official BEIR dataset that could be downloaded "
            f"({', '.join(sorted(BEIR_DATASETS))}). Point --data-dir / HYDRA_ST_DATA_DIR at the folder holding it."
        )
    url = url or BEIR_URL.format(name=name)
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / name
    _refuse_non_empty(target)  # before downloading, so a refusal costs no download
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=data_dir) as tmp:
        archive = Path(tmp) / f"{name}.zip"
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"Downloading {name}") as bar:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, OSError) as exc:
            raise FileNotFoundError(
                f"dataset {name!r} is not under {data_dir} and downloading it from {url} failed ({exc}). "
                "Without network access, point --data-dir / HYDRA_ST_DATA_DIR at a local copy."
            ) from exc
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                # Refuse archive members that would escape the extraction folder.
                if member.startswith("/") or ".." in Path(member).parts:
                    raise ValueError(f"{url}: unsafe path {member!r} in archive")
            zf.extractall(tmp)
        extracted = Path(tmp) / name
        if not (extracted / "corpus.jsonl").is_file():
            raise ValueError(f"{url}: archive has no {name}/corpus.jsonl")
        _refuse_non_empty(target)  # again: something may have appeared there during the download
        if target.is_dir():
            target.rmdir()  # empty (checked above); rmdir rather than rmtree, so it can never delete a file
        # The temporary folder is a sibling, so this is a rename on one filesystem: the dataset appears whole.
        os.replace(extracted, target)
    return target


def _refuse_non_empty(target: Path) -> None:
    if target.is_symlink() or target.is_file() or (target.is_dir() and any(target.iterdir())):
        raise DatasetFormatError(
            target,
            "already exists and is not empty; refusing to download over it. Move it away (nothing in it is "
            "touched) to download the official dataset, or complete it by hand",
        )
