"""Retrieval datasets in the BEIR layout, loaded into typed objects.

``files.py`` reads the three files of a BEIR folder strictly; ``beir.py`` finds a dataset by name or path and puts
them together into a :class:`RetrievalDataset`; ``download.py`` fetches an official BEIR dataset when online.
"""

from __future__ import annotations

from hydra_st.data.beir import (
    DatasetFormatError,
    Document,
    Qrels,
    Query,
    RetrievalDataset,
    available_splits,
    dataset_problem,
    load_beir_folder,
    load_corpus,
    load_dataset,
    load_dataset_corpus,
    load_qrels,
    load_queries,
)

__all__ = [
    "DatasetFormatError",
    "Document",
    "Qrels",
    "Query",
    "RetrievalDataset",
    "available_splits",
    "dataset_problem",
    "load_beir_folder",
    "load_corpus",
    "load_dataset",
    "load_dataset_corpus",
    "load_qrels",
    "load_queries",
]
