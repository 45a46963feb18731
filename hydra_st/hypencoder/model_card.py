"""Model card (README.md) of a saved Hypencoder: architecture, q-net shape, usage, training and results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra_st.hub.model_cards import base_model_fields, hub_model_id, transformer_base_id
from hydra_st.hypencoder.base_reference import BaseModelReference
from hydra_st.hypencoder.config_checks import RUN_MECHANICS
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
{base_model_line}---

# {title}

A **Hypencoder** retrieval model built with [`hydra_st`](https://huggingface.co/hydra-st) on
{base_model}. A query is encoded into the parameters of a small neural network (its *q-net*); a document is
a {doc_dim}-d vector; the relevance score is the q-net applied to the document vector.

## Architecture

| part | value |
|---|---|
| transformer | {transformer} ({trainable}) |
| document route | {doc_route} |
| q-net widths (`vector_dimensions`) | `{dims}` |
| q-net blocks | {blocks} |
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
`SentenceTransformer("{model_id}", trust_remote_code=True)` loads the hyper-head from the installed package, and
its `on_model_ready` hook changes the loaded model's class to `hydra_st.hypencoder.Hypencoder` (same modules, so
`type(model) is Hypencoder`), whose `model.similarity` scores with the q-net (the `similarity_fn_name` saved in
the config is a placeholder: sentence-transformers only knows cosine/dot/euclidean/manhattan).

Large corpora: `hydra_st.retrieval.exhaustive_search` (chunked, exact) or `GraphSearcher` (neighbour-graph search),
or the CLI `hydra-st encode / build-graph / retrieve --mode exhaustive|graph`. Entry points from a faiss HNSW index
make graph search fastest (hydra_st's `evaluation/results/hypencoder_search.md`, at 100k documents: recall@10 0.995
against exhaustive at 35.5x lower latency; with reverse links too, 0.997 at 16.5x): `hydra-st build-graph
--reverse-edges 32 --faiss hnsw`, then `hydra-st retrieve --mode graph --index-seeds 1024 --entry-points 1024
--ncandidates 128`.

## Training

{training}

## Evaluation

{evaluation}{limitations}

## Citation

Killingback, Zeng, Zamani. *Hypencoder: Hypernetworks for Information Retrieval.* SIGIR 2025.
"""


def qnet_blocks(converter: Any) -> str:
    """The card's description of a q-net's hidden blocks, from the converter's settings.

    Example:
        >>> from hydra_st.hypencoder import QNetConverter
        >>> qnet_blocks(QNetConverter([8, 8, 8, 1]))
        'ReLU, non-affine LayerNorm, residual (not on the last block), bias-free output layer'
        >>> qnet_blocks(QNetConverter([8, 8, 1], activation="gelu", layer_norm=False, residual_on_last=True))
        'GELU, no LayerNorm, residual (on every block, the last included), bias-free output layer'
        >>> qnet_blocks(QNetConverter([8, 1]))
        'none: one bias-free linear layer (an inner product)'
    """
    if converter.num_hidden_layers == 0:
        return "none: one bias-free linear layer (an inner product)"
    parts = [
        {"relu": "ReLU", "gelu": "GELU"}.get(converter.activation, str(converter.activation)),
        "non-affine LayerNorm" if converter.layer_norm else "no LayerNorm",
    ]
    if not converter.residual:
        parts.append("no residual")
    elif converter.residual_on_last:
        parts.append("residual (on every block, the last included)")
    else:
        parts.append("residual (not on the last block)")
    return ", ".join([*parts, "bias-free output layer"])


def training_sources(config: dict[str, Any]) -> str:
    """What a training config trained on, for the card: train queries of ``datasets``, pseudo-queries of
    ``pseudo_query_datasets``, or both; "the train queries only" when the config names neither.

    Example:
        >>> text = training_sources({"datasets": [], "pseudo_query_datasets": ["adi", "med"]})
        >>> text.startswith("pseudo-queries made from the corpora of adi, med"), "train queries" in text
        (True, False)
        >>> training_sources({"datasets": ["scifact"], "split": "train"})
        'the train queries of scifact (positives from their train qrels); no test queries or test qrels were read'
    """
    datasets = list(config.get("datasets") or [])
    pseudo = list(config.get("pseudo_query_datasets") or [])
    if not datasets and not pseudo:
        return "the train queries only"
    split = config.get("split", "train")
    parts = []
    if datasets:
        positives = f"positives from their {split} qrels" if config.get("use_qrels", True) else "teacher positives"
        parts.append(f"the {split} queries of {', '.join(datasets)} ({positives})")
    if pseudo:
        per = f"up to {config['num_pseudo_queries']} per corpus: " if "num_pseudo_queries" in config else ""
        parts.append(
            f"pseudo-queries made from the corpora of {', '.join(pseudo)} ({per}a document's title or first sentence, "
            "with that document as its positive; no queries or qrels read)"
        )
    return " and ".join(parts) + "; no test queries or test qrels were read"


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
    # the base's Hub id, or none (a base known only as a local folder): the Hub links the card to base_model
    references = [m.base_model_id for m in model.modules() if isinstance(m, BaseModelReference)]
    candidates = [*map(hub_model_id, [*references, config.get("base_model")]), transformer_base_id(model)]
    base = next((found for found in candidates if found), None)
    if config:
        rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in config.items() if k not in RUN_MECHANICS)
        training = (
            f"MarginMSE (weight {config.get('margin_weight', 1.0)}) against RRF(BM25, dense) teacher margins, plus "
            f"in-batch cross-entropy (weight {config.get('in_batch_weight', 1.0)}), on {training_sources(config)}."
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
        **base_model_fields(base),
        doc_dim=conv.input_dim,
        transformer=type(transformers[0].auto_model).__name__ if transformers else "?",
        trainable="fine-tuned" if trainable else "frozen",
        doc_route=f"{getattr(pooling, 'pooling_mode', '?')} pooling" + (" + L2 normalise" if has_norm else ""),
        dims=conv.vector_dimensions,
        blocks=qnet_blocks(conv),
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
