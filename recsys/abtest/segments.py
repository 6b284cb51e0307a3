"""Where a difference comes from: user and item segments, lift by history length, beyond-accuracy numbers.

An average lift can hide a system that helps heavy users and hurts cold ones, or that wins only on
popular targets any system gets right. The breakdowns here answer that, each with its own paired CI:

- **User history length** (the number of the user's interactions in the stage's history): `cold`
  (length <= t1), `medium` (t1 < length <= t2), `heavy` (length > t2). By default t1, t2 are the
  1/3 and 2/3 quantiles of the target users' lengths (terciles, rounded down to whole interactions);
  pass `thresholds=(t1, t2)` to fix them (e.g. to compare reports across data sets). The segments
  partition the target users; with many tied lengths a tercile can come out smaller than a third,
  or empty.
- **Item popularity of the target**: items are ranked by their interaction count in the history
  (ties by `item_id`); the top `head_share` (default 20%) of the items seen in the history are
  `head` (they usually carry most of the interactions: the share is reported), the other seen items
  `tail`, and targets never seen in the history `cold` items (new items: only content can reach
  them). These segments partition the target *rows*; a segment's metrics score the full lists
  against that segment's targets only, for the users who have at least one such target (recall and
  NDCG denominators count the segment's targets).
- **Lift by history length**: finer quantile bins of history length, each with A's and B's mean and
  the paired difference with its bootstrap CI, for the plot that shows where B's gain grows or fades.
- **Beyond accuracy**: catalog coverage, novelty and popularity bias of each system's lists, exactly
  as `recsys.metrics.evaluate_topk` defines them (list-level numbers, no per-user pairing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from recsys.abtest.paired import (
    PairedComparison,
    align_per_user,
    bootstrap_means,
    compare_arrays,
    percentile_ci,
)
from recsys.errors import ConfigError, DataError
from recsys.metrics import evaluate_topk, item_counts_from, per_user_metrics

USER_SEGMENTS = ("cold", "medium", "heavy")
ITEM_SEGMENTS = ("head", "tail", "cold")
BEYOND_ACCURACY = ("coverage", "novelty", "popularity_bias")


@dataclass
class SegmentComparison:
    """One segment's paired comparison; `comparison` is None when the segment has fewer than 2 users."""

    kind: str  # "history" or "item"
    segment: str
    definition: str
    n_users: int
    n_targets: int
    comparison: PairedComparison | None


@dataclass
class LiftBin:
    """One history-length bin of the lift plot: lengths in [low, high], paired difference of `metric`."""

    metric: str
    low: int
    high: int
    n_users: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float

    @property
    def label(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}–{self.high}"


def _check_table(df: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    for column in columns:
        if column not in df.columns:
            raise DataError(f"{what} table is missing required column '{column}'", column=column)


def history_lengths(history: pl.DataFrame, users: pl.Series) -> pl.DataFrame:
    """`user_id, history_length` for each user in `users` (0 for a user with no history: cold start)."""
    _check_table(history, ("user_id",), "history")
    counts = history.group_by(pl.col("user_id").cast(pl.String)).agg(pl.len().alias("history_length"))
    return (
        pl.DataFrame({"user_id": users.cast(pl.String)})
        .unique()
        .join(counts, on="user_id", how="left")
        .with_columns(pl.col("history_length").fill_null(0).cast(pl.Int64))
        .sort("user_id")
    )


def tercile_thresholds(lengths: np.ndarray) -> tuple[int, int]:
    """(t1, t2): the 1/3 and 2/3 quantiles of the history lengths, rounded down to whole interactions."""
    if len(lengths) == 0:
        raise DataError("no users to segment")
    t1, t2 = np.quantile(np.asarray(lengths, dtype=np.float64), [1 / 3, 2 / 3])
    return math.floor(t1), math.floor(t2)


def user_segments(
    history: pl.DataFrame, users: pl.Series, thresholds: tuple[int, int] | None = None
) -> tuple[pl.DataFrame, tuple[int, int]]:
    """`user_id, history_length, segment` (cold / medium / heavy) for each user, and the (t1, t2) used."""
    lengths = history_lengths(history, users)
    if thresholds is None:
        t1, t2 = tercile_thresholds(lengths["history_length"].to_numpy())
    else:
        try:
            t1, t2 = (int(t) for t in thresholds)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"history thresholds must be two integers, not {thresholds!r}") from exc
        if not 0 <= t1 <= t2:
            raise ConfigError(f"history thresholds need 0 <= t1 <= t2, got {thresholds!r}")
    length = pl.col("history_length")
    segment = (
        pl.when(length <= t1).then(pl.lit("cold")).when(length <= t2).then(pl.lit("medium")).otherwise(pl.lit("heavy"))
    )
    return lengths.with_columns(segment.alias("segment")), (t1, t2)


def item_segments(
    history: pl.DataFrame, catalog: pl.Series | None = None, head_share: float = 0.2
) -> tuple[pl.DataFrame, float]:
    """`item_id, count, segment` (head / tail / cold) and the share of history interactions the head holds.

    Items are the catalog's (when given) plus every item of the history; `cold` = count 0.
    """
    if not 0 < head_share < 1:
        raise ConfigError(f"head_share must be in (0, 1), got {head_share!r}")
    _check_table(history, ("item_id",), "history")
    counts = history.group_by(pl.col("item_id").cast(pl.String)).agg(pl.len().alias("count"))
    if catalog is not None:
        items = pl.DataFrame({"item_id": catalog.cast(pl.String)}).unique()
        counts = items.join(counts, on="item_id", how="full", coalesce=True).with_columns(pl.col("count").fill_null(0))
    counts = counts.sort(["count", "item_id"], descending=[True, False]).with_row_index("_rank")
    seen = int((counts["count"] > 0).sum())
    n_head = math.ceil(head_share * seen) if seen else 0
    segment = (
        pl.when(pl.col("count") == 0)
        .then(pl.lit("cold"))
        .when(pl.col("_rank") < n_head)
        .then(pl.lit("head"))
        .otherwise(pl.lit("tail"))
    )
    table = counts.with_columns(segment.alias("segment")).drop("_rank")
    total = float(table["count"].sum())
    head_mass = float(table.filter(pl.col("segment") == "head")["count"].sum()) / total if total else 0.0
    return table.with_columns(pl.col("count").cast(pl.Int64)), head_mass


def target_item_segments(targets: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """Targets with the `segment` of their item; an item unknown to `items` is a cold item."""
    _check_table(targets, ("user_id", "item_id"), "targets")
    return (
        targets.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
        .unique()
        .join(items.select("item_id", "segment"), on="item_id", how="left")
        .with_columns(pl.col("segment").fill_null("cold"))
    )


def _compare_subset(a: np.ndarray, b: np.ndarray, metrics: Sequence[str], stats: dict[str, Any]):
    return compare_arrays(a, b, metrics, **stats) if a.shape[0] >= 2 else None


def segment_comparisons(
    topk_a: pl.DataFrame,
    topk_b: pl.DataFrame,
    targets: pl.DataFrame,
    history: pl.DataFrame,
    metrics: Sequence[str] = ("ndcg@10", "hr@10"),
    ks: Sequence[int] = (10, 50),
    catalog: pl.Series | None = None,
    thresholds: tuple[int, int] | None = None,
    head_share: float = 0.2,
    **stats: Any,
) -> tuple[list[SegmentComparison], dict[str, Any]]:
    """Paired comparisons per user-history segment and per target-item segment.

    `stats` go to `compare_arrays` (n_bootstrap, n_permutations, confidence, alpha, primary, seed,
    label_a, label_b); Holm corrects across `metrics` within each segment. Returns the segments and a
    dict describing how they were cut (thresholds, head share, head mass).
    """
    per_a = per_user_metrics(topk_a, targets, ks)
    per_b = per_user_metrics(topk_b, targets, ks)
    users, a, b = align_per_user(per_a, per_b, metrics)
    segments, (t1, t2) = user_segments(history, users["user_id"], thresholds)
    labelled = users.join(segments, on="user_id", how="left", maintain_order="left").join(
        per_a.select("user_id", "n_relevant"), on="user_id", how="left", maintain_order="left"
    )
    labels = labelled["segment"].to_numpy()
    n_relevant = labelled["n_relevant"].fill_null(0).to_numpy()
    definitions = {
        "cold": f"history length <= {t1}",
        "medium": f"{t1} < history length <= {t2}",
        "heavy": f"history length > {t2}",
    }
    out = []
    for name in USER_SEGMENTS:
        rows = labels == name
        n_targets = int(n_relevant[rows].sum())
        out.append(
            SegmentComparison(
                "history",
                name,
                definitions[name],
                int(rows.sum()),
                n_targets,
                _compare_subset(a[rows], b[rows], metrics, stats),
            )
        )

    items, head_mass = item_segments(history, catalog, head_share)
    seg_targets = target_item_segments(targets, items)
    item_definitions = {
        "head": f"target among the top {head_share:.0%} most interacted items ({head_mass:.0%} of interactions)",
        "tail": "target seen in the history, outside the head",
        "cold": "target never seen in the history",
    }
    for name in ITEM_SEGMENTS:
        subset = seg_targets.filter(pl.col("segment") == name).select("user_id", "item_id")
        if subset.height == 0:
            out.append(SegmentComparison("item", name, item_definitions[name], 0, 0, None))
            continue
        sub_a = per_user_metrics(topk_a, subset, ks)
        sub_b = per_user_metrics(topk_b, subset, ks)
        _, sa, sb = align_per_user(sub_a, sub_b, metrics)
        out.append(
            SegmentComparison(
                "item",
                name,
                item_definitions[name],
                sa.shape[0],
                subset.height,
                _compare_subset(sa, sb, metrics, stats),
            )
        )
    info = {
        "history_thresholds": [t1, t2],
        "thresholds_from": "terciles" if thresholds is None else "configured",
        "head_share": head_share,
        "head_interaction_share": head_mass,
        "items_head": int((items["segment"] == "head").sum()),
        "items_tail": int((items["segment"] == "tail").sum()),
        "items_cold": int((items["segment"] == "cold").sum()),
    }
    return out, info


def lift_by_history(
    users: pl.DataFrame,
    values_a: np.ndarray,
    values_b: np.ndarray,
    history: pl.DataFrame,
    metric: str,
    n_bins: int = 6,
    n_bootstrap: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[LiftBin]:
    """Paired difference of one metric per history-length bin (quantile bins, merged where lengths tie).

    `users` (`user_id`, in the row order of `values_a`/`values_b`, 1-D arrays of the metric) is what
    `align_per_user` returns. Bins with a single user get a degenerate CI (the user's own difference).
    """
    if n_bins < 1:
        raise ConfigError(f"n_bins must be >= 1, got {n_bins}")
    a = np.asarray(values_a, dtype=np.float64).ravel()
    b = np.asarray(values_b, dtype=np.float64).ravel()
    lengths = (
        users.join(history_lengths(history, users["user_id"]), on="user_id", how="left")
        .with_columns(pl.col("history_length").fill_null(0))["history_length"]
        .to_numpy()
    )
    edges = np.unique(np.floor(np.quantile(lengths, np.linspace(0, 1, n_bins + 1))).astype(np.int64))
    # bins [e0, e1], (e1, e2], ..., (e_{n-1}, e_n]: the inner edges decide, the outer ones are min and max
    inner = edges[1:-1]
    bin_of = np.searchsorted(inner, lengths, side="left")
    out = []
    for i in range(len(inner) + 1):
        rows = bin_of == i
        if not rows.any():
            continue
        diff = b[rows] - a[rows]
        low, high = percentile_ci(bootstrap_means(diff, n_bootstrap, seed + i), confidence)
        out.append(
            LiftBin(
                metric,
                int(lengths[rows].min()),
                int(lengths[rows].max()),
                int(rows.sum()),
                float(a[rows].mean()),
                float(b[rows].mean()),
                float(diff.mean()),
                float(low[0]),
                float(high[0]),
            )
        )
    return out


def beyond_accuracy(
    topk: pl.DataFrame,
    targets: pl.DataFrame,
    history: pl.DataFrame,
    catalog: pl.Series,
    ks: Sequence[int] = (10, 50),
) -> dict[str, float]:
    """Coverage, novelty and popularity bias per K of one system's lists (`evaluate_topk` definitions)."""
    scores = evaluate_topk(topk, targets, ks=ks, catalog=catalog, item_counts=item_counts_from(history))
    return {key: value for key, value in scores.items() if key.split("@")[0] in BEYOND_ACCURACY}
