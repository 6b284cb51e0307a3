"""MostPop and ItemKNN on MovieLens ml-latest-small: quality (leave-last-out protocol) and timings.

Protocol: temporal leave-last-out per user, full ranking over the catalog (every item with an
interaction), the user's history (train, plus valid at test time) excluded from the ranking and used
to fit the models. Prints a markdown table for BENCHMARKS.md.

    .venv/bin/python benchmarks/bench_baselines.py --data ../shared/data/movielens/ml-latest-small
    .venv/bin/python benchmarks/bench_baselines.py --stage valid --neighbors 20,50,100,200  # tuning

This is a script, not a test: it reads ratings.csv directly with polars so it depends only on
`recsys.splits`, `recsys.metrics` and `recsys.baselines`.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.baselines import make_baseline  # noqa: E402
from recsys.metrics import evaluate_topk, item_counts_from  # noqa: E402
from recsys.splits import leave_last_out  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "movielens" / "ml-latest-small"
COLUMNS = (
    "ndcg@10",
    "hr@10",
    "mrr@10",
    "recall@50",
    "hr@50",
    "coverage@10",
    "novelty@10",
    "popularity_bias@10",
)


def load_ratings(folder: Path) -> pl.DataFrame:
    """ratings.csv -> interactions contract (`user_id`, `item_id` as str, `ts` UTC)."""
    path = folder / "ratings.csv"
    if not path.exists():
        raise SystemExit(f"no ratings.csv in {folder} (pass --data PATH to ml-latest-small)")
    raw = pl.read_csv(path, schema_overrides={"userId": pl.String, "movieId": pl.String})
    return raw.select(
        pl.col("userId").alias("user_id"),
        pl.col("movieId").alias("item_id"),
        pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC").alias("ts"),
    )


def run(name: str, params: dict, split, stage: str, ks=(10, 50)) -> tuple[str, dict, float, float]:
    history = split.history(stage)
    targets = split.targets(stage)
    catalog = split.catalog()
    t0 = time.perf_counter()
    model = make_baseline(name, **params).fit(history)
    t1 = time.perf_counter()
    topk = model.recommend(targets["user_id"], k=max(ks), exclude=history, catalog=catalog)
    t2 = time.perf_counter()
    metrics = evaluate_topk(topk, targets, ks=ks, catalog=catalog, item_counts=item_counts_from(history))
    return repr(model), metrics, t1 - t0, t2 - t1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ml-latest-small folder")
    parser.add_argument("--stage", choices=("valid", "test"), default="test")
    parser.add_argument("--neighbors", default="", help="comma-separated ItemKNN sizes to compare")
    parser.add_argument("--shrink", type=float, default=None, help="ItemKNN shrink term")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    interactions = load_ratings(args.data)
    split = leave_last_out(interactions)
    t_split = time.perf_counter() - t0
    counts = split.counts()
    print(
        f"ml-latest-small: {interactions.height:,} interactions, {counts['test_users']} users, "
        f"{counts['catalog']:,} catalog items; load+split {t_split:.2f}s; stage={args.stage}; "
        f"{platform.processor() or platform.machine()}, polars {pl.__version__}\n"
    )

    runs: list[tuple[str, dict]] = [("mostpop", {})]
    knn_extra = {} if args.shrink is None else {"shrink": args.shrink}
    sizes = [int(x) for x in args.neighbors.split(",") if x.strip()]
    runs += [("itemknn", {"neighbors": n, **knn_extra}) for n in sizes] or [("itemknn", knn_extra)]

    header = ["model", *COLUMNS, "fit s", "recommend s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, params in runs:
        label, metrics, fit_s, rec_s = run(name, params, split, args.stage)
        cells = [f"{metrics[c]:.4f}" for c in COLUMNS]
        print(f"| {label} | " + " | ".join(cells) + f" | {fit_s:.2f} | {rec_s:.2f} |")


if __name__ == "__main__":
    main()
