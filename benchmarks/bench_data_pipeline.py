"""Data-pipeline speed on MovieLens: load (read + validate), re-validate, item text, leave-last-out.

Usage::

    python benchmarks/bench_data_pipeline.py [--path ../shared/data/movielens/ml-latest-small] [--repeat 5]

`load` is the whole adapter (UTF-8 check, CSV parse, tags aggregation, contract validation);
`validate` re-runs the contract checks on the canonical frames (what `Dataset.load` pays);
`text` renders every item's text from the template; `split` is the temporal leave-last-out.
Each stage reports the median and best of `--repeat` runs; the last line is one summary.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.data.contracts import validate_interactions, validate_items
from recsys.data.movielens import load_movielens
from recsys.splits import leave_last_out

DEFAULT_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movielens" / "ml-latest-small"


def timed(fn: Callable[[], object], repeat: int) -> tuple[list[float], object]:
    """Wall-clock seconds of each of `repeat` calls, and the last call's result."""
    times: list[float] = []
    result: object = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH, help="MovieLens folder (variant auto-detected)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per stage (median and best are reported)")
    args = parser.parse_args(argv)
    if not args.path.exists():
        parser.error(f"{args.path} does not exist; pass --path to a MovieLens folder")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    load_times, dataset = timed(lambda: load_movielens(args.path), args.repeat)

    def revalidate() -> None:
        items = validate_items(dataset.items)
        validate_interactions(dataset.interactions, items=items)

    stages = {
        "load": load_times,
        "validate": timed(revalidate, args.repeat)[0],
        "text": timed(dataset.item_text, args.repeat)[0],
        "split": timed(lambda: leave_last_out(dataset.interactions), args.repeat)[0],
    }
    split = leave_last_out(dataset.interactions)
    for name, times in stages.items():
        print(f"{name:9s} median {statistics.median(times) * 1000:8.1f} ms   best {min(times) * 1000:8.1f} ms")
    counts = split.counts()
    total = sum(statistics.median(t) for t in stages.values())
    parts = " + ".join(f"{name} {statistics.median(times):.3f}s" for name, times in stages.items())
    print(
        f"SUMMARY {dataset.name}: {dataset.items.height:,} items, "
        f"{dataset.interactions.height:,} interactions, {counts['test_users']:,} test users; "
        f"{parts} = {total:.3f}s (median of {args.repeat}, "
        f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
