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
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from hydra_st.hypencoder.checkpoints import (
    LoopState,
    check_identity,
    check_output_folder,
    data_fingerprint,
    frozen_fingerprint,
    read_checkpoint,
    remove_checkpoints,
    restore_checkpoint,
    save_checkpoint,
    save_run,
)
from hydra_st.hypencoder.config_checks import TrainingSetupError, check_machine, read_cli_settings
from hydra_st.hypencoder.encoding import document_vectors, route_modules
from hydra_st.hypencoder.losses import hypencoder_loss
from hydra_st.hypencoder.model import Hypencoder
from hydra_st.hypencoder.training_config import HypencoderTrainingConfig
from hydra_st.hypencoder.training_data import (
    TeacherExamples,
    build_teacher_examples,
    query_token_states,
    query_transformer,
    sample_batch,
)

logger = logging.getLogger(__name__)


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
    overwrite: bool = False,
) -> tuple[Hypencoder, dict[str, Any]]:
    """Train and (optionally) save a Hypencoder or matched bi-encoder; returns the model and a log dict.

    With ``validation`` (a function of the model returning a score, higher is better; e.g.
    :func:`hydra_st.hypencoder.validation.validation_ndcg` on held-out *training* queries), the model is scored
    before training and every ``eval_every`` steps and the best hyper-head state is restored at the end (early
    stopping).

    Every check that can fail without training (settings, machine, process count, output folder, the checkpoint to
    resume from) runs first, before any model, teacher or cache is built. With ``config.checkpoint_every``, the run
    writes ``<output_path>/checkpoints/checkpoint-<step>`` every that many steps, and ``config.resume_from``
    continues from one (see :mod:`hydra_st.hypencoder.checkpoints`).

    Args:
        config: the run's settings.
        output_path: where to save the model, its card, ``training_config.json`` and ``training_log.json``
            (not saved when ``None``).
        model: the model to train (default: built from ``config`` on ``config.base_model``).
        data: teacher examples per dataset (default: built from ``config`` with :func:`build_teacher_examples`).
        show_progress_bar: show progress bars.
        validation: early-stopping score of the model (see above), or ``None``.
        eval_every: steps between two validation scores.
        overwrite: replace a model (or another run's checkpoints) already in ``output_path``; without it such a
            folder is refused. The old content is replaced as a whole, and only once training has succeeded: the
            model is saved into a temporary sibling folder that is then renamed over ``output_path``.

    Returns:
        ``(model, log)``: the trained model (in eval mode) and a dict with the config, the number of training
        queries, ``losses`` (the loss, and its parts, of every step), ``train_seconds`` and, with ``validation``,
        the scores and the best step.

    Raises:
        TrainingSetupError: a bad setting, a machine that cannot run it, several processes, an output folder that
            holds a model (without ``overwrite``) or a checkpoint of another run; raised before any work.
        ValueError: no training examples.
        FloatingPointError: the loss became NaN or infinite.

    Example:
        >>> from hydra_st.hypencoder import HypencoderTrainingConfig, train_hypencoder
        >>> config = HypencoderTrainingConfig(datasets=["scifact"], steps=300, qnet_width=128)
        >>> model, log = train_hypencoder(config, output_path="outputs/hypencoder-scifact")  # doctest: +SKIP
        >>> log["losses"][-1]["step"]  # doctest: +SKIP
        299
    """

    config.check()
    check_machine(config)  # a GPU recipe on a CPU, fp16 on the CPU, several processes
    if config.checkpoint_every and output_path is None:
        raise TrainingSetupError("checkpoint_every needs an output folder for its checkpoints", "checkpoint_every")
    checkpoint = read_checkpoint(config.resume_from, config) if config.resume_from else None
    output = None if output_path is None else Path(output_path).resolve()
    if output is not None:
        check_output_folder(output, overwrite, checkpoint.path if checkpoint else None)
    if data is None and not config.datasets and not config.pseudo_query_datasets:
        raise TrainingSetupError("nothing to train on: datasets and pseudo_query_datasets are both empty", "datasets")
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
    trained = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps)))
    accelerator = _accelerator(config)
    # Prepared so that with fp16 the accelerator's gradient scaler unscales the gradients before they are clipped,
    # skips a step whose gradients overflowed (and the scheduler step with it) and updates its scale. Without a
    # scaler (fp32, bf16) the wrappers call the optimizer and scheduler unchanged.
    optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    examples = [(d, q) for d, ex in enumerate(data) for q in range(len(ex.query_ids))]
    if not examples:
        raise ValueError("no training examples: check that the datasets have train queries with teacher candidates")
    trained_ids = {id(p) for p in trained}
    names = [n for n, p in model.named_parameters() if id(p) in trained_ids]  # what a checkpoint holds
    identity: dict[str, Any] = {}
    if checkpoint is not None or config.checkpoint_every:
        identity = {"num_queries": len(examples), "data": data_fingerprint(data)}
        identity["eval_every"] = eval_every if validation is not None else None
        identity["frozen"] = frozen_fingerprint(model, names)
    carried: dict[str, Any] = dict(
        model=model, names=names, optimizer=optimizer, scheduler=scheduler, accelerator=accelerator, sampler=rng
    )
    if checkpoint is None:
        log: dict[str, Any] = {"config": asdict(config), "num_queries": len(examples), "losses": []}
        best = _validate(model, validation, 0, None, log, names) if validation is not None else None
        done, running, seconds = 0, None, 0.0
    else:
        check_identity(checkpoint, identity)
        resumed = restore_checkpoint(checkpoint, **carried)
        log, best, done, running, seconds = resumed.log, resumed.best, resumed.step, resumed.running, resumed.seconds
        log.pop("train_seconds", None)
        log["config"] = asdict(config)
        log.setdefault("resumed_from", []).append({"checkpoint": str(checkpoint.path), "step": done})
    # this run's checkpoints are in <output>/checkpoints: those it resumes from, or those it writes (see below)
    own_checkpoints = bool(checkpoint and output and checkpoint.path.resolve().is_relative_to(output))
    model.train()
    start = time.perf_counter()
    bar = tqdm(
        range(done, config.steps),
        initial=done,
        total=config.steps,
        desc="train " + ("bi-encoder" if config.bi_encoder else "hypencoder"),
        disable=not show_progress_bar,
    )
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
        accelerator.clip_grad_norm_(trained, 1.0)  # unscales fp16 gradients first
        optimizer.step()
        scheduler.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {step}; lower the learning rate")
        running = value if running is None else 0.98 * running + 0.02 * value
        log["losses"].append({"step": step, "loss": value, **parts})  # every step's loss
        bar.set_postfix(loss=f"{running:.4f}", refresh=False)
        if validation is not None and ((step + 1) % eval_every == 0 or step == config.steps - 1):
            best = _validate(model, validation, step + 1, best, log, names)
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            assert output is not None  # checked up front
            if not own_checkpoints:  # a replaced run's checkpoints (overwrite=True) must not mix with this run's
                remove_checkpoints(output)
                own_checkpoints = True
            state = LoopState(step + 1, log, best, running, seconds + time.perf_counter() - start)
            save_checkpoint(output, state, config=config, identity=identity, **carried)
    log["train_seconds"] = seconds + time.perf_counter() - start
    if validation is not None and best is not None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in best[2].items():
                params[name].copy_(value)
        log["best_step"], log["best_validation"] = best[0], best[1]
    model.eval()
    if output is not None:
        save_run(model, output, config, log, own_checkpoints)
    return model, log


def _validate(
    model: Hypencoder,
    validation: Callable[[Hypencoder], float],
    step: int,
    best: Any,
    log: dict[str, Any],
    names: list[str],
) -> Any:
    """Score the model on the validation queries; a better score than ``best`` becomes the new best, holding a copy
    of the trained parameters ``names`` only (the frozen ones never change)."""
    model.eval()
    with torch.no_grad():
        score = float(validation(model))
    model.train()
    log.setdefault("validation", []).append({"step": step, "score": score})
    if best is None or score > best[1]:
        params = dict(model.named_parameters())
        return (step, score, {n: params[n].detach().clone() for n in names})
    return best


def _accelerator(config: HypencoderTrainingConfig) -> Any:
    """A single-process ``accelerate.Accelerator`` for autocast (``mixed_precision`` bf16/fp16), backward, gradient
    clipping and (fp16) loss scaling."""
    from accelerate import Accelerator

    # the recipe decides device and precision (they are checked before anything loads); a launcher that asks for
    # another precision (accelerate launch --mixed_precision, or its config file) is overruled, and says so
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launcher and launcher != config.mixed_precision:
        logger.warning(
            "accelerate launch asked for mixed_precision=%s, the recipe says %s: training uses the recipe's (set "
            "mixed_precision=%s in the recipe or as an override to follow the launcher)",
            launcher,
            config.mixed_precision,
            launcher,
        )
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
    """``python -m hydra_st.hypencoder.training --config recipe.yaml [--bi-encoder] --output DIR [--overwrite]
    [--resume-from CHECKPOINT] [key=value ...]``.

    A bad setting, a machine that cannot run the recipe, an occupied output folder or a foreign checkpoint is
    reported in one line naming the recipe file or the override it came from (exit status 2), before any work.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Train a Hypencoder (or, with --bi-encoder, its matched bi-encoder).")
    parser.add_argument("--config", help="YAML recipe with HypencoderTrainingConfig fields")
    parser.add_argument("--bi-encoder", action="store_true", help="train the matched inner-product bi-encoder")
    parser.add_argument("--output", required=True, help="where to save the trained model")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a model already in --output, once training has succeeded"
    )
    parser.add_argument(
        "--resume-from", help="continue from this checkpoint (or from the latest checkpoint of this output folder)"
    )
    parser.add_argument("overrides", nargs="*", help="field=value overrides, e.g. steps=100 freeze_base=false")
    args = parser.parse_args(argv)
    sources: dict[str, str] = {}
    try:
        known = set(HypencoderTrainingConfig.__dataclass_fields__)
        config = HypencoderTrainingConfig(**read_cli_settings(args.config, args.overrides, known, sources))
        if args.bi_encoder:
            config.bi_encoder, sources["bi_encoder"] = True, "--bi-encoder"
        if args.resume_from:
            config.resume_from, sources["resume_from"] = args.resume_from, "--resume-from"
        config.check()
        train_hypencoder(config, output_path=args.output, overwrite=args.overwrite)
    except TrainingSetupError as exc:
        where = sources.get(exc.field or "")
        print(f"{parser.prog}: error: {where + ': ' if where else ''}{exc}", file=sys.stderr)
        return 2
    print(f"saved to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
