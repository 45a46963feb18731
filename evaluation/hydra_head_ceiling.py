"""How much can a task head on frozen MiniLM gain at all? A supervised ceiling for Hydra's targets.

Hydra's heads are generated from a task card, with teacher preferences on training or pseudo-queries. This script
asks a simpler, more generous question: with the task's **real relevance judgments**, how much does a head of the
same family (a residual linear map ``normalize(x + x A)`` on the frozen 384-d embeddings, ``A = 0`` at the start,
applied to queries and documents) raise test nDCG@10? Two settings per task:

* **cross-fitted**: the judged test queries are split in two halves by a seeded hash; a head is trained on one
  half's qrels and scored on the other half, and the other way round; the table reports the score of both halves
  together. The step is chosen per task as the best on the *scored* half (so this is a ceiling, optimistic by
  construction: no head selected on its own data can do better on average);
* **memorised**: trained and scored on the same queries (the head's capacity, not a generalisation number).

A second table asks the opposite question: what do **training-free** transforms give, the kind a card could carry
with no hypernet at all? Centring queries and documents on the mean of the card's example documents (the one
corpus statistic a card holds), on the whole corpus's mean (a reference a card does not hold), and removing the
corpus's top principal direction ("all-but-the-top"); and shifting only the queries toward the documents by the gap
between the card's example documents and example queries, by the gap between the corpus mean and the mean of the
training-side queries Hydra trains on (train split or pseudo-queries, and dev: a seen-task baseline with no card and
no training), by the *other* tasks' mean gap with a step picked on their dev queries (a leave-one-task-out map with
no card), or, as a reference, by the gap to the test queries' mean (no test judgments are read for any of them).

Loss: softmax cross-entropy of each relevant document (graded relevance as weight) against the base model's top 100
non-relevant documents for that query, scale 20; Adam, full batch. A head trained by a card alone, for a task the
hypernet never saw, cannot be expected to beat the cross-fitted number.

Run (from the repo root, with --data-dir / --cache-dir or HYDRA_ST_DATA_DIR / HYDRA_ST_CACHE_DIR; about a minute once
embeddings are cached)::

    python evaluation/hydra_head_ceiling.py
    python evaluation/hydra_head_ceiling.py --tasks scifact,nfcorpus --steps 100

Writes ``evaluation/results/hydra_head_ceiling.{md,json}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hydra_st.cli.common import add_data_args
from hydra_st.data.pseudo_queries import stable_fraction
from hydra_st.evaluation import evaluate_run
from hydra_st.hydra.pipeline import ALL_TASKS, load_tasks
from hydra_st.hydra.preferences import dense_run
from hydra_st.settings import set_default_dirs
from hydra_st.utils.io import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def _run(query_ids: list[str], queries: np.ndarray, doc_ids: list[str], docs: np.ndarray) -> dict:
    return dense_run(queries, query_ids, docs, doc_ids, top_k=100)


class JudgedQueries:
    """One task's queries with their qrels, as flat tensors for a full-batch softmax loss.

    Each judged query contributes one row per relevant document (graded relevance as its weight), scored against
    that query's base-model top-100 non-relevant documents.
    """

    def __init__(self, queries: np.ndarray, query_ids: list[str], qrels: dict, docs: np.ndarray, doc_ids: list[str]):
        index = {d: i for i, d in enumerate(doc_ids)}
        candidates = np.argsort(-(queries @ docs.T), axis=1)[:, :100]
        rows, negatives, pairs = [], [], []
        for row, qid in enumerate(query_ids):
            relevant = {index[d]: g for d, g in qrels.get(qid, {}).items() if g > 0 and d in index}
            negs = [int(c) for c in candidates[row] if int(c) not in relevant]
            if relevant and negs:
                pairs += [(len(rows), doc, float(grade)) for doc, grade in relevant.items()]
                rows.append(row)
                negatives.append(negs)
        if not rows:
            raise ValueError("no judged query with a relevant document in the corpus")
        width = max(len(n) for n in negatives)
        self.queries = torch.from_numpy(queries[rows])
        self.docs = torch.from_numpy(docs)
        self.negatives = torch.tensor([n + [n[0]] * (width - len(n)) for n in negatives])
        self.negative_mask = torch.tensor([[True] * len(n) + [False] * (width - len(n)) for n in negatives])
        self.pair_query = torch.tensor([p[0] for p in pairs])
        self.pair_doc = torch.tensor([p[1] for p in pairs])
        self.pair_weight = torch.tensor([p[2] for p in pairs])

    def loss(self, a: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
        """Weighted softmax cross-entropy of each relevant document against the query's negatives."""
        scores = _head(self.queries, a) @ _head(self.docs, a).T
        negative_scores = scores.gather(1, self.negatives).masked_fill(~self.negative_mask, float("-inf"))
        positive_scores = scores[self.pair_query, self.pair_doc].unsqueeze(1)
        logits = scale * torch.cat([positive_scores, negative_scores[self.pair_query]], dim=1)
        losses = F.cross_entropy(logits, torch.zeros(len(self.pair_doc), dtype=torch.long), reduction="none")
        return (losses * self.pair_weight).sum() / self.pair_weight.sum()


def _head(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return F.normalize(x + x @ a, dim=-1)


def train_head(groups: list[JudgedQueries], steps: int, eval_every: int, lr: float, seed: int = 0):
    """Yield ``(step, A)`` for one residual head ``x + x A`` trained on all ``groups`` (each task weighs the same),
    every ``eval_every`` steps; step 0 is ``A = 0``, the base model."""
    torch.manual_seed(seed)
    dim = groups[0].queries.shape[1]
    a = torch.zeros(dim, dim, requires_grad=True)
    opt = torch.optim.Adam([a], lr=lr)
    yield 0, a.detach().clone()
    for step in range(1, steps + 1):
        loss = torch.stack([g.loss(a) for g in groups]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0:
            yield step, a.detach().clone()


def _ndcg(per_query: dict[str, dict[str, float]]) -> float:
    return statistics.mean(v["ndcg@10"] for v in per_query.values())


def _score(task, rows: list[int], head: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per-query nDCG@10 of ``task``'s test queries ``rows`` with the head applied to queries and documents."""
    test = task.test
    ids = [test.ids[i] for i in rows]
    queries = _head(torch.from_numpy(test.embeddings[rows]), head).numpy()
    docs = _head(torch.from_numpy(task.doc_embeddings), head).numpy()
    run = dense_run(queries, ids, docs, task.doc_ids, top_k=100)
    return evaluate_run({q: test.qrels[q] for q in ids}, run, metrics=["ndcg@10"]).per_query


TRAINING_FREE = {
    "card_mean_0.5": "centre both on ½ × the card's example-document mean",
    "card_mean_1": "centre both on the card's example-document mean",
    "corpus_mean_0.5": "centre both on ½ × the corpus mean",
    "corpus_mean_1": "centre both on the corpus mean",
    "all_but_the_top_1": "centre both on the corpus mean, top principal direction removed",
    "card_query_shift_0.25": "queries + ¼ × (card documents' mean − card queries' mean)",
    "card_query_shift_0.5": "queries + ½ × (card documents' mean − card queries' mean)",
    "train_query_shift_0.25": "queries + ¼ × (corpus mean − training-side queries' mean); seen tasks, no card",
    "train_query_shift_0.5": "queries + ½ × (corpus mean − training-side queries' mean); seen tasks, no card",
    "shared_query_shift_loto": "queries + α × the other tasks' mean gap, α picked on their dev queries; held-out task",
    "oracle_query_shift_0.5": "queries + ½ × (corpus mean − test queries' mean); reference, not a card",
    "oracle_query_shift_1": "queries + (corpus mean − test queries' mean); reference, not a card",
}


def centred(x: np.ndarray, mean: np.ndarray, alpha: float, drop: np.ndarray | None = None) -> np.ndarray:
    """``normalize(x − alpha·mean)``, with the directions in ``drop`` (rows) projected out first when given."""
    y = x - alpha * mean
    if drop is not None:
        y = y - (y @ drop.T) @ drop
    return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


def _query_gap(task) -> np.ndarray:
    """Corpus mean minus the mean of the training-side queries (train split or pseudo-queries, and dev)."""
    return task.doc_embeddings.mean(0) - np.concatenate([task.train.embeddings, task.dev.embeddings]).mean(0)


def _shifted_ndcg(task, split, shift: np.ndarray) -> float:
    queries = getattr(task, split)
    run = dense_run(centred(queries.embeddings, -shift, 1.0), queries.ids, task.doc_embeddings, task.doc_ids, 100)
    return evaluate_run(queries.qrels, run, metrics=["ndcg@10"]).aggregate["ndcg@10"]


def training_free(task, card_doc_embeddings: np.ndarray, card_query_embeddings: np.ndarray) -> dict[str, float]:
    """Test nDCG@10 of ``task`` under each :data:`TRAINING_FREE` transform.

    The centring transforms move queries and documents alike (what Hydra's shared head can express); the query
    shifts move only the queries, toward the documents (an asymmetric map, which it cannot).
    """
    test, docs = task.test, task.doc_embeddings
    card_mean, corpus_mean = card_doc_embeddings.mean(0), docs.mean(0)
    top = np.linalg.svd(docs[:20000] - corpus_mean, full_matrices=False)[2][:1]
    card_gap = card_doc_embeddings.mean(0) - card_query_embeddings.mean(0)
    oracle_gap = corpus_mean - test.embeddings.mean(0)
    train_gap = _query_gap(task)  # what a seen task has: the queries Hydra trains and selects on
    both = {
        "card_mean_0.5": (card_mean, 0.5, None),
        "card_mean_1": (card_mean, 1.0, None),
        "corpus_mean_0.5": (corpus_mean, 0.5, None),
        "corpus_mean_1": (corpus_mean, 1.0, None),
        "all_but_the_top_1": (corpus_mean, 1.0, top),
    }
    pairs = {name: (centred(test.embeddings, *spec), centred(docs, *spec)) for name, spec in both.items()}
    shifts = {
        "card_query_shift_0.25": 0.25 * card_gap,
        "card_query_shift_0.5": 0.5 * card_gap,
        "train_query_shift_0.25": 0.25 * train_gap,
        "train_query_shift_0.5": 0.5 * train_gap,
        "oracle_query_shift_0.5": 0.5 * oracle_gap,
        "oracle_query_shift_1": oracle_gap,
    }
    out = {}
    for name, (queries, documents) in pairs.items():
        run = dense_run(queries, test.ids, documents, task.doc_ids, top_k=100)
        out[name] = evaluate_run(test.qrels, run, metrics=["ndcg@10"]).aggregate["ndcg@10"]
    return out | {name: _shifted_ndcg(task, "test", shift) for name, shift in shifts.items()}


SHIFT_ALPHAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def shared_query_shift(tasks) -> dict[str, dict]:
    """Leave-one-task-out with one card-free, training-free map: for each held-out task, shift its test queries by
    ``α ×`` the mean query-to-corpus gap of the other tasks, with ``α`` (from :data:`SHIFT_ALPHAS`) the one whose mean
    dev nDCG@10 over those other tasks is highest. Nothing of the held-out task is read but its test queries."""
    gaps = {t.name: _query_gap(t) for t in tasks}
    out = {}
    for task in tasks:
        others = [o for o in tasks if o.name != task.name]
        shared = np.mean([gaps[o.name] for o in others], axis=0)
        dev = {a: statistics.mean(_shifted_ndcg(o, "dev", a * shared) for o in others) for a in SHIFT_ALPHAS}
        alpha = max(dev, key=dev.__getitem__)
        out[task.name] = {"alpha": alpha, "ndcg@10": _shifted_ndcg(task, "test", alpha * shared)}
    return out


def _judged(task, rows: list[int]) -> JudgedQueries:
    test = task.test
    ids = [test.ids[i] for i in rows]
    return JudgedQueries(test.embeddings[rows], ids, test.qrels, task.doc_embeddings, task.doc_ids)


def task_ceiling(
    task, all_judged: dict[str, JudgedQueries], steps: int, eval_every: int, lr: float, seed: int
) -> dict:
    """Cross-fitted, memorised and transferred nDCG@10 of one task, by step.

    ``all_judged`` holds every task's judged test queries, built once: this task's for the memorised head, the
    others' for the transferred one.
    """
    everything = list(range(len(task.test)))
    halves = [[i for i in everything if (stable_fraction(task.test.ids[i], seed) < 0.5) == (h == 0)] for h in (0, 1)]

    def curve(groups: list[JudgedQueries], rows: list[int]) -> dict[int, dict[str, dict[str, float]]]:
        return {step: _score(task, rows, head) for step, head in train_head(groups, steps, eval_every, lr, seed)}

    crossed = [curve([_judged(task, halves[h])], halves[1 - h]) for h in (0, 1)]
    cross = {s: _ndcg({**crossed[0][s], **crossed[1][s]}) for s in crossed[0]}
    memorised = {s: _ndcg(pq) for s, pq in curve([all_judged[task.name]], everything).items()}
    others = [judged for name, judged in all_judged.items() if name != task.name]
    transfer = {s: _ndcg(pq) for s, pq in curve(others, everything).items()}
    return {
        "queries": len(task.test),
        "base": cross[0],
        "cross_fitted_by_step": cross,
        "memorised_by_step": memorised,
        "transfer_by_step": transfer,
    }


SETTINGS = {
    "cross_fitted": "cross-fitted (this task's other half)",
    "transfer": "transfer (the other tasks' qrels)",
    "memorised": "memorised (same queries)",
}


def summarise(rows: dict[str, dict]) -> dict[str, dict]:
    """Per setting: each task's best step (an optimistic ceiling) and the one step best on the mean."""
    out = {}
    for setting in SETTINGS:
        curves = {name: r[f"{setting}_by_step"] for name, r in rows.items()}
        steps = set.intersection(*(set(c) for c in curves.values()))
        step_means = {s: statistics.mean(c[s] for c in curves.values()) for s in steps}
        common = max(step_means, key=step_means.__getitem__)
        best = {name: max(c, key=c.__getitem__) for name, c in curves.items()}
        out[setting] = {
            "per_task_best": {name: {"step": best[name], "ndcg@10": curves[name][best[name]]} for name in curves},
            "per_task_best_mean": statistics.mean(curves[n][best[n]] for n in curves),
            "common_step": common,
            "common_step_mean": step_means[common],
            "common_step_scores": {name: c[common] for name, c in curves.items()},
        }
    return out


def render(results: dict, argv: list[str]) -> str:
    rows, summary = results["tasks"], results["summary"]
    base_mean = statistics.mean(r["base"] for r in rows.values())
    lines = [
        "# Hydra: a supervised ceiling for a task head on frozen all-MiniLM-L6-v2",
        "",
        f"Produced by `python evaluation/hydra_head_ceiling.py {' '.join(argv)}` ({results['seconds']:.0f} s; see its "
        "docstring). One residual linear head `normalize(x + x A)` (A = 0 at the start: the base model), trained on "
        "**test qrels**, which no Hydra model may read: this measures what the head family can do at all, not a "
        "model to use. Settings: *cross-fitted*, trained on one half of a task's test queries and scored on the other "
        "half (both halves reported together); *transfer*, trained on the other seven tasks' test qrels and scored on "
        "this task (a leave-one-task-out head with real supervision and no card); *memorised*, trained and scored on "
        "the same queries. The step is chosen on the scored queries themselves, per task (optimistic) or one for all "
        "tasks. nDCG@10.",
        "",
        "| task | queries | base | " + " | ".join(f"{label}, best step" for label in SETTINGS.values()) + " |",
        "|---|---|---|" + "---|" * len(SETTINGS),
    ]
    for name, r in rows.items():
        cells = []
        for setting in SETTINGS:
            best = summary[setting]["per_task_best"][name]
            cells.append(f"{best['ndcg@10']:.4f} ({best['ndcg@10'] - r['base']:+.4f}, step {best['step']})")
        lines.append(f"| {name} | {r['queries']} | {r['base']:.4f} | " + " | ".join(cells) + " |")
    lines.append(
        f"| **mean, per-task step** | | {base_mean:.4f} | "
        + " | ".join(
            f"{summary[s]['per_task_best_mean']:.4f} ({summary[s]['per_task_best_mean'] - base_mean:+.4f})"
            for s in SETTINGS
        )
        + " |"
    )
    lines.append(
        f"| **mean, one step for all** | | {base_mean:.4f} | "
        + " | ".join(
            f"{summary[s]['common_step_mean']:.4f} ({summary[s]['common_step_mean'] - base_mean:+.4f}, step "
            f"{summary[s]['common_step']})"
            for s in SETTINGS
        )
        + " |"
    )
    if all("training_free" in r for r in rows.values()):
        lines += [
            "",
            "Training-free transforms (no judgments, nothing trained; see the docstring), nDCG@10 − base:",
            "",
            "| transform | " + " | ".join(rows) + " | **mean** |",
            "|---|" + "---|" * (len(rows) + 1),
        ]
        for key, label in TRAINING_FREE.items():
            gains = [r["training_free"][key] - r["base"] for r in rows.values()]
            cells = " | ".join(f"{g:+.4f}" for g in gains)
            lines.append(f"| {label} | {cells} | **{statistics.mean(gains):+.4f}** |")
        if all("shared_query_shift_alpha" in r for r in rows.values()):
            picked = ", ".join(f"{name} {r['shared_query_shift_alpha']:g}" for name, r in rows.items())
            lines += ["", f"Steps α the other tasks' dev queries picked for the shared query shift: {picked}."]
    lines += [
        "",
        f"Settings: up to {results['steps']} full-batch Adam steps, learning rate {results['lr']}, scored every "
        f"{results['eval_every']} steps, half-split seed {results['seed']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(ALL_TASKS), help="comma-separated dataset names (default: all)")
    parser.add_argument("--steps", type=int, default=60, help="full-batch training steps per head (default: 60)")
    parser.add_argument("--eval-every", type=int, default=5, help="score every N steps (default: 5)")
    parser.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate of A (default: 5e-4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the half split (default: 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--results", default=str(RESULTS), help="where hydra_head_ceiling.{md,json} go")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_data_args(parser)  # --data-dir / --cache-dir, else $HYDRA_ST_DATA_DIR / $HYDRA_ST_CACHE_DIR
    args = parser.parse_args(argv)
    set_default_dirs(args.data_dir, args.cache_dir)
    torch.set_num_threads(args.threads)
    from hydra_st.hub.offline import load_base_model

    start = time.perf_counter()
    base = load_base_model()
    tasks = load_tasks(args.tasks.split(","), base, show_progress_bar=not args.no_progress)
    all_judged = {t.name: _judged(t, list(range(len(t.test)))) for t in tasks}
    rows = {}
    for task in tqdm(tasks, desc="head ceilings", disable=args.no_progress):
        rows[task.name] = task_ceiling(task, all_judged, args.steps, args.eval_every, args.lr, args.seed)
        card_docs = base.encode_document(list(task.card.example_documents), normalize_embeddings=True)
        card_queries = base.encode_query(list(task.card.example_queries), normalize_embeddings=True)
        rows[task.name]["training_free"] = training_free(
            task, np.asarray(card_docs, dtype=np.float32), np.asarray(card_queries, dtype=np.float32)
        )
    for name, shifted in shared_query_shift(tasks).items():
        rows[name]["training_free"]["shared_query_shift_loto"] = shifted["ndcg@10"]
        rows[name]["shared_query_shift_alpha"] = shifted["alpha"]
    results = {
        "tasks": rows,
        "summary": summarise(rows),
        "steps": args.steps,
        "eval_every": args.eval_every,
        "lr": args.lr,
        "seed": args.seed,
        "seconds": time.perf_counter() - start,
    }
    shown = sys.argv[1:] if argv is None else argv
    out = Path(args.results)
    atomic_write_json(out / "hydra_head_ceiling.json", results)
    atomic_write_text(out / "hydra_head_ceiling.md", render(results, shown))
    print(render(results, shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
