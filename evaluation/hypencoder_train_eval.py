"""Train a Hypencoder and its matched bi-encoder on scifact + nfcorpus train queries, evaluate nDCG@10 on test.

Both models: frozen all-MiniLM-L6-v2, the same hyper-head, teacher data (RRF(BM25, MiniLM) on train queries
only), steps, batch and loss (MarginMSE + in-batch CE). The Hypencoder's q-net has hidden layers; the bi-encoder's
q-net is ``[384, 1]``, i.e. an inner product. Both keep a linear skip term initialised to MiniLM's query embedding,
so both start exactly at frozen MiniLM (reported as the zero-shot row). The Hypencoder's skip vector also gets a
learned correction generated like the bi-encoder's ``[384, 1]`` weight (``--no-learned-skip`` turns it off), so its
q-net holds the bi-encoder's inner product plus the nonlinear layers. Test qrels are read only for evaluation.

Usage::

    python evaluation/hypencoder_train_eval.py --per-dataset        # the published comparison (about 5 minutes)
    python evaluation/hypencoder_train_eval.py --steps 20 --datasets scifact --out /tmp/smoke   # smoke run

With the default ``--out`` (the published results) this writes ``evaluation/results/hypencoder.{md,json}``, saves
the Hypencoder to ``models/hypencoder-minilm-l6``, its matched bi-encoder to ``outputs/bi-encoder-minilm-l6`` and
the models of the other training groups under ``outputs/``. With any other ``--out`` everything goes under it: the
tables into ``<out>``, the models into ``<out>/models/`` (``--model-out``, ``--bi-encoder-out`` and
``--other-models-dir`` override each), so a smoke run never replaces the published model. The tables and the model
cards' text are written by ``evaluation/hypencoder_report.py``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.hypencoder_report import card_summary, render  # noqa: E402
from hydra_st.cli.common import add_data_args  # noqa: E402
from hydra_st.data import available_splits, dataset_problem, load_dataset  # noqa: E402
from hydra_st.evaluation import (  # noqa: E402
    TRAIN_OVERLAP_POOLS,
    evaluate_run,
    paired_comparison,
    split_by_train_overlap,
)
from hydra_st.hypencoder.encoding import document_vectors, route_modules  # noqa: E402
from hydra_st.hypencoder.model_card import save_with_card  # noqa: E402
from hydra_st.hypencoder.training import HypencoderTrainingConfig, train_hypencoder  # noqa: E402
from hydra_st.hypencoder.training_data import build_teacher_examples  # noqa: E402
from hydra_st.hypencoder.validation import split_examples, validation_ndcg  # noqa: E402
from hydra_st.retrieval import exhaustive_search, to_run  # noqa: E402
from hydra_st.settings import set_default_dirs  # noqa: E402
from hydra_st.utils.io import atomic_write_json, atomic_write_text  # noqa: E402

METRICS = ("ndcg@10", "recall@100", "mrr@10")
RESULTS = ROOT / "evaluation" / "results"  # the published tables; only this --out also writes the published models


def model_outputs(
    out: str, model_out: str | None = None, bi_encoder_out: str | None = None, other_models_dir: str | None = None
) -> tuple[str, str, str]:
    """Where the Hypencoder, its bi-encoder and the other training groups' models are saved.

    With the published ``--out`` (``evaluation/results``): ``models/hypencoder-minilm-l6``,
    ``outputs/bi-encoder-minilm-l6`` and ``outputs/``, as the published run writes them. With any other ``--out``:
    under ``<out>/models/``, so a smoke run cannot overwrite the published model. A path given explicitly wins.

    Example:
        >>> model_outputs("/tmp/smoke")
        ('/tmp/smoke/models/hypencoder-minilm-l6', '/tmp/smoke/models/bi-encoder-minilm-l6', '/tmp/smoke/models')
    """
    if Path(out).resolve() == RESULTS.resolve():
        defaults = (
            ROOT / "models" / "hypencoder-minilm-l6",
            ROOT / "outputs" / "bi-encoder-minilm-l6",
            ROOT / "outputs",
        )
    else:
        models = Path(out) / "models"
        defaults = (models / "hypencoder-minilm-l6", models / "bi-encoder-minilm-l6", models)
    given = (model_out, bi_encoder_out, other_models_dir)
    hyp, bi, other = (str(g) if g is not None else str(d) for g, d in zip(given, defaults, strict=True))
    return hyp, bi, other


@functools.cache
def dataset(name: str, split: str):
    """One split of ``name``, read once per run: every model is scored on the same test split, and held-out
    selection and the pool split read the same train qrels."""
    return load_dataset(name, split=split)


def train_qrels(name: str) -> dict[str, dict[str, int]]:
    return dataset(name, "train").qrels


def evaluate_model(model, name: str, split: str = "test") -> tuple[dict[str, float], dict[str, float]]:
    """Aggregate metrics (see ``_metrics``) and per-query nDCG@10 of a trained model, q-net scoring."""
    ds = dataset(name, split)
    docs = document_vectors(model, ds.doc_ids, ds.doc_texts, show_progress_bar=False)
    queries = ds.judged_queries
    qids = sorted(queries)
    q = model.encode_query([queries[i].text for i in qids], convert_to_tensor=True, show_progress_bar=False)
    scores, idx = exhaustive_search(q, docs, top_k=100, scorer=model.similarity)
    return _metrics(name, ds.qrels, to_run(qids, ds.doc_ids, scores, idx))


def _metrics(name: str, qrels: dict, run: dict) -> tuple[dict[str, float], dict[str, float]]:
    """The aggregate metrics, plus nDCG@10 over the test queries whose relevant documents are (``train_pool``) or
    are not (``new_pool``) relevant to some train query: a gain on the first group alone is a document prior. Also
    each query's nDCG@10, for the paired comparison of the two models."""
    result = evaluate_run(qrels, run, metrics=METRICS)
    metrics = dict(result.aggregate)
    if "train" in available_splits(name):
        groups = split_by_train_overlap(qrels, train_qrels(name))
        for label, group in zip(TRAIN_OVERLAP_POOLS, groups, strict=True):
            if group:
                metrics[f"ndcg@10/{label}"] = result.mean_over(group, "ndcg@10")
                metrics[f"queries/{label}"] = len(group)
    return metrics, result.by_query("ndcg@10")


def evaluate_base(name: str, model) -> dict[str, float]:
    """Frozen MiniLM (cosine) with the same cached document vectors: the starting point of both students."""
    ds = dataset(name, "test")
    docs = document_vectors(model, ds.doc_ids, ds.doc_texts, show_progress_bar=False)
    queries = ds.judged_queries
    qids = sorted(queries)
    from sentence_transformers import SentenceTransformer

    # The document route is the frozen base (Transformer -> mean Pooling -> Normalize) in every training mode.
    st = SentenceTransformer(modules=route_modules(model, "document"), device="cpu")
    q = st.encode([queries[i].text for i in qids], convert_to_tensor=True, show_progress_bar=False)
    scores, idx = exhaustive_search(q, docs, top_k=100)
    return _metrics(name, ds.qrels, to_run(qids, ds.doc_ids, scores, idx))[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--datasets",
        default="scifact,nfcorpus",
        help="comma-separated datasets with train and test splits (default: scifact,nfcorpus)",
    )
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per model (default: 300)")
    parser.add_argument("--batch-size", type=int, default=32, help="queries per step (default: 32)")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate of the hyper-head (default: 1e-4)")
    parser.add_argument(
        "--qnet-width", type=int, default=128, help="width of the q-net's hidden blocks (default: 128)"
    )
    parser.add_argument(
        "--qnet-layers", type=int, default=2, help="hidden blocks of the Hypencoder's q-net (default: 2)"
    )
    parser.add_argument(
        "--label-scale", type=float, default=20.0, help="teacher label scale: label_scale × RRF score (default: 20)"
    )
    parser.add_argument(
        "--num-negatives", type=int, default=7, help="teacher negatives per query and step (default: 7)"
    )
    parser.add_argument(
        "--weight-decay", type=float, default=0.0, help="AdamW weight decay of the trained parts (default: 0)"
    )
    parser.add_argument(
        "--in-batch-weight", type=float, default=0.0, help="weight of the in-batch cross-entropy loss (default: 0)"
    )
    parser.add_argument(
        "--qnet-lr-scale",
        type=float,
        default=1.0,
        help="learning-rate multiplier of the Hypencoder's q-net layer generators (its learned skip keeps --lr)",
    )
    parser.add_argument(
        "--seed", type=int, default=42, help="seed of sampling, splits and initialisation (default: 42)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: no oversubscription)")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="fraction of train queries held out for early stopping (default: 0.2)",
    )
    parser.add_argument(
        "--eval-every", type=int, default=50, help="steps between validation checks for early stopping (default: 50)"
    )
    parser.add_argument("--per-dataset", action="store_true", help="one model per dataset (in-domain)")
    parser.add_argument(
        "--no-learned-skip",
        dest="learned_skip",
        action="store_false",
        help="keep the Hypencoder's skip vector fixed to MiniLM's query embedding (the first release's setting)",
    )
    parser.add_argument(
        "--train-query-encoder",
        action="store_true",
        help="both models also train a copy of MiniLM on the query side (documents stay frozen MiniLM, cached)",
    )
    parser.add_argument(
        "--base-lr", type=float, default=2e-5, help="learning rate of the query transformer (default: 2e-5)"
    )
    parser.add_argument("--no-qrels", dest="use_qrels", action="store_false", help="teacher-only positives")
    parser.add_argument(
        "--out",
        default=str(RESULTS),
        help="folder of hypencoder.md / hypencoder.json (default: evaluation/results, the published tables; any "
        "other folder also receives the models, under <out>/models/)",
    )
    parser.add_argument(
        "--model-out",
        default=None,
        help="where the Hypencoder of the first training group is saved (default: models/hypencoder-minilm-l6 with "
        "the default --out, else <out>/models/hypencoder-minilm-l6)",
    )
    parser.add_argument(
        "--bi-encoder-out",
        default=None,
        help="where the matched bi-encoder of the first training group is saved (default: "
        "outputs/bi-encoder-minilm-l6 with the default --out, else <out>/models/bi-encoder-minilm-l6)",
    )
    parser.add_argument(
        "--other-models-dir",
        default=None,
        help="where the models of the other training groups go (with --per-dataset: every dataset after the first; "
        "default: outputs/ with the default --out, else <out>/models)",
    )
    add_data_args(parser)  # --data-dir / --cache-dir, else $HYDRA_ST_DATA_DIR / $HYDRA_ST_CACHE_DIR
    args = parser.parse_args()
    set_default_dirs(args.data_dir, args.cache_dir)
    names = args.datasets.split(",")
    if problem := dataset_problem(names, ["train", "test"]):  # training needs train queries, evaluation a test split
        print(f"{parser.prog}: error: --datasets {problem}", file=sys.stderr)
        return 2
    model_out, bi_encoder_out, other_models_dir = model_outputs(
        args.out, args.model_out, args.bi_encoder_out, args.other_models_dir
    )
    torch.set_num_threads(args.threads)
    config = HypencoderTrainingConfig(
        datasets=names,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        qnet_width=args.qnet_width,
        qnet_hidden_layers=args.qnet_layers,
        label_scale=args.label_scale,
        num_negatives=args.num_negatives,
        weight_decay=args.weight_decay,
        in_batch_weight=args.in_batch_weight,
        qnet_lr_scale=args.qnet_lr_scale,
        seed=args.seed,
        learned_skip=args.learned_skip,
        freeze_base=not args.train_query_encoder,
        shared_transformer=not args.train_query_encoder,
        query_side_only=args.train_query_encoder,
        base_learning_rate=args.base_lr,
    )
    t0 = time.perf_counter()
    full = [
        build_teacher_examples(n, "train", config.depth, config.rrf_k, config.label_scale, use_qrels=args.use_qrels)
        for n in names
    ]
    # Early stopping on held-out *training* queries (their train qrels); the test split is only read below.
    splits = [split_examples(ex, args.val_fraction, seed=args.seed) for ex in full]
    data = [tr for tr, _ in splits]
    val = [va for _, va in splits]
    val_qrels = [
        {q: train_qrels(name)[q] for q in va.query_ids if q in train_qrels(name)}
        for name, va in zip(names, val, strict=True)
    ]
    groups = [[n] for n in names] if args.per_dataset else [names]
    results: dict[str, dict] = {
        "config": asdict(config),
        "datasets": names,
        "per_dataset": args.per_dataset,
        "train_queries": {ex.name: len(ex.query_ids) for ex in data},
        "validation_queries": {ex.name: len(ex.query_ids) for ex in val},
        "use_qrels_positives": args.use_qrels,
        "models": {"hypencoder": {"test": {}, "runs": {}}, "bi-encoder": {"test": {}, "runs": {}}},
        # in-domain Hypencoder − bi-encoder per dataset: paired bootstrap CI and randomization test over test queries
        "paired": {},
    }
    trained: dict[str, dict[str, object]] = {"hypencoder": {}, "bi-encoder": {}}
    for group in groups:
        idx = [names.index(n) for n in group]
        group_config = replace(config, datasets=group)
        validation = (
            validation_ndcg([val[i] for i in idx], [val_qrels[i] for i in idx]) if args.val_fraction > 0 else None
        )
        per_query: dict[str, dict[str, dict[str, float]]] = {}
        for label, cfg in (("hypencoder", group_config), ("bi-encoder", replace(group_config, bi_encoder=True))):
            model, log = train_hypencoder(
                cfg, data=[data[i] for i in idx], validation=validation, eval_every=args.eval_every
            )
            key = "+".join(group)
            trained[label][key] = model
            evaluated = {n: evaluate_model(model, n) for n in names}  # in-domain and cross-dataset
            scores = {n: metrics for n, (metrics, _) in evaluated.items()}
            per_query[label] = {n: by_query for n, (_, by_query) in evaluated.items()}
            for n in group:
                results["models"][label]["test"][n] = scores[n]
            results["models"][label]["runs"][key] = {
                "test": scores,
                "train_seconds": log["train_seconds"],
                "qnet": model.converter.get_config(),
                "final_loss": log["losses"][-1],
                "best_step": log.get("best_step"),
                "validation": log.get("validation"),
            }
            print(label, key, json.dumps(scores), log.get("best_step"), flush=True)
        for n in group:
            results["paired"][n] = paired_comparison(per_query["hypencoder"][n], per_query["bi-encoder"][n]).to_json()
    for entry in results["models"].values():
        entry["train_seconds"] = sum(r["train_seconds"] for r in entry["runs"].values())
        entry["best_step"] = ", ".join(f"{k}: {r['best_step']}" for k, r in entry["runs"].items())
    any_model = next(iter(trained["hypencoder"].values()))
    results["models"]["minilm-zero-shot"] = {"test": {n: evaluate_base(n, any_model) for n in names}}
    results["wall_seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    atomic_write_json(out / "hypencoder.json", results)
    atomic_write_text(out / "hypencoder.md", render(results))
    for label, models in trained.items():
        for key, model in models.items():
            if config.freeze_base:  # frozen base: save hyper-head weights + a reference to the base id
                model.reference_base(config.base_model)
            comparison, limitations = card_summary(results, label, key)
            cfg = asdict(replace(config, datasets=key.split("+"), bi_encoder=label == "bi-encoder"))
            first = key == "+".join(groups[0])
            if label == "hypencoder":
                path = model_out if first else f"{other_models_dir}/hypencoder-minilm-l6-{key}"
            else:
                path = bi_encoder_out if first else f"{other_models_dir}/bi-encoder-minilm-l6-{key}"
            save_with_card(
                model,
                path,
                model_id=f"hydra-st/{label}-minilm-l6",
                config=cfg,
                comparison=comparison,
                limitations=limitations,
            )
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
