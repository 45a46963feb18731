"""Train a Hypencoder (or its matched bi-encoder) with MarginMSE + in-batch cross-entropy on teacher labels.

Training data (per dataset, train split only, plus pseudo-queries made from the corpora listed in
``pseudo_query_datasets``): the foundation's teachers BM25 and the dense base model are fused with RRF; each
query's fused top ``depth`` are its candidates, and the teacher score of a candidate is ``label_scale * RRF(d)``
plus ``label_scale / (rrf_k + 1)`` when the train qrels (or a pseudo-query's source) mark it relevant. A training
example is one positive (a relevant document, else the teacher's top document) and ``num_negatives`` documents
drawn from the candidates that are not relevant. No test qrels are read.

Frozen base (default on CPU): document vectors come from the DenseTeacher cache (with a frozen base,
Transformer -> mean Pooling -> Normalize *is* the teacher's embedding) and the query token states are computed once;
only the hyper-head trains. Trainable base: queries and documents go through the transformer at every step.
Query-side training (``query_side_only``, separate transformers): the query route's transformer trains with the
hyper-head while the document route stays the frozen base, so documents still come from the cache and only the
(short) queries go through a transformer at every step; this is affordable on a CPU.

The matched bi-encoder (``bi_encoder=True``) uses the same base, data, head, steps and loss; only its q-net is
``[d, 1]`` (one generated vector plus the skip vector, scored by inner product), so it runs under faiss.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from hydra_st.hypencoder.losses import hypencoder_loss
from hydra_st.hypencoder.model import Hypencoder
from hydra_st.hypencoder.qnet import QNetConverter
from hydra_st.hypencoder.training_data import (
    TeacherExamples,
    build_teacher_examples,
    document_vectors,
    query_token_states,
    query_transformer,
    route_modules,
    sample_batch,
)

logger = logging.getLogger(__name__)


@dataclass
class HypencoderTrainingConfig:
    """Settings of one training run (saved beside the model as ``training_config.json``).

    Example:
        >>> config = HypencoderTrainingConfig(datasets=["scifact"], qnet_hidden_layers=1, qnet_width=64)
        >>> config.check()
        >>> config.converter(hidden=384).vector_dimensions, config.uses_learned_skip
        ([384, 64, 1], True)
        >>> HypencoderTrainingConfig(bi_encoder=True).converter(384).vector_dimensions  # the matched bi-encoder
        [384, 1]
    """

    datasets: list[str] = field(default_factory=lambda: ["scifact", "nfcorpus"])
    split: str = "train"
    # Collections trained on pseudo-queries from their corpus (titles / first sentences), e.g. those without a train
    # split: ["cranfield", "med"]. Their relevant document is the one the pseudo-query came from.
    pseudo_query_datasets: list[str] = field(default_factory=list)
    num_pseudo_queries: int = 400
    base_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    bi_encoder: bool = False
    qnet_hidden_layers: int = 2
    qnet_width: int | None = None
    linear_skip: bool = True
    learned_skip: bool = True
    freeze_base: bool = True
    shared_transformer: bool = True
    # With freeze_base=False and shared_transformer=False: train the query transformer only (documents stay cached).
    query_side_only: bool = False
    document_pooling: str = "mean"
    steps: int = 1500
    batch_size: int = 32
    num_negatives: int = 7
    learning_rate: float = 1e-3
    # Learning-rate multiplier of the parameters that generate the q-net's layers, when the head has a learned skip
    # (whose generator keeps ``learning_rate``). No effect on the matched bi-encoder: its one layer is its linear term.
    qnet_lr_scale: float = 1.0
    base_learning_rate: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = 100
    margin_weight: float = 1.0
    in_batch_weight: float = 1.0
    depth: int = 100
    rrf_k: float = 60.0
    label_scale: float = 20.0
    use_qrels: bool = True
    balance_datasets: bool = True
    max_queries_per_dataset: int | None = None
    seed: int = 42
    device: str = "cpu"
    mixed_precision: str = "no"
    data_dir: str | None = None
    cache_dir: str | None = None

    @property
    def uses_learned_skip(self) -> bool:
        """Whether the hyper-head learns a skip correction: never for the bi-encoder, whose ``[h, 1]`` q-net weight
        already is that learned linear term (a second one would make it the larger model of the pair)."""
        return self.learned_skip and self.linear_skip and not self.bi_encoder

    def check(self) -> None:
        """Raise a ValueError naming the fix for settings that contradict each other."""
        if self.query_side_only and (self.freeze_base or self.shared_transformer):
            raise ValueError(
                "query_side_only trains the query route's own transformer: set freeze_base=False and "
                "shared_transformer=False (a shared transformer would change the cached document vectors too)"
            )
        if not self.qnet_lr_scale > 0:
            raise ValueError(
                f"qnet_lr_scale must be > 0 (1: the q-net layers learn at learning_rate), got {self.qnet_lr_scale}"
            )

    def converter(self, hidden: int) -> QNetConverter:
        if self.bi_encoder:
            return QNetConverter([hidden, 1], linear_skip=self.linear_skip)
        width = self.qnet_width or hidden
        return QNetConverter([hidden] + [width] * self.qnet_hidden_layers + [1], linear_skip=self.linear_skip)


def _head_parameter_groups(head: torch.nn.Module, config: HypencoderTrainingConfig) -> list[dict[str, Any]]:
    """The hyper-head's optimizer groups: one at ``learning_rate``, or, with ``qnet_lr_scale`` != 1 and a learned
    skip, the skip generator at ``learning_rate`` and the q-net layers' generators at ``learning_rate × scale``."""
    named = [(n, p) for n, p in head.named_parameters() if p.requires_grad]
    if config.qnet_lr_scale == 1.0 or not getattr(head, "learned_skip", False):
        return [{"params": [p for _, p in named], "lr": config.learning_rate}]
    skip = [p for n, p in named if n.startswith("skip_")]
    layers = [p for n, p in named if not n.startswith("skip_")]
    return [
        {"params": skip, "lr": config.learning_rate},
        {"params": layers, "lr": config.learning_rate * config.qnet_lr_scale},
    ]


def train_hypencoder(
    config: HypencoderTrainingConfig,
    output_path: str | Path | None = None,
    model: Hypencoder | None = None,
    data: list[TeacherExamples] | None = None,
    show_progress_bar: bool = True,
    validation: Callable[[Hypencoder], float] | None = None,
    eval_every: int = 50,
) -> tuple[Hypencoder, dict[str, Any]]:
    """Train and (optionally) save a Hypencoder or matched bi-encoder; returns the model and a log dict.

    With ``validation`` (a function of the model returning a score, higher is better; e.g.
    :func:`hydra_st.hypencoder.validation.validation_ndcg` on held-out *training* queries), the model is scored
    before training and every ``eval_every`` steps and the best hyper-head state is restored at the end (early
    stopping).
    """

    config.check()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    if model is None:
        from hydra_st.hub.offline import load_base_model

        base = load_base_model(config.base_model, device=config.device)
        transformer: Any = base[0]  # the q-net reads the transformer's hidden size
        hidden = transformer.get_embedding_dimension()
        model = Hypencoder.from_base(
            base,
            converter=config.converter(hidden),
            shared_transformer=config.shared_transformer,
            document_pooling=config.document_pooling,
            device=config.device,
            learned_skip=config.uses_learned_skip,
        )
    model.freeze_transformer(config.freeze_base)
    if config.query_side_only:
        document_transformer = route_modules(model, "document")[0]
        if document_transformer is query_transformer(model):
            raise ValueError(
                "query_side_only needs a transformer per route: build the model with "
                "Hypencoder.from_base(..., shared_transformer=False)"
            )
        document_transformer.requires_grad_(False)
    cached_docs = config.freeze_base or config.query_side_only
    if data is None:
        sources = [(n, config.split) for n in config.datasets] + [(n, "pseudo") for n in config.pseudo_query_datasets]
        data = [
            build_teacher_examples(
                n,
                split,
                config.depth,
                config.rrf_k,
                config.label_scale,
                base_model=config.base_model,
                data_dir=config.data_dir,
                cache_dir=config.cache_dir,
                max_queries=config.max_queries_per_dataset,
                use_qrels=config.use_qrels,
                show_progress_bar=show_progress_bar,
                num_pseudo_queries=config.num_pseudo_queries,
            )
            for n, split in sources
        ]
    head = model.hyper_head
    converter = model.converter
    if cached_docs:  # frozen document route: cached document vectors (DenseTeacher cache)
        doc_vecs = [
            document_vectors(model, ex.doc_ids, ex.doc_texts, config.cache_dir, show_progress_bar) for ex in data
        ]
    if config.freeze_base:  # frozen query route too: query token states computed once
        token_cache = [query_token_states(model, ex.query_texts) for ex in data]
        t_all = max(states.shape[1] for states, _ in token_cache)  # one padded length across datasets
        token_cache = [
            (F.pad(states, (0, 0, 0, t_all - states.shape[1])), F.pad(mask, (0, t_all - mask.shape[1])))
            for states, mask in token_cache
        ]
    groups = _head_parameter_groups(head, config)
    if not config.freeze_base:
        base_params = [p for t in model.transformers() for p in t.parameters() if p.requires_grad]
        groups.append({"params": base_params, "lr": config.base_learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps)))
    accelerator = _accelerator(config)
    examples = [(d, q) for d, ex in enumerate(data) for q in range(len(ex.query_ids))]
    if not examples:
        raise ValueError("no training examples: check that the datasets have train queries with teacher candidates")
    log: dict[str, Any] = {"config": asdict(config), "num_queries": len(examples), "losses": []}
    best = _validate(model, validation, 0, None, log) if validation is not None else None
    model.train()
    start = time.perf_counter()
    bar = tqdm(
        range(config.steps),
        desc="train " + ("bi-encoder" if config.bi_encoder else "hypencoder"),
        disable=not show_progress_bar,
    )
    running = None
    for step in bar:
        batch = sample_batch(
            examples, data, config.batch_size, config.num_negatives, rng, balance=config.balance_datasets
        )
        teacher_scores = torch.from_numpy(np.stack([b[3] for b in batch])).to(model.device)
        with accelerator.autocast():
            if config.freeze_base:
                qs = [(b[0], b[1]) for b in batch]
                t_max = max(int(token_cache[d][1][q].sum()) for d, q in qs)
                tokens = torch.stack([token_cache[d][0][q, :t_max] for d, q in qs]).to(model.device)
                mask = torch.stack([token_cache[d][1][q, :t_max] for d, q in qs]).to(model.device)
                qnets = converter.pack(head.generate(tokens, mask))
            else:
                texts = [data[b[0]].query_texts[b[1]] for b in batch]
                features = _to(model.preprocess(texts, task="query"), model.device)
                qnets = model({**features, "task": "query"})["sentence_embedding"]
            if cached_docs:
                docs = torch.stack([doc_vecs[b[0]][torch.from_numpy(b[2])] for b in batch]).to(model.device)
            else:
                doc_texts = [data[b[0]].doc_texts[int(i)] for b in batch for i in b[2]]
                enc = model({**_to(model.preprocess(doc_texts, task="document"), model.device), "task": "document"})[
                    "sentence_embedding"
                ]
                docs = enc.view(len(batch), -1, enc.shape[-1])
            loss, parts = hypencoder_loss(
                converter, qnets, docs, teacher_scores, config.margin_weight, config.in_batch_weight
            )
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        optimizer.step()
        scheduler.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {step}; lower the learning rate")
        running = value if running is None else 0.98 * running + 0.02 * value
        if step % 50 == 0 or step == config.steps - 1:
            log["losses"].append({"step": step, "loss": value, **parts})
            bar.set_postfix(loss=f"{running:.4f}")
        if validation is not None and ((step + 1) % eval_every == 0 or step == config.steps - 1):
            best = _validate(model, validation, step + 1, best, log)
    log["train_seconds"] = time.perf_counter() - start
    if validation is not None and best is not None:
        model.load_state_dict(best[2])
        log["best_step"], log["best_validation"] = best[0], best[1]
    model.eval()
    if output_path is not None:
        from hydra_st.hypencoder.model_card import save_with_card
        from hydra_st.utils.io import atomic_write_json

        save_with_card(model, output_path, config=asdict(config))
        atomic_write_json(Path(output_path) / "training_log.json", log)
    return model, log


def _validate(
    model: Hypencoder, validation: Callable[[Hypencoder], float], step: int, best: Any, log: dict[str, Any]
) -> Any:
    model.eval()
    with torch.no_grad():
        score = float(validation(model))
    model.train()
    log.setdefault("validation", []).append({"step": step, "score": score})
    if best is None or score > best[1]:
        return (step, score, {k: v.detach().clone() for k, v in model.state_dict().items()})
    return best


def _accelerator(config: HypencoderTrainingConfig) -> Any:
    """A single-process ``accelerate.Accelerator`` for autocast (``mixed_precision`` bf16/fp16) and backward."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=config.device == "cpu", mixed_precision=config.mixed_precision)
    if accelerator.num_processes > 1:
        raise ValueError(
            "train_hypencoder runs in one process (one GPU or the CPU); launch it without multi-process "
            "accelerate/torchrun, or use HypencoderLoss with SentenceTransformerTrainer for data parallelism"
        )
    return accelerator


def _to(features: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in features.items()}


def main(argv: list[str] | None = None) -> int:
    """``python -m hydra_st.hypencoder.training --config recipe.yaml [--bi-encoder] --output DIR [key=value ...]``."""
    import argparse

    import yaml

    parser = argparse.ArgumentParser(description="Train a Hypencoder (or, with --bi-encoder, its matched bi-encoder).")
    parser.add_argument("--config", help="YAML recipe with HypencoderTrainingConfig fields")
    parser.add_argument("--bi-encoder", action="store_true", help="train the matched inner-product bi-encoder")
    parser.add_argument("--output", required=True, help="where to save the trained model")
    parser.add_argument("overrides", nargs="*", help="field=value overrides, e.g. steps=100 freeze_base=false")
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        values.update(yaml.safe_load(Path(args.config).read_text()) or {})
    for item in args.overrides:
        key, _, raw = item.partition("=")
        values[key] = yaml.safe_load(raw)
    known = set(HypencoderTrainingConfig.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
    config = HypencoderTrainingConfig(**values)
    if args.bi_encoder:
        config.bi_encoder = True
    train_hypencoder(config, output_path=args.output)
    print(f"saved to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
