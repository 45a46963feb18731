"""QueryEmbeddingCache: a cache file that does not hold one finite float32 row per query is re-encoded, loudly."""

from __future__ import annotations

import numpy as np
import pytest

from hydra_st.hydra.tasks import QueryEmbeddingCache
from hydra_st.utils.io import atomic_save_numpy

IDS, TEXTS = ["q1", "q2"], ["why do cats purr", "dog breeds"]


class CountingBase:
    """A stand-in base model whose encode_query counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.progress_bars: list[bool] = []

    def get_embedding_dimension(self) -> int:
        return 3

    def encode_query(self, texts, **kwargs):
        self.calls += 1
        self.progress_bars.append(kwargs.get("show_progress_bar", True))
        return np.tile(np.array([[0.0, 0.6, 0.8]]), (len(texts), 1))


@pytest.mark.parametrize(
    "bad",
    [
        np.ones((3, 3), dtype=np.float32),  # a row count that does not match the queries
        np.ones((2, 3), dtype=np.float64),  # another dtype
        np.array([[np.nan, 0, 1], [0, 1, 0]], dtype=np.float32),  # damage that still parses
        np.ones(6, dtype=np.float32),  # not a matrix
    ],
)
def test_unusable_query_cache_is_re_encoded_with_a_warning(tmp_path, caplog, bad):
    base = CountingBase()
    cache = QueryEmbeddingCache(base, "toy-model", cache_dir=tmp_path)
    good = cache.encode(IDS, TEXTS)
    (path,) = cache.root.glob("*.npy")
    atomic_save_numpy(path, bad)
    with caplog.at_level("WARNING", logger="hydra_st.hydra.tasks"):
        again = cache.encode(IDS, TEXTS)
    assert base.calls == 2 and "re-encoding" in caplog.text and str(path) in caplog.text
    assert again.dtype == np.float32 and np.array_equal(again, good)
    assert np.array_equal(np.load(path), good)  # rewritten
    cache.encode(IDS, TEXTS)
    assert base.calls == 2  # and read from the cache again


def test_progress_bar_follows_the_setting(tmp_path):
    many = [f"q{i}" for i in range(501)]  # a bar is only worth showing for more than 500 queries
    base = CountingBase()
    QueryEmbeddingCache(base, "toy-model", cache_dir=tmp_path / "a").encode(many, many)
    QueryEmbeddingCache(base, "toy-model", cache_dir=tmp_path / "b", show_progress_bar=False).encode(many, many)
    QueryEmbeddingCache(base, "toy-model", cache_dir=tmp_path / "c").encode(IDS, TEXTS)
    assert base.progress_bars == [True, False, False]
