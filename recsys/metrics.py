"""Top-K ranking metrics for offline evaluation (docs/architecture.md), vectorised with polars.

Inputs are plain tables so any system — a baseline, the encoder + FAISS, the LightGBM ranker, or an
outside script that wrote a parquet file — is scored by the same code:

- `topk`: `user_id, item_id, rank` with `rank` 1-based (1 = first slot). Ranks are taken as given,
  not renumbered: a list whose slots 2–4 were filtered out keeps its hole, because the metric must
  describe the list the user would actually have seen. Ranks beyond K are ignored at cutoff K.
- `targets`: `user_id, item_id`, one or several relevant items per user. Duplicate target rows are
  collapsed (relevance is binary: an item the user touched twice in the test window counts once).

Definitions, per target user u with relevant set R_u and hits H_u@K = {relevant items at rank <= K}:

- `hr@K`      1 if |H_u@K| > 0 else 0 (hit rate).
- `recall@K`  |H_u@K| / |R_u|. Not |H_u@K| / min(|R_u|, K): the plain form is what most papers report,
              and with one target per user (leave-last-out) both are the same number.
- `ndcg@K`    DCG / IDCG with binary gains, DCG = sum over hits of 1 / log2(rank + 1) and IDCG the DCG of
              a perfect list, min(|R_u|, K) hits at ranks 1, 2, ...; so it is 1.0 exactly when the list
              starts with as many relevant items as can fit.
- `mrr@K`     1 / rank of the first hit (0 without a hit in the top K).
- `map@K`     AP@K = sum over hits at rank r of precision@r, divided by min(|R_u|, K) (so a perfect list
              scores 1 even when the user has more relevant items than slots).

A target user without any recommendation scores 0 on every metric; users in `topk` but not in
`targets` are ignored (they have nothing to be right about). A list that names the same item twice
for one user, or uses the same rank twice, is malformed — dedupe would silently hide a bug in the
system under test and double-counting would inflate its score — so it raises `DataError` naming the
column and the first offending row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import polars as pl

from recsys.errors import ConfigError, DataError
from recsys.splits import Split

if TYPE_CHECKING:
    from recsys.splits import Stage

PER_USER_METRICS = ("hr", "recall", "ndcg", "mrr", "map")
DEFAULT_KS = (10, 50)


def _check_ks(ks: Iterable[int]) -> list[int]:
    """Sorted distinct positive cutoffs; a bad cutoff is a configuration mistake, caught before any work."""
    try:
        values = sorted({int(k) for k in ks})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cutoffs must be positive integers, got {ks!r}") from exc
    if not values or values[0] < 1 or any(int(k) != k for k in ks):
        raise ConfigError(f"cutoffs must be positive integers, got {list(ks)!r}")
    return values


def _require(df: pl.DataFrame, columns: Sequence[str], what: str, file: str | None) -> None:
    for column in columns:
        if column not in df.columns:
            raise DataError(
                f"{what} table is missing required column '{column}' (has: {', '.join(df.columns) or 'none'})",
                file=file,
                column=column,
            )


def _first_row(mask: pl.Series) -> int:
    """1-based row of the first True in `mask` (for DataError's `row`)."""
    return int(mask.arg_true()[0]) + 1


def _as_str(df: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """Ids are strings by contract; integer ids from an outside file are accepted and cast so joins match."""
    return df.with_columns([pl.col(c).cast(pl.String) for c in columns if df.schema[c] != pl.String])


def _prepare_topk(topk: pl.DataFrame, file: str | None = None) -> pl.DataFrame:
    _require(topk, ("user_id", "item_id", "rank"), "top-K", file)
    topk = _as_str(topk.select("user_id", "item_id", "rank"), ("user_id", "item_id"))
    if not topk.schema["rank"].is_integer():
        raise DataError(f"rank must be an integer, got {topk.schema['rank']}", file=file, column="rank")
    for column in ("user_id", "item_id", "rank"):
        nulls = topk[column].is_null()
        if nulls.any():
            raise DataError("null value", file=file, column=column, row=_first_row(nulls), count=int(nulls.sum()))
    bad_rank = topk["rank"] < 1
    if bad_rank.any():
        raise DataError(
            "rank must be >= 1 (ranks are 1-based)",
            file=file,
            column="rank",
            row=_first_row(bad_rank),
            count=int(bad_rank.sum()),
        )
    for key, label in (("item_id", "item listed twice for the same user"), ("rank", "rank used twice")):
        dup = topk.select(pl.struct("user_id", key).is_duplicated()).to_series()
        if dup.any():
            raise DataError(
                f"{label} in one top-K list", file=file, column=key, row=_first_row(dup), count=int(dup.sum())
            )
    return topk.with_columns(pl.col("rank").cast(pl.Int64))


def _prepare_targets(targets: pl.DataFrame, file: str | None = None) -> pl.DataFrame:
    _require(targets, ("user_id", "item_id"), "targets", file)
    targets = _as_str(targets.select("user_id", "item_id"), ("user_id", "item_id"))
    for column in ("user_id", "item_id"):
        nulls = targets[column].is_null()
        if nulls.any():
            raise DataError(
                "null value in targets", file=file, column=column, row=_first_row(nulls), count=int(nulls.sum())
            )
    if targets.height == 0:
        raise DataError("targets are empty: there is nothing to score", file=file)
    return targets.unique(["user_id", "item_id"])


def _ideal_dcg(max_k: int):
    """idcg[n] = sum_{i=1..n} 1/log2(i+1), for n = 0..max_k (a lookup so IDCG needs no per-user loop)."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, max_k + 2)))])


def _per_user(topk: pl.DataFrame, relevant: pl.DataFrame, ks: list[int]) -> pl.DataFrame:
    """Core of `per_user_metrics` on already-validated tables."""
    n_rel = relevant.group_by("user_id").agg(pl.len().alias("n_relevant"))
    max_k = ks[-1]
    hits = (
        topk.filter(pl.col("rank") <= max_k)
        .join(relevant, on=["user_id", "item_id"], how="inner")
        .sort(["user_id", "rank"])
        # position of this hit among the user's hits (1-based): precision@rank = hit_no / rank
        .with_columns(pl.int_range(1, pl.len() + 1).over("user_id").alias("hit_no"))
    )
    rank = pl.col("rank")
    aggs = []
    for k in ks:
        within = rank <= k
        aggs += [
            within.sum().alias(f"_hits@{k}"),
            (1.0 / (rank + 1).log(2)).filter(within).sum().alias(f"_dcg@{k}"),
            (1.0 / rank.filter(within).min()).alias(f"_rr@{k}"),
            (pl.col("hit_no") / rank).filter(within).sum().alias(f"_ap@{k}"),
        ]
    per_hit_user = hits.group_by("user_id").agg(aggs)
    table = n_rel.join(per_hit_user, on="user_id", how="left")

    idcg = _ideal_dcg(max_k)
    columns = [pl.col("user_id"), pl.col("n_relevant")]
    for k in ks:
        denom = pl.min_horizontal(pl.col("n_relevant"), pl.lit(k))
        hits_k = pl.col(f"_hits@{k}").fill_null(0)
        ideal = denom.replace_strict(list(range(max_k + 1)), idcg.tolist(), return_dtype=pl.Float64)
        columns += [
            (hits_k > 0).cast(pl.Float64).alias(f"hr@{k}"),
            (hits_k / pl.col("n_relevant")).alias(f"recall@{k}"),
            (pl.col(f"_dcg@{k}").fill_null(0.0) / ideal).alias(f"ndcg@{k}"),
            pl.col(f"_rr@{k}").fill_null(0.0).alias(f"mrr@{k}"),
            (pl.col(f"_ap@{k}").fill_null(0.0) / denom).alias(f"map@{k}"),
        ]
    return table.select(columns).sort("user_id")


def per_user_metrics(topk: pl.DataFrame, targets: pl.DataFrame, ks: Iterable[int] = DEFAULT_KS) -> pl.DataFrame:
    """One row per target user: `user_id`, `n_relevant`, then `hr@K, recall@K, ndcg@K, mrr@K, map@K` per K.

    Kept per user (not just averaged) because the A/B report needs paired per-user differences,
    bootstrap intervals and segment breakdowns, all of which start from this table.
    """
    ks_sorted = _check_ks(ks)
    return _per_user(_prepare_topk(topk), _prepare_targets(targets), ks_sorted)


def _item_popularity(item_counts: pl.DataFrame, catalog: pl.Series | None) -> pl.DataFrame:
    """`item_id, count, p, percentile` over the catalog (or the counted items when no catalog is given).

    Catalog items never seen in training get count 0. For self-information, p uses a floor of one
    interaction, so a never-seen item has the largest finite novelty instead of infinity.
    """
    _require(item_counts, ("item_id", "count"), "item_counts", None)
    counts = (
        _as_str(item_counts.select("item_id", "count"), ("item_id",))
        .group_by("item_id")
        .agg(pl.col("count").sum().cast(pl.Float64))
    )
    if catalog is not None:
        items = pl.DataFrame({"item_id": catalog.cast(pl.String)}).unique()
        counts = items.join(counts, on="item_id", how="left").with_columns(pl.col("count").fill_null(0.0))
    total = counts["count"].sum()
    if total <= 0:
        raise DataError("item_counts has no positive count", column="count")
    return counts.with_columns(
        (pl.max_horizontal(pl.col("count"), pl.lit(1.0)) / total).alias("p"),
        (pl.col("count").rank("average") / pl.len()).alias("percentile"),
    )


def evaluate_topk(
    topk: pl.DataFrame,
    targets: pl.DataFrame,
    ks: Iterable[int] = DEFAULT_KS,
    catalog: pl.Series | None = None,
    item_counts: pl.DataFrame | None = None,
) -> dict[str, float]:
    """Means of the per-user metrics over all target users, plus list-level metrics.

    - `coverage@K`: distinct items recommended in the top K of the target users' lists that are in the
      catalog, divided by the catalog size. Only with `catalog` (without one there is no denominator).
    - `novelty@K`: mean self-information -log2 p(i) over every recommended slot (rank <= K) of the target
      users, p(i) = count(i) / total count in `item_counts` (training interactions), floored at one
      interaction. Higher = less obvious items. Only with `item_counts`.
    - `popularity_bias@K`: mean popularity *percentile* of the recommended slots: an item's training count
      ranked among the catalog items (average rank for ties) divided by the catalog size, so 1.0 means
      "always the most popular item" and about 0.5 a random pick from the catalog. Chosen over ARP
      (average raw count) because a percentile compares across data sets and catalog sizes. Only with
      `item_counts`.
    - `users`: number of target users (the denominator of every mean).

    Lists of users that are not target users are left out of every number, so that scoring a system
    that wrote lists for everyone equals scoring just the evaluated users.
    """
    ks_sorted = _check_ks(ks)
    slots = _prepare_topk(topk)
    relevant = _prepare_targets(targets)
    per_user = _per_user(slots, relevant, ks_sorted)
    result: dict[str, float] = {}
    for k in ks_sorted:
        for name in PER_USER_METRICS:
            result[f"{name}@{k}"] = float(cast(float, per_user[f"{name}@{k}"].mean()))
    slots = slots.join(per_user.select("user_id"), on="user_id", how="semi")
    popularity = _item_popularity(item_counts, catalog) if item_counts is not None else None
    if catalog is not None:
        catalog_items = pl.DataFrame({"item_id": catalog.cast(pl.String)}).unique()
        if catalog_items.height == 0:
            raise DataError("catalog is empty", column="item_id")
    for k in ks_sorted:
        in_top = slots.filter(pl.col("rank") <= k)
        if catalog is not None:
            covered = in_top.select("item_id").unique().join(catalog_items, on="item_id", how="semi").height
            result[f"coverage@{k}"] = covered / catalog_items.height
        if popularity is not None:
            scored = in_top.join(popularity, on="item_id", how="left").with_columns(
                # an item outside both the catalog and the counts: the one-interaction floor
                pl.col("p").fill_null(1.0 / cast(int, popularity["count"].sum())),
                pl.col("percentile").fill_null(0.0),
            )
            if scored.height:
                result[f"novelty@{k}"] = float(cast(float, (-scored["p"].log(2)).mean()))
                result[f"popularity_bias@{k}"] = float(cast(float, scored["percentile"].mean()))
            else:
                result[f"novelty@{k}"] = 0.0
                result[f"popularity_bias@{k}"] = 0.0
    result["users"] = float(per_user.height)
    return result


def item_counts_from(history: pl.DataFrame) -> pl.DataFrame:
    """`item_id, count` of a history table: the popularity that novelty and bias are measured against."""
    return history.group_by("item_id").agg(pl.len().alias("count"))


def score_topk_file(
    topk_path: str | Path,
    split_folder: str | Path,
    stage: Stage = "test",
    ks: Iterable[int] = DEFAULT_KS,
    users: Iterable[str] | None = None,
) -> dict[str, float]:
    """Score a parquet top-K list (`user_id, item_id, rank`) against a split saved by `Split.save`.

    Uses the split's own catalog and the history of `stage` for popularity, so a list written by an
    outside system is scored exactly as the built-in ones are. `users` restricts the target users
    (e.g. `recsys.ties.tie_free_users`).
    """
    path = Path(topk_path)
    if not path.exists():
        raise DataError("top-K file not found", file=str(path))
    try:
        topk = pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for non-parquet input
        raise DataError(f"cannot read as parquet: {exc}", file=str(path)) from exc
    split = Split.load(split_folder)
    targets = split.targets(stage)  # validates the stage name
    if users is not None:
        targets = targets.filter(pl.col("user_id").is_in(list(users)))
    ks_sorted = _check_ks(ks)
    _prepare_topk(topk, file=str(path))  # so a malformed list names the file it came from
    return evaluate_topk(
        topk,
        targets,
        ks=ks_sorted,
        catalog=split.catalog(),
        item_counts=item_counts_from(split.history(stage)),
    )
