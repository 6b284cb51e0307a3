"""ANN index kinds against exact inner-product search: build time, queries/s and recall@K.

Every kind is built and searched through `recsys.index.VectorIndex` with its default settings
(the ones `kind="auto"` would use), so the figures are what the service gets, masking included.
Recall@K is |ANN top-K ∩ exact top-K| / K, averaged over queries, against `flat` in the same run.

Data: a synthetic clustered set (unit vectors around sqrt(n) random centres; `--spread` sets how
diffuse the clusters are: 1.0 gives top-1 cosine ~0.7 like sentence embeddings, 1.5 is much harder
for IVF), or real item embeddings with `--vectors items.npy` (queries are then held-out rows, each
perturbed a little, since a user vector sits near the items it likes, not on one).

    .venv/bin/python benchmarks/bench_ann.py --n 200000 --dim 64 --queries 1000
    .venv/bin/python benchmarks/bench_ann.py --n 1000000 --kinds flat,ivf_flat
    .venv/bin/python benchmarks/bench_ann.py --vectors item_vectors.npy --kinds flat,hnsw,ivf_flat
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.index import IndexConfig, VectorIndex  # noqa: E402


def clustered(n: int, dim: int, queries: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n base vectors and `queries` query vectors from the same clusters, L2-normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(16, int(np.sqrt(n))), dim)).astype(np.float32)
    total = n + queries
    x = np.empty((total, dim), dtype=np.float32)
    for start in range(0, total, 1 << 18):  # in chunks: 1M x 64 float64 temporaries would be 0.5 GB
        stop = min(total, start + (1 << 18))
        block = centres[rng.integers(0, len(centres), stop - start)]
        block += spread * rng.standard_normal((stop - start, dim)).astype(np.float32)
        x[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x[:n], x[n:]


def from_file(path: Path, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Real embeddings: hold out `queries` rows, nudge them (noise at 10% of their norm) to make queries."""
    x = np.load(path).astype(np.float32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    held, base = order[:queries], np.sort(order[queries:])
    q = x[held] + 0.1 * np.linalg.norm(x[held], axis=1, keepdims=True) / np.sqrt(x.shape[1]) * rng.standard_normal(
        x[held].shape
    ).astype(np.float32)
    return np.ascontiguousarray(x[base]), q.astype(np.float32)


def timed_search(index: VectorIndex, q: np.ndarray, k: int, exclude, repeats: int = 1) -> tuple[np.ndarray, float]:
    best = float("inf")
    rows = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows = index.search(q, k, exclude=exclude).rows
        best = min(best, time.perf_counter() - t0)
    return rows, best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="catalog size (synthetic)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--spread", type=float, default=1.0, help="cluster spread (synthetic)")
    parser.add_argument("--vectors", type=Path, default=None, help="real item embeddings, a [n, dim] .npy file")
    parser.add_argument("--kinds", default="hnsw,ivf_flat", help="ANN kinds to compare with flat (exact)")
    parser.add_argument("--exclude", type=int, default=0, help="random seen items excluded a query")
    parser.add_argument("--threads", type=int, default=2, help="FAISS threads (keep shared machines usable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.vectors:
        x, q = from_file(args.vectors, args.queries, args.seed)
        source = f"{args.vectors.name}"
    else:
        x, q = clustered(args.n, args.dim, args.queries, args.spread, args.seed)
        source = f"synthetic clustered (spread {args.spread})"
    n, dim = x.shape
    ids = [str(i) for i in range(n)]
    rng = np.random.default_rng(args.seed + 1)
    exclude = [rng.choice(n, size=args.exclude, replace=False) for _ in range(len(q))] if args.exclude else None
    auto = IndexConfig().resolve(n, dim, faiss.get_num_gpus())
    print(
        f"{source}: n={n:,} dim={dim} queries={len(q)} k={args.k} exclude={args.exclude}; "
        f"data {time.perf_counter() - t0:.1f}s; faiss {faiss.__version__}, {args.threads} threads, "
        f"{platform.machine()}, GPUs {faiss.get_num_gpus()}; "
        f"auto picks '{auto.kind}'\n"
    )

    results = []
    exact_rows = None
    exact_qps = None
    for kind in ["flat", *[k for k in args.kinds.split(",") if k and k != "flat"]]:
        t0 = time.perf_counter()
        index = VectorIndex.build(ids, x, {"kind": kind, "threads": args.threads})
        build_s = time.perf_counter() - t0
        rows, search_s = timed_search(index, q, args.k, exclude, repeats=1 if kind == "flat" else 2)
        qps = len(q) / search_s
        if kind == "flat":
            exact_rows, exact_qps = rows, qps
        recall = float(
            np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / args.k for a, b in zip(rows, exact_rows, strict=True)])
        )
        row = {
            "kind": kind,
            "params": index.config.search_params(),
            "build_s": round(build_s, 2),
            "qps": round(qps, 1),
            "speedup_vs_exact": round(qps / exact_qps, 2),
            f"recall@{args.k}": round(recall, 4),
        }
        results.append(row)
        print(
            f"  {kind:9s} build {build_s:7.1f}s  {qps:9.0f} q/s  ({qps / exact_qps:5.1f}x exact)  "
            f"recall@{args.k} {recall:.4f}  {row['params']}",
            flush=True,
        )
        del index

    print(f"\n| kind | params | build s | queries/s | × exact | recall@{args.k} |\n|---|---|---:|---:|---:|---:|")
    for r in results:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items() if k != "kind") or "exact"
        print(
            f"| {r['kind']} | {params} | {r['build_s']:.1f} | {r['qps']:,.0f} | {r['speedup_vs_exact']:.1f} | "
            f"{r[f'recall@{args.k}']:.4f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "source": source,
                    "n": n,
                    "dim": dim,
                    "queries": len(q),
                    "k": args.k,
                    "threads": args.threads,
                    "results": results,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
