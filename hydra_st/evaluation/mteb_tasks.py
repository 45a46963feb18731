"""Local BEIR-layout datasets as MTEB retrieval tasks (needs the ``mteb`` extra).

MTEB's built-in tasks download their data from the Hub. :func:`beir_retrieval_task` wraps a dataset that
hydra_st loads from the data dir, so any sentence-transformers model (including ``Hydra`` and ``Hypencoder``,
whose ``similarity`` MTEB calls) is evaluated by MTEB's own retrieval protocol on local files.

Example:
    >>> import mteb  # doctest: +SKIP
    >>> from hydra_st.hub import load_base_model
    >>> model = load_base_model("sentence-transformers/all-MiniLM-L6-v2")  # or a Hydra / Hypencoder  # doctest: +SKIP
    >>> task = beir_retrieval_task("scifact", data_dir="/path/to/beir")  # doctest: +SKIP
    >>> results = mteb.evaluate(model, task, cache=None)  # doctest: +SKIP
    >>> results.task_results[0].get_score()  # nDCG@10  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

from hydra_st.data import RetrievalDataset, load_dataset
from hydra_st.utils.imports import require


def _to_camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))


def beir_retrieval_task(
    dataset: str | RetrievalDataset,
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
    description: str | None = None,
) -> Any:
    """Build an MTEB ``AbsTaskRetrieval`` instance over a local BEIR-layout dataset.

    Args:
        dataset: a dataset name under the data dir, a folder path, or an already loaded dataset.
        split: the qrels split to evaluate; only its judged queries are used, as BEIR does.
        data_dir: the data dir for a dataset given by name.
        description: the task description MTEB records (a task card's description fits here).
    """
    require("mteb", extra="mteb")
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata

    ds = dataset if isinstance(dataset, RetrievalDataset) else load_dataset(dataset, split=split, data_dir=data_dir)
    metadata = TaskMetadata(
        name=f"HydraST{_to_camel(ds.name)}Retrieval",
        dataset={"path": f"local/{ds.name}", "revision": "local"},
        description=description or f"{ds.name} ({ds.split} split) loaded from a local BEIR-layout folder by hydra_st.",
        reference=None,
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=[ds.split],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10",
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation=None,
    )

    class LocalBEIRRetrieval(AbsTaskRetrieval):
        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            if self.data_loaded:
                return
            corpus = Dataset.from_list([{"id": d.id, "title": d.title, "text": d.text} for d in ds.corpus.values()])
            queries = Dataset.from_list([{"id": q.id, "text": q.text} for q in ds.judged_queries.values()])
            split_data = RetrievalSplitData(corpus=corpus, queries=queries, relevant_docs=ds.qrels, top_ranked=None)
            self.dataset = {"default": {ds.split: split_data}}
            self.data_loaded = True

    LocalBEIRRetrieval.metadata = metadata
    LocalBEIRRetrieval.__name__ = metadata.name
    return LocalBEIRRetrieval()
