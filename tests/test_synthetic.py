"""The synthetic generator: contracts, sizes, structure (taste, drift, sessions) and logged propensities."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from recsys.data.contracts import validate_impressions, validate_interactions, validate_items
from recsys.data.synthetic import (
    CATEGORIES,
    TEXT_TEMPLATE,
    SyntheticConfig,
    generate,
    generate_with_truth,
)
from recsys.errors import ConfigError, DataError

N = 6000
REQUESTS = 4000
START = datetime(2024, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def data():
    return generate_with_truth(N, n_impressions_requests=REQUESTS, seed=3)


@pytest.fixture(scope="module")
def enriched(data):
    """Interactions with the item's category and title, and each row's index and count within its user."""
    dataset, _ = data
    return dataset.interactions.join(
        dataset.items.select("item_id", "category", "title"), on="item_id", maintain_order="left"
    ).with_columns(
        pl.int_range(pl.len()).over("user_id").alias("k"),
        pl.len().over("user_id").alias("n"),
    )


def test_same_seed_gives_identical_frames_and_another_seed_differs():
    a = generate(1500, seed=7, n_impressions_requests=50)
    b = generate(1500, seed=7, n_impressions_requests=50)
    c = generate(1500, seed=8, n_impressions_requests=50)
    assert a.items.equals(b.items)
    assert a.interactions.equals(b.interactions)
    assert a.impressions is not None and b.impressions is not None
    assert a.impressions.equals(b.impressions)
    assert not a.interactions.equals(c.interactions)
    assert not a.items["title"].equals(c.items["title"])


def test_output_passes_the_contracts(data):
    dataset, _ = data
    assert dataset.name == "synthetic"
    assert dataset.text_template == TEXT_TEMPLATE
    items = validate_items(dataset.items)
    interactions, dropped = validate_interactions(dataset.interactions, items=items)
    impressions = validate_impressions(dataset.impressions, items=items)
    assert dropped == 0
    assert items.columns == ["item_id", "title", "description", "category", "created_at"]
    assert interactions.columns == ["user_id", "item_id", "ts", "event", "weight"]
    assert impressions.columns == ["request_id", "user_id", "ts", "item_id", "position", "clicked", "propensity"]
    assert dataset.interactions.schema == interactions.schema  # already canonical: validation changed nothing
    assert dataset.impressions.schema == impressions.schema
    assert set(interactions["event"].unique()) == {"view", "purchase"}
    assert set(interactions["weight"].unique()) == {1.0, 3.0}
    assert re.fullmatch(r"u\d{6}", interactions["user_id"][0]) and re.fullmatch(r"i\d{6}", items["item_id"][0])


def test_counts_are_as_requested():
    dataset = generate(3000, n_users=120, n_items=700, seed=1, n_impressions_requests=250)
    assert dataset.interactions.height == 3000
    assert dataset.interactions["user_id"].n_unique() == 120
    assert dataset.items.height == 700
    assert dataset.impressions is not None
    assert dataset.impressions["request_id"].n_unique() == 250
    assert dataset.impressions.height == 250 * SyntheticConfig().slate_size
    assert dataset.impressions.group_by("request_id").agg(pl.col("position").sort())["position"].to_list()[0] == list(
        range(10)
    )


def test_small_sizes_work_and_impossible_sizes_are_refused():
    small = generate(1000, seed=0)
    assert small.interactions.height == 1000
    assert small.impressions is not None and small.impressions.height > 0
    assert generate(30, n_items=200, n_impressions_requests=0).impressions is None
    with pytest.raises(ConfigError, match="at least 3"):
        generate(100, n_users=40)
    with pytest.raises(ConfigError, match="n_items"):
        generate(1000, n_items=50)
    with pytest.raises(ConfigError, match="logging_temperature"):
        generate(1000, config=SyntheticConfig(logging_temperature=0.0))
    with pytest.raises(ConfigError, match="start"):
        generate(1000, start="yesterday")


def test_every_user_has_three_interactions_and_strictly_increasing_timestamps(data):
    dataset, _ = data
    inter = dataset.interactions
    assert inter.group_by("user_id").len()["len"].min() >= 3
    gaps = inter.select((pl.col("ts") - pl.col("ts").shift(1)).over("user_id").alias("gap"))["gap"].drop_nulls()
    assert (gaps.dt.total_microseconds() > 0).all()
    assert inter["ts"].min() >= START
    # items are only consumed once they exist, and some items appear during the period
    joined = inter.join(dataset.items.select("item_id", "created_at"), on="item_id")
    assert (joined["created_at"] <= joined["ts"]).all()
    new = dataset.items.filter(pl.col("created_at") >= START)
    assert 0.1 * dataset.items.height < new.height < 0.5 * dataset.items.height


def test_user_activity_and_item_popularity_are_long_tailed(enriched):
    per_user = enriched.group_by("user_id").len()["len"]
    assert per_user.max() >= 8 * per_user.median()
    per_item = enriched.group_by("item_id").len()["len"].sort(descending=True)
    n_items = per_item.len()
    top_share = per_item.head(n_items // 10).sum() / enriched.height
    assert top_share > 0.25  # the top 10% of items take well over 10% of interactions


def _top2_share(frame: pl.DataFrame) -> float:
    shares = (
        frame.group_by("user_id", "category")
        .len()
        .with_columns((pl.col("len") / pl.col("len").sum().over("user_id")).alias("share"))
    )
    top = shares.sort("share", descending=True).group_by("user_id").head(2)
    return float(top.group_by("user_id").agg(pl.col("share").sum())["share"].mean())


def test_users_concentrate_on_their_top_categories(enriched):
    actual = _top2_share(enriched)
    # the same rows with categories shuffled across all users: what "no taste" looks like at these counts
    no_taste = _top2_share(enriched.with_columns(pl.col("category").shuffle(seed=3)))
    assert actual > 0.6
    assert actual > no_taste + 0.2


def _early_late_distance(frame: pl.DataFrame) -> float:
    """Mean total-variation distance between a user's first-third and last-third category mix."""
    parts = (
        frame.filter(pl.col("n") >= 15)
        .with_columns(
            pl.when(pl.col("k") < pl.col("n") / 3)
            .then(pl.lit("early"))
            .when(pl.col("k") >= 2 * pl.col("n") / 3)
            .then(pl.lit("late"))
            .alias("part")
        )
        .drop_nulls("part")
    )
    mix = (
        parts.group_by("user_id", "part", "category")
        .len()
        .with_columns((pl.col("len") / pl.col("len").sum().over("user_id", "part")).alias("p"))
    )
    wide = mix.pivot(on="part", index=["user_id", "category"], values="p").fill_null(0.0)
    tv = wide.group_by("user_id").agg(((pl.col("early") - pl.col("late")).abs().sum() / 2).alias("tv"))
    return float(tv["tv"].mean())


def test_tastes_drift_over_time(data, enriched):
    drifted = _early_late_distance(enriched)
    # shuffling each user's rows in time keeps their overall mix but removes any drift
    static = _early_late_distance(enriched.with_columns(pl.col("category").shuffle(seed=5).over("user_id")))
    assert drifted > static + 0.1
    # and the ground truth agrees: category preferences at a user's first and last interaction differ
    _, truth = data
    ends = enriched.group_by("user_id").agg(pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last"))
    early = truth.category_preference(ends["user_id"], ends["first"])
    late = truth.category_preference(ends["user_id"], ends["last"])
    np.testing.assert_allclose(early.sum(axis=1), 1.0, rtol=1e-5)
    assert np.abs(early - late).sum(axis=1).mean() / 2 > 0.2


def test_sessions_have_sequential_structure(enriched):
    def same_category_rate(frame: pl.DataFrame) -> float:
        pairs = frame.with_columns(
            pl.col("category").shift(1).over("user_id").alias("prev"),
            (pl.col("ts") - pl.col("ts").shift(1)).over("user_id").alias("gap"),
        ).filter(pl.col("gap") < pl.duration(minutes=20))
        return float((pairs["category"] == pairs["prev"]).mean())

    shuffled = enriched.with_columns(pl.col("category", "title").shuffle(seed=11).over("user_id"))
    assert same_category_rate(enriched) > same_category_rate(shuffled) + 0.3

    def next_volume_count(frame: pl.DataFrame) -> int:
        series = frame.with_columns(
            pl.col("title").str.extract(r"^(.*), Book \d+$", 1).alias("series"),
            pl.col("title").str.extract(r", Book (\d+)$", 1).cast(pl.Int64).alias("volume"),
        ).with_columns(
            pl.col("series").shift(1).over("user_id").alias("prev_series"),
            pl.col("volume").shift(1).over("user_id").alias("prev_volume"),
        )
        hit = (series["series"] == series["prev_series"]) & (series["volume"] == series["prev_volume"] + 1)
        return int(hit.sum())

    assert next_volume_count(enriched) > 2 * next_volume_count(shuffled) + 5


def test_text_is_meaningful_and_category_specific(data):
    dataset, _ = data
    items = dataset.items
    for column in ("title", "description", "category"):
        assert (items[column].str.len_chars() > 0).all()
    assert items["category"].n_unique() == len(CATEGORIES) >= 8
    for category in CATEGORIES:
        own = items.filter(pl.col("category") == category.name)
        other = items.filter(pl.col("category") != category.name)
        signature = category.signature.lower()
        assert own["description"].str.to_lowercase().str.contains(signature, literal=True).all(), category.name
        leak = other["description"].str.to_lowercase().str.contains(signature, literal=True).mean()
        assert leak < 0.02, (category.name, leak)
        nouns = sorted({n for t in category.topics for n in t.nouns}, key=len, reverse=True)
        pattern = "|".join(re.escape(n) for n in nouns)
        assert own["title"].str.contains(pattern).all(), category.name
    # words overlap far more within a category than across categories
    sample = items.sample(300, seed=0)
    words = [set(d.lower().split()) for d in sample["description"].to_list()]
    cats = sample["category"].to_list()
    within, across = [], []
    for i in range(len(words)):
        for j in range(i + 1, len(words)):
            jaccard = len(words[i] & words[j]) / len(words[i] | words[j])
            (within if cats[i] == cats[j] else across).append(jaccard)
    assert np.mean(within) > 2.5 * np.mean(across)
    rendered = dataset.item_text()["text"]
    assert rendered.str.contains(" | ", literal=True).all()
    assert items["title"].str.contains(r", Book \d+$").any()  # some items form series


def test_propensities_are_plackett_luce_conditionals(data):
    dataset, truth = data
    imp = dataset.impressions
    p = imp["propensity"].to_numpy()
    assert ((p > 0) & (p <= 1)).all()
    # the whole-catalog single-slot probability of every shown item, recomputed from the ground truth
    single = truth.logging_probability(imp["user_id"], imp["item_id"], imp["ts"]).reshape(REQUESTS, -1)
    placed_before = np.cumsum(single, axis=1) - single
    np.testing.assert_allclose(p.reshape(REQUESTS, -1), single / (1.0 - placed_before), rtol=1e-6)
    top = imp.filter(pl.col("position") == 0)
    rows = truth.logging_probability_matrix(top["user_id"][:50], top["ts"][:50], dataset.items["item_id"])
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-9)


def test_ips_of_the_logging_policy_matches_its_observed_and_true_click_rate(data):
    dataset, truth = data
    top = dataset.impressions.filter(pl.col("position") == 0)
    clicks = top["clicked"].to_numpy().astype(np.float64)
    logged = top["propensity"].to_numpy()
    target = truth.logging_probability(top["user_id"], top["item_id"], top["ts"])
    ips = float(np.mean(clicks * target / logged))
    observed = float(clicks.mean())
    assert ips == pytest.approx(observed, rel=1e-6)
    # the observed rate is itself what the click model predicts for the logging policy
    items = dataset.items["item_id"]
    value = truth.logging_probability_matrix(top["user_id"], top["ts"], items) * truth.click_probability_matrix(
        top["user_id"], top["ts"], items, position=0
    )
    true_rate = float(value.sum(axis=1).mean())
    se = clicks.std() / np.sqrt(len(clicks))
    assert abs(observed - true_rate) < 4 * se


def test_ips_of_a_new_policy_is_unbiased(data):
    """A uniform-random single-slot policy: IPS from the logs vs its true click rate from the ground truth."""
    dataset, truth = data
    top = dataset.impressions.filter(pl.col("position") == 0)
    items = dataset.items["item_id"]
    alive = truth.available(top["ts"], items)
    n_alive = alive.sum(axis=1)
    clicks = truth.click_probability_matrix(top["user_id"], top["ts"], items, position=0)
    true_value = float(((alive * clicks).sum(axis=1) / n_alive).mean())
    terms = top["clicked"].to_numpy() * (1.0 / n_alive) / top["propensity"].to_numpy()
    se = terms.std() / np.sqrt(len(terms))
    assert se < 0.25 * true_value
    assert abs(terms.mean() - true_value) < 4 * se
    # and the click model is position-based
    lower = truth.click_probability(top["user_id"][:5], top["item_id"][:5], [3] * 5, top["ts"][:5])
    upper = truth.click_probability(top["user_id"][:5], top["item_id"][:5], [0] * 5, top["ts"][:5])
    np.testing.assert_allclose(lower / upper, truth.position_bias[3] / truth.position_bias[0])


def test_ground_truth_rejects_unknown_ids(data):
    _, truth = data
    with pytest.raises(DataError, match="unknown id"):
        truth.affinity(["u999999"], ["i000001"], pl.Series([0]).cast(pl.Datetime("us", "UTC")))
