"""Time the synthetic generator at scale and report its peak memory.

Usage::

    python benchmarks/bench_synthetic.py --n 10000000

Peak RSS is the process maximum from ``resource.getrusage`` (so it includes the interpreter and
imports); the generator's own share is the difference from the baseline printed alongside it.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.data.synthetic import generate


def _peak_rss_gb() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="number of interactions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--requests", type=int, default=None, help="impression requests (default n // 20)")
    args = parser.parse_args(argv)

    baseline = _peak_rss_gb()
    t0 = time.perf_counter()
    dataset = generate(n_interactions=args.n, seed=args.seed, n_impressions_requests=args.requests)
    seconds = time.perf_counter() - t0
    peak = _peak_rss_gb()
    s = dataset.summary()
    print(
        f"synthetic n={args.n:,} users={s['users']:,} items={s['items']:,} "
        f"impressions={s.get('impressions', 0):,} seconds={seconds:.1f} "
        f"interactions_per_s={args.n / seconds:,.0f} peak_rss_gb={peak:.2f} (baseline {baseline:.2f})"
    )


if __name__ == "__main__":
    main()
