"""Throughput cost of Hydra's head against the plain base model (target: at most 5%).

Encodes the same documents with ``all-MiniLM-L6-v2`` and with a Hydra model on top of it (card given, compiled
head cached after the first batch), alternating the two several times and taking each one's median rate, and
writes ``hydra_bench.json`` / ``.md`` into ``--out`` (default ``evaluation/results``, the published benchmark:
give another folder for a trial run). Each round's rates are printed as it ends. CPU timings on a shared machine
are noisy: the alternation and medians are there for that, and the report says how many rounds were run.

Run:

    python evaluation/bench_hydra_head.py                     # fresh head, 512 scifact documents, 5 rounds
    python evaluation/bench_hydra_head.py --model models/hydra-minilm-l6 --docs 1024 --rounds 7
    python evaluation/bench_hydra_head.py --dataset adi --docs 64 --rounds 1 --out /tmp/bench   # quick check
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from hydra_st.cli.common import add_data_args
from hydra_st.data import load_dataset
from hydra_st.hub.offline import load_base_model
from hydra_st.hydra import Hydra, load_card
from hydra_st.settings import set_default_dirs
from hydra_st.utils.io import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def rate(fn, texts: list[str]) -> float:
    t0 = time.perf_counter()
    fn(texts)
    return len(texts) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a saved Hydra model (default: a fresh head on MiniLM)")
    parser.add_argument(
        "--dataset", default="scifact", help="dataset whose documents are encoded, and whose bundled card is used"
    )
    parser.add_argument("--docs", type=int, default=512, help="documents encoded per round (default: 512)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating rounds of base and Hydra encoding (default: 5)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="encode batch size (default: 32)")
    parser.add_argument(
        "--out",
        default=str(RESULTS),
        help="folder of hydra_bench.json / hydra_bench.md (default: evaluation/results, the published benchmark)",
    )
    add_data_args(parser)  # --data-dir / --cache-dir, else $HYDRA_ST_DATA_DIR / $HYDRA_ST_CACHE_DIR
    args = parser.parse_args(argv)
    set_default_dirs(args.data_dir, args.cache_dir)
    ds = load_dataset(args.dataset, "test", download=False)
    texts = ds.doc_texts[: args.docs]
    base = load_base_model()
    hydra = Hydra(args.model) if args.model else Hydra.from_base(base)
    card = load_card(args.dataset)
    kw = {"batch_size": args.batch_size, "show_progress_bar": False, "convert_to_numpy": True}
    base.encode_document(texts[:64], **kw)  # warm-up both (the card is compiled and cached here)
    hydra.encode_document(texts[:64], task_card=card, **kw)
    base_rates, hydra_rates = [], []
    with torch.inference_mode():
        for round_ in range(1, args.rounds + 1):
            base_rates.append(rate(lambda t: base.encode_document(t, **kw), texts))
            hydra_rates.append(rate(lambda t: hydra.encode_document(t, task_card=card, **kw), texts))
            print(
                f"round {round_}/{args.rounds}: base {base_rates[-1]:.1f} docs/s, Hydra {hydra_rates[-1]:.1f} docs/s",
                flush=True,
            )
    b, h = statistics.median(base_rates), statistics.median(hydra_rates)
    overhead = (b - h) / b * 100
    t0 = time.perf_counter()
    for _ in range(100):
        hydra.head.compile_card(card)
    cached_compile_ms = (time.perf_counter() - t0) * 10
    hydra.head.clear_cache()
    t0 = time.perf_counter()
    hydra.head.compile_card(card)
    cold_compile_ms = (time.perf_counter() - t0) * 1000
    result = {
        "dataset": args.dataset,
        "docs": len(texts),
        "rounds": args.rounds,
        "batch_size": args.batch_size,
        "base_docs_per_s": base_rates,
        "hydra_docs_per_s": hydra_rates,
        "base_median": b,
        "hydra_median": h,
        "overhead_percent": overhead,
        "card_compile_ms_cold": cold_compile_ms,
        "card_compile_ms_cached": cached_compile_ms,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "hydra_bench.json", result)
    md = (
        "# Hydra head overhead\n\n"
        f"`python evaluation/bench_hydra_head.py {' '.join(argv if argv is not None else sys.argv[1:])}`: "
        f"{len(texts)} {args.dataset} documents, batch {args.batch_size}, {args.rounds} alternating rounds, "
        f"{torch.get_num_threads()} torch threads, shared CPU.\n\n"
        "| model | median docs/s | all rounds |\n|---|---|---|\n"
        f"| all-MiniLM-L6-v2 | {b:.1f} | {', '.join(f'{r:.1f}' for r in base_rates)} |\n"
        f"| Hydra (card cached) | {h:.1f} | {', '.join(f'{r:.1f}' for r in hydra_rates)} |\n\n"
        f"Overhead: **{overhead:.2f}%** (target ≤ 5%). Compiling a new card: {cold_compile_ms:.1f} ms "
        f"(once per card); a cached card: {cached_compile_ms:.3f} ms per batch.\n"
    )
    atomic_write_text(out / "hydra_bench.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
