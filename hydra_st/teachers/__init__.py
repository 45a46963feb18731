"""The teachers Hydra distils and the baselines every result is compared with.

* :class:`BM25Teacher`: lexical BM25 through bm25s, with stemming and stop words.
* :class:`DenseTeacher`: a frozen sentence-transformer whose corpus embeddings are cached on disk.
* :func:`reciprocal_rank_fusion`: RRF of any number of runs.
"""

from __future__ import annotations

from hydra_st.teachers.bm25 import BM25Teacher
from hydra_st.teachers.dense import DenseTeacher
from hydra_st.teachers.fusion import Run, reciprocal_rank_fusion

__all__ = ["BM25Teacher", "DenseTeacher", "Run", "reciprocal_rank_fusion"]
