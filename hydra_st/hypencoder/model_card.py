"""Model card (README.md) of a saved Hypencoder: architecture, q-net shape, usage, training and results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra_st.utils.io import atomic_write_json, atomic_write_text

TEMPLATE = """---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
license: apache-2.0
tags:
- sentence-transformers
- hypencoder
- hydra_st
- q-net
base_model: {base_model}
---

# {title}

A **Hypencoder** retrieval model built with [`hydra_st`](https://huggingface.co/hydra-st) on
`{base_model}`. A query is encoded into the parameters of a small neural network (its *q-net*); a document is
a {doc_dim}-d vector; the relevance score is the q-net applied to the document vector.

## Architecture

| part | value |
|---|---|
| transformer | {transformer} ({trainable}) |
| document route | {doc_route} |
| q-net widths (`vector_dimensions`) | `{dims}` |
| q-net blocks | ReLU, non-affine LayerNorm, residual (not on the last block), bias-free output layer |
| linear skip term | {skip} |
| q-net parameters per query | {qnet_params:,} floats |
| hyper-head parameters | {head_params:,} |

## Usage

```python
from hydra_st.hypencoder import Hypencoder

model = Hypencoder("{model_id}")            # no trust_remote_code needed
q = model.encode_query(["what is a hypernetwork?"])
d = model.encode_document(["A hypernetwork writes the weights of another network.", "Bananas are yellow."])
print(model.similarity(q, d))                # q-net scores, shape [1, 2]
```

Plain sentence-transformers also works once `hydra_st` is installed:
`SentenceTransformer("{model_id}", trust_remote_code=True)` loads the hyper-head from the installed package and
its `on_model_ready` hook makes `model.similarity` score with the q-net (the `similarity_fn_name` saved in the
config is a placeholder: sentence-transformers only knows cosine/dot/euclidean/manhattan).

Large corpora: `hydra_st.retrieval.exhaustive_search` (chunked, exact) or `GraphSearcher` (neighbour-graph search),
or the CLI `hydra-st encode / build-graph / retrieve --mode exhaustive|graph`. The fastest graph setting measured
(hydra_st's `evaluation/results/hypencoder_search.md`: at 100k documents, recall@10 0.992 against exhaustive at 21.6x
lower latency) adds reverse links and entry points from a faiss HNSW index: `hydra-st build-graph --reverse-edges 32
--faiss hnsw`, then `hydra-st retrieve --mode graph --index-seeds 1024 --entry-points 1024 --ncandidates 128`.

## Training

{training}

## Evaluation

{evaluation}{limitations}

## Citation

Killingback, Zeng, Zamani. *Hypencoder: Hypernetworks for Information Retrieval.* SIGIR 2025.
"""


def comparison_table(comparison: dict[str, dict[str, float]], trained_on: list[str] | None = None) -> str:
    """A Markdown table ``dataset x system`` (``{dataset: {system: nDCG@10}}``), out-of-domain rows marked.

    Example:
        >>> print(comparison_table({"scifact": {"this model": 0.71, "zero-shot base": 0.65}}, ["scifact"]))
        | dataset (nDCG@10, test) | this model | zero-shot base |
        |---|---|---|
        | scifact | 0.7100 | 0.6500 |
    """
    systems = list(dict.fromkeys(name for row in comparison.values() for name in row))
    lines = [
        "| dataset (nDCG@10, test) | " + " | ".join(systems) + " |",
        "|---|" + "---|" * len(systems),
    ]
    for dataset, row in comparison.items():
        label = dataset if trained_on is None or dataset in trained_on else f"{dataset} (not trained on)"
        lines.append(f"| {label} | " + " | ".join(f"{row[s]:.4f}" if s in row else "–" for s in systems) + " |")
    return "\n".join(lines)


def render_model_card(
    model: Any,
    model_id: str = "path/to/model",
    config: dict[str, Any] | None = None,
    results: dict[str, Any] | None = None,
    comparison: dict[str, dict[str, float]] | None = None,
    limitations: str | None = None,
) -> str:
    """The README text of a Hypencoder.

    Args:
        model: The Hypencoder.
        model_id: Hub id or path shown in the usage snippet.
        config: Training settings (a table under "Training").
        results: ``{label: value}`` rows, used when there is no ``comparison``.
        comparison: ``{dataset: {system: nDCG@10}}``, e.g. this model beside its matched bi-encoder and the
            zero-shot base, so a reader can tell a gain from a loss; datasets outside ``config["datasets"]`` are
            marked as not trained on.
        limitations: Text of a "Limitations" section (omitted when ``None``).
    """
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    conv = model.converter
    head = model.hyper_head
    transformers = model.transformers()
    pooling = next((m for m in model.modules() if isinstance(m, Pooling)), None)
    has_norm = any(isinstance(m, Normalize) for m in model.modules())
    # The training config says what happened; requires_grad only when there is none (a reloaded model has every
    # parameter trainable again, which says nothing about how it was trained).
    config = config or {}
    if "freeze_base" in config:
        trainable = not config["freeze_base"]
    else:
        trainable = any(p.requires_grad for t in transformers for p in t.parameters())
    base = config.get("base_model") or getattr(model.model_card_data, "base_model", None) or "unknown"
    if config:
        rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in config.items() if k not in ("data_dir", "cache_dir"))
        training = (
            f"MarginMSE (weight {config.get('margin_weight', 1.0)}) against RRF(BM25, dense) teacher margins, plus "
            f"in-batch cross-entropy (weight {config.get('in_batch_weight', 1.0)}), on the train queries only."
            "\n\n| setting | value |\n|---|---|\n" + rows
        )
    else:
        training = "Untrained or converted checkpoint."
    if comparison:
        evaluation = comparison_table(comparison, config.get("datasets"))
    elif results:
        rows = "\n".join(f"| {k} | {v} |" for k, v in results.items())
        evaluation = "| dataset / metric | value |\n|---|---|\n" + rows
    else:
        evaluation = "No evaluation recorded."
    return TEMPLATE.format(
        title=Path(model_id).name,
        base_model=base,
        doc_dim=conv.input_dim,
        transformer=type(transformers[0].auto_model).__name__ if transformers else "?",
        trainable="fine-tuned" if trainable else "frozen",
        doc_route=f"{getattr(pooling, 'pooling_mode', '?')} pooling" + (" + L2 normalise" if has_norm else ""),
        dims=conv.vector_dimensions,
        skip=(
            "no"
            if not conv.linear_skip
            else "yes: the base query embedding"
            + (" plus a learned, query-dependent correction" if getattr(head, "learned_skip", False) else "")
        ),
        qnet_params=conv.num_parameters,
        head_params=sum(p.numel() for p in head.parameters()),
        model_id=model_id,
        training=training,
        evaluation=evaluation,
        limitations=f"\n\n## Limitations\n\n{limitations}" if limitations else "",
    )


def save_with_card(
    model: Any,
    output_path: str | Path,
    model_id: str | None = None,
    config: dict[str, Any] | None = None,
    results: dict[str, Any] | None = None,
    comparison: dict[str, dict[str, float]] | None = None,
    limitations: str | None = None,
) -> None:
    """``model.save`` followed by the Hypencoder README (and the training config as JSON); the card's arguments are
    those of :func:`render_model_card`."""
    output_path = Path(output_path)
    model.save(str(output_path))
    if config:
        atomic_write_json(output_path / "training_config.json", config)
    recorded = {**(results or {}), **({"comparison": comparison} if comparison else {})}
    if recorded:
        atomic_write_json(output_path / "results.json", recorded)
    text = render_model_card(model, model_id or output_path.name, config, results, comparison, limitations)
    atomic_write_text(output_path / "README.md", text)
