"""Paired A/B statistics and segments: known answers on arrays and on synthetic recommendation lists."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats

from recsys.abtest.paired import (
    bootstrap_ci,
    cohens_dz,
    compare_arrays,
    compare_topk,
    holm,
    paired_ttest_pvalues,
    sign_flip_pvalues,
    verdict_line,
)
from recsys.abtest.segments import item_segments, segment_comparisons, user_segments
from recsys.baselines import MostPop
from recsys.data.synthetic import generate
from recsys.errors import ConfigError, DataError
from recsys.metrics import per_user_metrics
from recsys.splits import leave_last_out

FAST = {"n_bootstrap": 2000, "n_permutations": 2000}


@pytest.fixture(scope="module")
def split():
    return leave_last_out(generate(8000, seed=11, n_impressions_requests=0).interactions)


@pytest.fixture(scope="module")
def mostpop_lists(split):
    history = split.history("test")
    users = split.test["user_id"].unique().sort()
    return MostPop().fit(history).recommend(users, k=50, exclude=history, catalog=split.catalog())


# -- building blocks with hand-computed answers ------------------------------------------------------


def test_holm_matches_a_hand_computed_case():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1, monotone
    out = holm([0.02, np.nan, 0.04])  # NaN is not a hypothesis: m = 2
    np.testing.assert_allclose(out[[0, 2]], [0.04, 0.04])
    assert np.isnan(out[1])


def test_effect_size_t_test_and_exact_sign_flip_p():
    d = np.array([1.0, 2.0, 3.0])
    assert cohens_dz(d)[0] == pytest.approx(2.0)  # mean 2, sd 1
    a = np.array([0.1, 0.5, 0.2, 0.9, 0.4])
    b = np.array([0.3, 0.4, 0.6, 1.0, 0.8])
    assert paired_ttest_pvalues(b - a)[0] == pytest.approx(stats.ttest_rel(b, a).pvalue)
    # three positive differences: only "all +" and "all -" of the 8 sign patterns reach |mean| = 2
    assert sign_flip_pvalues(d, n_permutations=40_000, seed=1)[0] == pytest.approx(0.25, abs=0.01)


def test_verdict_lines_read_as_specified():
    line = verdict_line("ndcg@10", 0.012, 0.004, 0.020, 0.003)
    assert line == "B better on NDCG@10: +0.012 (95% CI +0.004…+0.020), p=0.003 after Holm"
    assert verdict_line("hr@10", -0.05, -0.08, -0.02, 0.0004).startswith("A better on HR@10: -0.050")
    # a bound that would print as -0.000 switches the line to 4 decimals
    line = verdict_line("mrr@10", 0.0097, -0.0003, 0.0201, 0.131)
    assert "+0.0097 (95% CI -0.0003…+0.0201), p=0.131" in line
    assert verdict_line("recall@50", 0.002, -0.001, 0.005, 0.2).startswith(
        "no significant difference on Recall@50: +0.0020 (95% CI -0.0010…+0.0050), p=0.200"
    )


def test_bad_inputs_are_reported():
    with pytest.raises(DataError, match="same"):
        compare_arrays(np.zeros((5, 2)), np.zeros((4, 2)), ["a", "b"], **FAST)
    with pytest.raises(DataError, match="finite"):
        compare_arrays(np.array([0.1, np.nan]), np.array([0.1, 0.2]), ["a"], **FAST)
    with pytest.raises(ConfigError, match="n_bootstrap"):
        compare_arrays(np.zeros(5), np.zeros(5), ["a"], n_bootstrap=10)
    with pytest.raises(ConfigError, match="primary"):
        compare_arrays(np.zeros(5), np.zeros(5), ["a"], primary="wilcoxon", **FAST)  # type: ignore[arg-type]


# -- calibration under the null ---------------------------------------------------------------------


def test_null_ci_covers_zero_about_95_percent_and_tests_hold_their_level():
    """Two systems with the same per-user distribution: the CI of the mean difference covers 0 ~95%."""
    n_users, n_seeds = 300, 200
    covered = 0
    diffs = np.empty((n_users, n_seeds))
    for seed in range(n_seeds):
        rng = np.random.default_rng(10_000 + seed)
        # per-user NDCG-like values: a hit with probability 0.3, then a rank discount
        a = (rng.random(n_users) < 0.3) / np.log2(rng.integers(1, 11, n_users) + 1)
        b = (rng.random(n_users) < 0.3) / np.log2(rng.integers(1, 11, n_users) + 1)
        low, high = bootstrap_ci(b - a, n_bootstrap=2000, seed=seed)
        covered += bool(low[0] <= 0.0 <= high[0])
        diffs[:, seed] = b - a
    assert 0.90 <= covered / n_seeds <= 0.99
    for p in (paired_ttest_pvalues(diffs), sign_flip_pvalues(diffs, n_permutations=2000, seed=3)):
        assert 0.01 <= float((p < 0.05).mean()) <= 0.10


# -- on recommendation lists --------------------------------------------------------------------------


def test_a_system_compared_with_itself_has_exactly_zero_differences(split, mostpop_lists):
    result = compare_topk(mostpop_lists, mostpop_lists, split.test, **FAST)
    assert len(result.metrics) == 10
    for m in result.metrics:
        assert m.diff == 0.0 and m.ci_low == 0.0 and m.ci_high == 0.0
        assert m.mean_a == m.mean_b
        assert m.p_ttest == 1.0 and m.p_randomization == 1.0 and m.p_holm == 1.0
        assert m.effect_size == 0.0 and not m.significant
        assert m.verdict.startswith("no significant difference on ")
    headline = result.metrics[0].verdict
    assert headline.startswith("no significant difference on NDCG@10: +0.000 (95% CI +0.000…+0.000)")


def _plant_hits(topk: pl.DataFrame, targets: pl.DataFrame, share: float, seed: int) -> tuple[pl.DataFrame, set[str]]:
    """B = A, except a random `share` of users get their target item inserted at rank 1."""
    users = targets["user_id"].unique().sort()
    rng = np.random.default_rng(seed)
    lucky = set(users.gather(rng.choice(users.len(), int(share * users.len()), replace=False)).to_list())
    planted = targets.filter(pl.col("user_id").is_in(list(lucky))).select("user_id", "item_id")
    rest = (
        topk.filter(pl.col("user_id").is_in(list(lucky)))
        .join(planted, on=["user_id", "item_id"], how="anti")
        .sort("user_id", "rank")
        .with_columns((pl.int_range(pl.len()).over("user_id") + 2).cast(pl.Int64).alias("rank"))
        .filter(pl.col("rank") <= 50)
        .select("user_id", "item_id", "rank")
    )
    first = planted.with_columns(pl.lit(1, dtype=pl.Int64).alias("rank"))
    others = topk.filter(~pl.col("user_id").is_in(list(lucky))).select(
        "user_id", "item_id", pl.col("rank").cast(pl.Int64)
    )
    return pl.concat([others, first, rest]), lucky


def test_a_planted_lift_is_detected_after_holm(split, mostpop_lists):
    targets = split.test
    lifted, lucky = _plant_hits(mostpop_lists, targets, share=0.2, seed=5)
    result = compare_topk(mostpop_lists, lifted, targets, seed=2, **FAST)
    by = result.by_metric()
    for metric in ("ndcg@10", "hr@10", "mrr@10", "recall@50", "map@10"):
        assert by[metric].p_holm < 0.01
        assert by[metric].significant and by[metric].verdict.startswith("B better on ")
        assert by[metric].ci_low > 0
    # known answer: HR@10 rises by exactly the share of lucky users who had no hit in A's top 10
    per_user = per_user_metrics(mostpop_lists, targets, [10])
    hits_a = per_user.filter(pl.col("hr@10") == 1.0)["user_id"].to_list()
    expected = len(lucky - set(hits_a)) / targets["user_id"].n_unique()
    assert by["hr@10"].diff == pytest.approx(expected)


def test_users_missing_from_a_system_count_as_zero(split, mostpop_lists):
    targets = split.test
    dropped = targets["user_id"].unique().sort()[:40].to_list()
    partial = mostpop_lists.filter(~pl.col("user_id").is_in(dropped))
    result = compare_topk(mostpop_lists, partial, targets, **FAST)
    full = per_user_metrics(mostpop_lists, targets, [10, 50])
    expected_b = full.with_columns(
        pl.when(pl.col("user_id").is_in(dropped)).then(0.0).otherwise(pl.col("hr@10")).alias("hr@10")
    )["hr@10"].mean()
    assert result.n_users == targets["user_id"].n_unique()
    assert result.by_metric()["hr@10"].mean_b == pytest.approx(expected_b)
    assert result.by_metric()["hr@10"].diff <= 0


# -- segments -----------------------------------------------------------------------------------------


def test_user_segments_partition_the_users_with_terciles_or_given_thresholds(split):
    history = split.history("test")
    users = split.test["user_id"]
    segments, (t1, t2) = user_segments(history, users)
    assert segments.height == users.n_unique()
    assert set(segments["segment"].unique()) <= {"cold", "medium", "heavy"}
    lengths = segments["history_length"].to_numpy()
    assert t1 <= t2 and t1 == int(np.floor(np.quantile(lengths, 1 / 3)))
    expected = np.where(lengths <= t1, "cold", np.where(lengths <= t2, "medium", "heavy"))
    assert (segments["segment"].to_numpy() == expected).all()
    fixed, used = user_segments(history, users, thresholds=(5, 20))
    assert used == (5, 20)
    assert (fixed.filter(pl.col("segment") == "cold")["history_length"] <= 5).all()
    assert (fixed.filter(pl.col("segment") == "heavy")["history_length"] > 20).all()
    with pytest.raises(ConfigError):
        user_segments(history, users, thresholds=(20, 5))


def test_item_segments_head_is_the_top_fifth_of_seen_items(split):
    history = split.history("test")
    catalog = split.catalog()
    items, head_mass = item_segments(history, catalog, head_share=0.2)
    seen = items.filter(pl.col("count") > 0)
    head = items.filter(pl.col("segment") == "head")
    assert head.height == int(np.ceil(0.2 * seen.height))
    assert head["count"].min() >= items.filter(pl.col("segment") == "tail")["count"].max()
    assert (items.filter(pl.col("segment") == "cold")["count"] == 0).all()
    assert head_mass == pytest.approx(head["count"].sum() / history.height)
    assert 0.2 < head_mass < 1.0


def test_segment_comparisons_partition_users_and_targets(split, mostpop_lists):
    targets = split.test
    lifted, _ = _plant_hits(mostpop_lists, targets, share=0.2, seed=9)
    segments, info = segment_comparisons(
        mostpop_lists, lifted, targets, split.history("test"), catalog=split.catalog(), **FAST
    )
    by_user = [s for s in segments if s.kind == "history"]
    by_item = [s for s in segments if s.kind == "item"]
    assert [s.segment for s in by_user] == ["cold", "medium", "heavy"]
    assert sum(s.n_users for s in by_user) == targets["user_id"].n_unique()
    assert sum(s.n_targets for s in by_item) == targets.height
    assert info["history_thresholds"][0] <= info["history_thresholds"][1]
    for seg in segments:
        if seg.comparison is not None:
            m = seg.comparison.by_metric()["hr@10"]
            assert m.ci_low <= m.diff <= m.ci_high
            assert m.diff >= 0  # B only adds hits
