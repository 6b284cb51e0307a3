"""Seed bagging (`ranking.ensemble`): several real LightGBM LambdaRank boosters merged into one."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from ranking.ensemble import average_boosters


def _ranking_data(seed: int = 0, queries: int = 80, per_query: int = 30) -> tuple[np.ndarray, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    n = queries * per_query
    x = rng.normal(size=(n, 5))
    x[:, 4] = rng.integers(0, 6, n)  # a categorical column, as the ranker's `category` and `source` are
    y = (x[:, 0] + 0.5 * (x[:, 4] == 2) + rng.normal(size=n) > 0.8).astype(int) + (x[:, 1] > 1.2)
    return x, y, [per_query] * queries


def _members(x: np.ndarray, y: np.ndarray, groups: list[int], seeds: int) -> list[lgb.Booster]:
    params = {
        "objective": "lambdarank",
        "num_leaves": 7,
        "min_data_in_leaf": 20,
        "feature_fraction": 0.7,
        "bagging_fraction": 0.7,
        "bagging_freq": 1,
        "verbose": -1,
    }
    return [
        lgb.train(
            {**params, "seed": seed},
            lgb.Dataset(x, y, group=groups, categorical_feature=[4]),
            num_boost_round=15 + 5 * seed,
        )
        for seed in range(seeds)
    ]


def test_the_merged_booster_scores_and_explains_like_the_mean_of_its_members(tmp_path):
    x, y, groups = _ranking_data()
    members = _members(x, y, groups, seeds=3)
    assert len({m.num_trees() for m in members}) == 3  # members of different lengths
    merged = average_boosters(members)
    assert merged.num_trees() == sum(m.num_trees() for m in members)
    np.testing.assert_allclose(merged.predict(x), np.mean([m.predict(x) for m in members], axis=0), atol=1e-12)
    contrib = np.mean([m.predict(x, pred_contrib=True) for m in members], axis=0)
    np.testing.assert_allclose(merged.predict(x, pred_contrib=True), contrib, atol=1e-6)
    # one native model file, as the ranker folder and MLflow store it
    merged.save_model(str(tmp_path / "model.txt"))
    reloaded = lgb.Booster(model_file=str(tmp_path / "model.txt"))
    np.testing.assert_allclose(reloaded.predict(x), merged.predict(x), atol=1e-12)
    # the members really differ: averaging them is not a no-op
    assert np.abs(members[0].predict(x) - merged.predict(x)).max() > 1e-3


def test_a_single_booster_is_returned_as_it_is_and_mismatched_features_are_refused():
    x, y, groups = _ranking_data()
    (only,) = _members(x, y, groups, seeds=1)
    assert average_boosters([only]) is only
    other = lgb.train(
        {"objective": "lambdarank", "verbose": -1, "min_data_in_leaf": 20},
        lgb.Dataset(x[:, :4], y, group=groups),
        num_boost_round=3,
    )
    with pytest.raises(ValueError, match="different features"):
        average_boosters([only, other])
    with pytest.raises(ValueError, match="at least one"):
        average_boosters([])
