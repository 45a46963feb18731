"""Tables and model-card text of ``evaluation/hypencoder_train_eval.py``, from its results dict.

Kept apart from the script's training and evaluation; every function here only formats what the script measured.
"""

from __future__ import annotations

import sys

from hydra_st.evaluation import TRAIN_OVERLAP_POOLS, PairedComparison, format_p_value


def card_summary(results: dict, label: str, key: str) -> tuple[dict[str, dict[str, float]], str]:
    """The model card's comparison (this model, its matched counterpart, zero-shot MiniLM) and limitations."""
    other = "bi-encoder" if label == "hypencoder" else "hypencoder"
    other_name = "matched bi-encoder" if other == "bi-encoder" else "Hypencoder"
    ours = results["models"][label]["runs"][key]["test"]
    theirs = results["models"][other]["runs"][key]["test"]
    zero_shot = results["models"]["minilm-zero-shot"]["test"]
    comparison = {
        n: {
            "this model": ours[n]["ndcg@10"],
            f"{other_name} (same data, steps, selection)": theirs[n]["ndcg@10"],
            "zero-shot all-MiniLM-L6-v2": zero_shot[n]["ndcg@10"],
        }
        for n in results["datasets"]
    }
    trained = key.split("+")
    base = (
        "all-MiniLM-L6-v2 (query side trained, documents frozen)"
        if results["config"]["query_side_only"]
        else "a frozen all-MiniLM-L6-v2"
    )
    lines = [
        f"- Trained on the train queries of {', '.join(trained)} only, on {base}, for at most "
        f"{results['config']['steps']} steps (device: {results['config']['device']}): a small-scale reproduction of "
        "the method, not the published BERT-base checkpoints."
    ]
    below = [n for n in results["datasets"] if ours[n]["ndcg@10"] < zero_shot[n]["ndcg@10"]]
    if below:
        lines.append(
            f"- Below zero-shot all-MiniLM-L6-v2 on {', '.join(below)} "
            f"({', '.join('in-domain' if n in trained else 'not trained on' for n in below)}): use the base model "
            "there."
        )
    for n in trained:
        mine, base_ = ours[n], zero_shot[n]
        # both pools must be there: a dataset whose test queries share no relevant document with a train query
        # has a new pool only, and nothing to say about a document prior
        pools = all(f"ndcg@10/{pool}" in mine for pool in TRAIN_OVERLAP_POOLS)
        if pools and mine["ndcg@10/new_pool"] < base_["ndcg@10/new_pool"]:
            lines.append(
                f"- On {n}, the gain over zero-shot MiniLM comes from the {mine['queries/train_pool']} test queries "
                f"whose relevant documents are also relevant to training queries ({mine['ndcg@10/train_pool']:.4f} "
                f"against {base_['ndcg@10/train_pool']:.4f}). On the other {mine['queries/new_pool']} it scores "
                f"{mine['ndcg@10/new_pool']:.4f}, below zero-shot's {base_['ndcg@10/new_pool']:.4f}: part of what it "
                "learned is which documents tend to be relevant."
            )
    for n in trained:
        paired = results.get("paired", {}).get(n)
        if label == "hypencoder" and paired and paired["p_value"] >= 0.05:
            lines.append(
                f"- On {n} the difference to the matched bi-encoder, {paired['mean_difference']:+.4f} nDCG@10, is "
                f"within query-to-query noise (95% CI {PairedComparison(**paired).ci_text}, paired "
                f"randomization p = {paired['p_value']:.2f}, {paired['queries']} test queries)."
            )
    lines.append(
        "- The gap to the matched model moves with the training seed (seed repeats in the hydra_st repository's "
        "`evaluation/results/hypencoder_findings.md`)."
    )
    return comparison, "\n".join(lines)


def render(results: dict) -> str:
    names = results["datasets"]
    lines = [
        "# Hypencoder vs matched bi-encoder ("
        + (
            "all-MiniLM-L6-v2: query transformer trained, documents frozen"
            if results["config"]["query_side_only"]
            else "frozen all-MiniLM-L6-v2"
        )
        + ")",
        "",
        f"Produced by `python evaluation/hypencoder_train_eval.py {' '.join(sys.argv[1:])}` (see its docstring). "
        "Training: train "
        f"queries only ({results['train_queries']}; held out for early stopping on their *train* qrels: "
        f"{results['validation_queries']}), RRF(BM25, MiniLM) teacher labels (MarginMSE weight "
        f"{results['config']['margin_weight']}, in-batch CE weight {results['config']['in_batch_weight']}; positives "
        f"from train qrels: {results['use_qrels_positives']}), datasets sampled uniformly; evaluation: test split, "
        "exhaustive q-net scoring, pytrec_eval. The best step is chosen on the held-out training queries.",
        "",
        "| model | " + " | ".join(f"{n} nDCG@10 | {n} R@100" for n in names) + " | train s | best step |",
        "|---|" + "---|---|" * len(names) + "---|---|",
    ]
    for label, entry in results["models"].items():
        cells = []
        for n in names:
            m = entry["test"][n]
            cells += [f"{m['ndcg@10']:.4f}", f"{m['recall@100']:.4f}"]
        lines.append(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {entry.get('train_seconds', 0):.0f} | {entry.get('best_step', '-')} |"
        )
    hyp, bi = results["models"]["hypencoder"]["test"], results["models"]["bi-encoder"]["test"]
    lines += [
        "",
        "| dataset | Hypencoder − bi-encoder (nDCG@10) | 95% CI (paired bootstrap) | p (paired randomization) "
        "| must (≥ 0) | stretch (≥ +0.010) |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        diff = hyp[n]["ndcg@10"] - bi[n]["ndcg@10"]
        paired = results.get("paired", {}).get(n)
        comparison = PairedComparison(**paired) if paired else None
        ci = comparison.ci_text if comparison else "–"
        p = format_p_value(comparison.p_value) if comparison else "–"
        lines.append(
            f"| {n} | {diff:+.4f} | {ci} | {p} | {'met' if diff >= 0 else 'missed'} | "
            f"{'met' if diff >= 0.01 else 'missed'} |"
        )
    if results.get("paired"):
        lines += [
            "",
            "CI and p are over the test queries (10,000 seeded resamples): they measure query-to-query noise for "
            "this one training run, not the training-seed noise in the findings.",
        ]
    pooled = [n for n in names if "ndcg@10/train_pool" in hyp[n] and "ndcg@10/new_pool" in hyp[n]]
    whole = [n for n in names if "ndcg@10/train_pool" in hyp[n] and n not in pooled]
    if pooled:
        lines += [
            "",
            "Test nDCG@10 split by whether a query's relevant documents are also relevant to some *train* query "
            "(`train pool`; a model can gain there by learning which documents tend to be relevant) or not "
            "(`new pool`)" + (f"; on {', '.join(whole)} every test query is in the train pool" if whole else "") + ":",
            "",
            "| model | " + " | ".join(f"{n} train pool | {n} new pool" for n in pooled) + " |",
            "|---|" + "---|---|" * len(pooled),
        ]
        for label, entry in results["models"].items():
            cells = [
                f"{entry['test'][n]['ndcg@10/' + pool]:.4f} ({entry['test'][n]['queries/' + pool]} q)"
                for n in pooled
                for pool in ("train_pool", "new_pool")
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if results.get("per_dataset"):
        lines += [
            "",
            "One model per training dataset (rows above: in-domain). All runs, nDCG@10 on every test set:",
            "",
            "| model | trained on | " + " | ".join(names) + " | best step |",
            "|---|---|" + "---|" * len(names) + "---|",
        ]
        for label in ("hypencoder", "bi-encoder"):
            for key, run in results["models"][label]["runs"].items():
                cells = " | ".join(f"{run['test'][n]['ndcg@10']:.4f}" for n in names)
                lines.append(f"| {label} | {key} | {cells} | {run['best_step']} |")
    cfg = results["config"]
    lines += [
        "",
        f"Settings: steps {cfg['steps']}, batch {cfg['batch_size']} queries × (1 pos + "
        f"{cfg['num_negatives']} neg), lr {cfg['learning_rate']}, q-net hidden layers "
        f"{cfg['qnet_hidden_layers']} × width {cfg['qnet_width']}, label scale {cfg['label_scale']}, "
        f"seed {cfg['seed']}"
        + (f", query transformer lr {cfg['base_learning_rate']}" if cfg["query_side_only"] else "")
        + (f", q-net layers lr × {cfg['qnet_lr_scale']:g}" if cfg.get("qnet_lr_scale", 1.0) != 1.0 else "")
        + f". Wall time {results['wall_seconds']:.0f} s.",
        "",
        "Seed repeats, further nfcorpus levers and design notes (hand-written, kept across re-runs): "
        "[hypencoder_findings.md](hypencoder_findings.md).",
        "",
    ]
    return "\n".join(lines)
