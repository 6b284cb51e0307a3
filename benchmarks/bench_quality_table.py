"""The ml-latest-small quality table: every system on the same split, with 95% bootstrap CIs.

Systems: MostPop and ItemKNN (fitted here), then every `--run "LABEL=FOLDER"` in the order given
(a train-encoder or train-ranker run folder: its saved test top-50 lists), and `--pooled FOLDER`: the
pooled user tower over a text-tower run's fine-tuned item vectors (users = recency-weighted mean of
their history's item vectors, computed here). Each cell is the mean over all test users with a
percentile bootstrap CI over users (users resampled); the last column is NDCG@10 over the tie-free
users (`recsys.ties`). `--list "LABEL=FILE"` adds any top-k parquet, e.g. a peer's list from
../shared/data/peers/ml-latest-small/ (integer ids are read as strings).

    python benchmarks/bench_quality_table.py --split /tmp/mlw/split \\
        --run "zero-shot encoder=/tmp/mlw/frozen_text" --run "fine-tuned encoder=/tmp/mlw/lora_cat" \\
        --pooled /tmp/mlw/lora_cat --run "fine-tuned encoder + ranker=/tmp/mlw/ranker3" --out /tmp/mlw/quality.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl

from encoders.towers import pooled_user_vectors
from recsys.baselines import make_baseline
from recsys.data.order import chronological
from recsys.metrics import per_user_metrics
from recsys.scoring import dense_topk
from recsys.splits import Split
from recsys.ties import tie_free_users

METRICS = ("hr@10", "ndcg@10", "mrr@10", "hr@50")


def pooled_lists(run: Path, split, k: int = 50):
    """Top-k of the pooled user tower over a text-tower run's fine-tuned item vectors."""
    items = pl.read_parquet(run / "items.parquet")["item_id"].to_list()
    vectors = np.load(run / "item_vectors.npy")
    row_of = {item: i for i, item in enumerate(items)}
    history = chronological(split.history("test"))
    grouped = history.group_by("user_id", maintain_order=True).agg("item_id")
    users = grouped["user_id"].to_list()
    rows = [np.asarray([row_of[i] for i in its], dtype=np.int64) for its in grouped["item_id"].to_list()]
    allowed = np.zeros(len(items), dtype=bool)
    allowed[[row_of[i] for i in split.catalog().to_list()]] = True
    user_vectors = pooled_user_vectors(rows, vectors)
    wanted = set(split.targets("test")["user_id"].to_list())
    keep = [i for i, u in enumerate(users) if u in wanted]
    return dense_topk(
        [users[i] for i in keep],
        user_vectors[keep],
        items,
        vectors,
        k,
        exclude=[rows[i] for i in keep],
        allowed=allowed,
    )


def bootstrap(values: np.ndarray, n: int = 5000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="LABEL=FOLDER",
        help="A run folder with topk_test.parquet, shown as LABEL (repeatable, in order).",
    )
    parser.add_argument(
        "--list",
        action="append",
        default=[],
        metavar="LABEL=FILE",
        help="A top-k parquet (user_id, item_id, rank), e.g. a peer's list (repeatable).",
    )
    parser.add_argument("--pooled", type=Path, help="Text-tower run whose item vectors the pooled row uses.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    split = Split.load(args.split)
    targets = split.targets("test").select("user_id", "item_id")
    history = split.history("test")
    users = targets["user_id"].unique().sort()
    systems: dict[str, pl.DataFrame] = {}
    for name in ("mostpop", "itemknn"):
        model = make_baseline(name).fit(history)
        systems[{"mostpop": "MostPop", "itemknn": "ItemKNN (5 neighbours)"}[name]] = model.recommend(
            users, k=50, exclude=history, catalog=split.catalog()
        )
    for spec in args.run:
        label, sep, folder = spec.partition("=")
        if not sep or not label or not (Path(folder) / "topk_test.parquet").is_file():
            parser.error(f"--run {spec!r}: expected LABEL=FOLDER with FOLDER/topk_test.parquet")
        systems[label] = pl.read_parquet(Path(folder) / "topk_test.parquet")
    for spec in args.list:
        label, sep, file = spec.partition("=")
        if not sep or not label or not Path(file).is_file():
            parser.error(f"--list {spec!r}: expected LABEL=FILE with an existing parquet file")
        systems[label] = pl.read_parquet(file).with_columns(
            pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)
        )
    if args.pooled:
        systems["fine-tuned encoder, pooled tower"] = pooled_lists(args.pooled, split)
    tie_free = set(tie_free_users(split, "test").to_list())

    rows, record = [], {}
    for name, topk in systems.items():
        per_user = per_user_metrics(topk.select("user_id", "item_id", "rank"), targets, (10, 50))
        per_user = targets.select("user_id").join(per_user, on="user_id", how="left").fill_null(0.0)
        cells, record[name] = [], {}
        for metric in METRICS:
            values = per_user[metric].to_numpy().astype(float)
            low, high = bootstrap(values)
            record[name][metric] = {"mean": float(values.mean()), "ci": [low, high]}
            cells.append(f"{values.mean():.4f} [{low:.4f}, {high:.4f}]")
        free = per_user.filter(pl.col("user_id").is_in(list(tie_free)))["ndcg@10"].to_numpy().astype(float)
        low, high = bootstrap(free)
        record[name]["ndcg@10 tie-free"] = {"mean": float(free.mean()), "ci": [low, high], "users": len(free)}
        cells.append(f"{free.mean():.4f} [{low:.4f}, {high:.4f}]")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    header = (
        f"| system | HR@10 | NDCG@10 | MRR@10 | HR@50 | NDCG@10, {len(tie_free)} tie-free users |\n"
        "|---|---|---|---|---|---|"
    )
    table = header + "\n" + "\n".join(rows)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
        args.out.with_suffix(".json").write_text(json.dumps(record, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
