"""User-vector latency: one history -> one vector, per user tower, on one CPU thread.

For real ml-latest-small users (their most recent items, newest first, with timestamps), time the
bundle's user tower on one request at a time (the online case: a client sends a fresh history)
and report p50/p99. Every `--encoder` is an encoder bundle or `recsys train-encoder` run folder;
run a text-tower encoder beside the sequence tower to get the ratio in the same process.

    python benchmarks/bench_user_vectors.py --data /tmp/mlw/data \\
        --encoder sequence=/tmp/mlw/seq_hybrid --encoder text=/tmp/mlw/frozen_text --requests 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from encoders.packaging import EncoderBundle
from recsys.data.dataset import Dataset
from recsys.data.order import chronological


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def histories(dataset: Dataset, n: int, length: int, seed: int) -> list[tuple[list[str], list[float]]]:
    """`n` random users' newest `length` items (newest first) with their Unix seconds."""
    log = (
        chronological(dataset.interactions, descending=True)
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("item_id").head(length), (pl.col("ts").dt.epoch("us") / 1e6).head(length).alias("s"))
    )
    rows = np.random.default_rng(seed).choice(log.height, size=min(n, log.height), replace=False)
    return [(log["item_id"][int(r)].to_list(), log["s"][int(r)].to_list()) for r in rows]


def bench(bundle: EncoderBundle, requests: list[tuple[list[str], list[float]]], texts: dict[str, str]) -> dict:
    cap = bundle.history_cap
    for ids, seconds in requests[:5]:  # warm-up
        bundle.user_vectors([ids[:cap]], [seconds[:cap]], texts=texts)
    times = []
    for ids, seconds in requests:
        started = time.perf_counter()
        bundle.user_vectors([ids[:cap]], [seconds[:cap]], texts=texts)
        times.append(time.perf_counter() - started)
    return {"tower": bundle.tower, "history_cap": cap, **_percentiles(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (recsys data convert)")
    parser.add_argument("--encoder", action="append", required=True, help="LABEL=FOLDER")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--length", type=int, default=200, help="items per history before the tower's cap")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = Dataset.load(args.data)
    text = dataset.item_text()
    texts = dict(zip(text["item_id"].to_list(), text["text"].to_list(), strict=True))
    requests = histories(dataset, args.requests, args.length, args.seed)
    results = {}
    for spec in args.encoder:
        label, folder = spec.split("=", 1)
        bundle = EncoderBundle.load(folder, device="cpu")
        results[label] = bench(bundle, requests, texts)
        print(label, results[label], flush=True)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 torch thread",
        "requests": len(requests),
        "results": results,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
