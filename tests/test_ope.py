"""Off-policy estimators against the synthetic generator's ground truth (known propensities and clicks)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys.abtest.ope import OPESettings, compare_policies, estimate_policy_value, policy_from_topk, slot_rows
from recsys.data.synthetic import generate_with_truth
from recsys.errors import ConfigError, DataError

REQUESTS = 4000
ITEMS = 600  # the generator's smallest catalog; target tables hold requests x items rows
BOOT = 2000


@pytest.fixture(scope="module")
def world():
    """Logged impressions, the position-0 requests, and true single-slot click probabilities per item."""
    dataset, truth = generate_with_truth(6000, n_items=ITEMS, n_impressions_requests=REQUESTS, seed=3)
    top = dataset.impressions.filter(pl.col("position") == 0).sort("request_id")
    items = dataset.items["item_id"]
    clicks = truth.click_probability_matrix(top["user_id"], top["ts"], items, position=0)
    world = {
        "log": dataset.impressions,
        "top": top,
        "items": items,
        "alive": truth.available(top["ts"], items),
        "logging": truth.logging_probability_matrix(top["user_id"], top["ts"], items),
        "clicks": clicks,
        "affinity": truth.affinity(
            np.repeat(top["user_id"].to_numpy(), items.len()),
            np.tile(items.to_numpy(), top.height),
            top["ts"].gather(np.repeat(np.arange(top.height), items.len())),
        ).reshape(top.height, items.len()),
    }
    world["uniform"] = _uniform(world)
    world["softmax"] = _softmax(world, 0.5)
    world["tables"] = {name: _table(world, world[name]) for name in ("uniform", "softmax", "logging")}
    return world


def _table(world, probabilities: np.ndarray, column: str = "target_probability") -> pl.DataFrame:
    """A (requests x items) matrix as `request_id, item_id, <column>` rows (zeros left out)."""
    rows, cols = np.nonzero(probabilities > 0)
    return pl.DataFrame(
        {
            "request_id": world["top"]["request_id"].gather(rows),
            "item_id": world["items"].gather(cols),
            column: probabilities[rows, cols],
        }
    )


def _true_value(world, policy: np.ndarray) -> float:
    return float((policy * world["clicks"]).sum(axis=1).mean())


def _uniform(world) -> np.ndarray:
    alive = world["alive"]
    return alive / alive.sum(axis=1, keepdims=True)


def _softmax(world, temperature: float) -> np.ndarray:
    """A greedier policy on the true affinity (the logger uses a noisy one at temperature 1)."""
    scores = np.where(world["alive"], world["affinity"] / temperature, -np.inf)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def test_ips_of_the_logging_policy_is_the_observed_click_rate(world):
    result = estimate_policy_value(world["log"], world["tables"]["logging"], n_bootstrap=BOOT)
    observed = float(world["top"]["clicked"].mean())
    assert result.estimates["ips"].value == pytest.approx(observed, rel=1e-9)
    assert result.estimates["snips"].value == pytest.approx(observed, rel=1e-9)
    assert result.diagnostics["max_weight"] == pytest.approx(1.0)
    assert result.diagnostics["effective_sample_size"] == pytest.approx(REQUESTS)
    truth = _true_value(world, world["logging"])
    for name in ("ips", "snips", "dr"):
        est = result.estimates[name]
        assert est.ci_low <= truth <= est.ci_high


@pytest.mark.parametrize("policy", ["uniform", "softmax"])
def test_estimators_recover_the_true_value_of_a_new_policy(world, policy):
    truth = _true_value(world, world[policy])
    result = estimate_policy_value(world["log"], world["tables"][policy], n_bootstrap=BOOT, seed=1)
    for name in ("ips", "snips", "dr"):
        est = result.estimates[name]
        assert est.ci_low <= truth <= est.ci_high, (name, truth, est)
        assert est.ci_high - est.ci_low < truth  # informative, not just wide
    # the direct method alone is biased (the per-item model ignores the user): it is there for reference
    assert result.estimates["dm"].value != pytest.approx(truth, rel=0.05)


def test_dr_with_the_true_click_model_is_tight_and_right(world):
    truth = _true_value(world, world["softmax"])
    oracle = _table(world, world["clicks"], column="q")  # q for every (request, item) the estimate needs
    with_model = estimate_policy_value(world["log"], world["tables"]["softmax"], n_bootstrap=BOOT, reward_model=oracle)
    dr, ips = with_model.estimates["dr"], with_model.estimates["ips"]
    assert dr.ci_low <= truth <= dr.ci_high
    assert (dr.ci_high - dr.ci_low) < 0.85 * (ips.ci_high - ips.ci_low)  # the model removes variance
    assert with_model.estimates["dm"].value == pytest.approx(truth, rel=1e-9)  # a perfect model is exact
    assert with_model.settings["reward_model"] == "supplied by the caller"


def test_clipping_caps_weights_and_lowers_ips(world):
    target = world["tables"]["uniform"]
    free = estimate_policy_value(world["log"], target, n_bootstrap=BOOT)
    clipped = estimate_policy_value(world["log"], target, clip=2.0, n_bootstrap=BOOT)
    assert free.diagnostics["clipped"] == 0 and clipped.diagnostics["clipped"] > 0
    assert clipped.estimates["ips"].value < free.estimates["ips"].value
    assert clipped.diagnostics["mean_weight"] < free.diagnostics["mean_weight"]
    with pytest.raises(ConfigError, match="clip"):
        estimate_policy_value(world["log"], target, clip=0.0, n_bootstrap=BOOT)
    with pytest.raises(ConfigError, match="clip"):
        OPESettings(clip=0.0)
    # The settings object and the same fields by name are one way of saying it; names override the object.
    settings = OPESettings(clip=2.0, n_bootstrap=BOOT)
    assert estimate_policy_value(world["log"], target, settings) == clipped
    assert estimate_policy_value(world["log"], target, OPESettings(n_bootstrap=BOOT), clip=2.0) == clipped


def test_paired_difference_of_two_policies(world):
    tables = world["tables"]
    policies = {"uniform": tables["uniform"], "softmax": tables["softmax"], "again": tables["uniform"]}
    _, diffs = compare_policies(world["log"], policies, n_bootstrap=BOOT)
    for est in diffs["again - uniform"].values():  # a policy against itself: exactly zero, shared resamples
        assert est.value == 0.0 and est.ci_low == 0.0 and est.ci_high == 0.0
    true_diff = _true_value(world, world["softmax"]) - _true_value(world, world["uniform"])
    dr = diffs["softmax - uniform"]["dr"]
    assert dr.ci_low <= true_diff <= dr.ci_high and dr.ci_low > 0


def test_policy_from_topk_builds_distributions():
    requests = pl.DataFrame({"request_id": ["r1", "r2", "r3"], "user_id": ["u1", "u2", "u9"]})
    topk = pl.DataFrame(
        {"user_id": ["u1"] * 3 + ["u2"] * 2, "item_id": ["a", "b", "c", "a", "d"], "rank": [1, 2, 3, 1, 2]}
    )
    uniform = policy_from_topk(requests, topk, k=2)
    assert set(uniform["request_id"]) == {"r1", "r2"}  # u9 has no list
    assert uniform.filter(pl.col("request_id") == "r1")["target_probability"].to_list() == [0.5, 0.5]
    ranked = policy_from_topk(requests, topk, k=3, weighting="rank").filter(pl.col("request_id") == "r1")
    probs = ranked["target_probability"].to_list()
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0)
    assert probs[0] / probs[1] == pytest.approx(np.log2(3) / np.log2(2))


def test_bad_logs_and_policies_are_named(world):
    log = world["log"]
    target = world["tables"]["uniform"]
    broken = log.with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(0.0).otherwise(pl.col("propensity")).alias("propensity")
    )
    with pytest.raises(DataError, match="propensity") as err:
        estimate_policy_value(broken, target, n_bootstrap=BOOT)
    assert err.value.row == 5 and err.value.column == "propensity"
    with pytest.raises(DataError, match="more than one impression"):
        slot_rows(log.with_columns(pl.lit(0, dtype=pl.Int32).alias("position")))
    with pytest.raises(DataError, match="sum to"):
        estimate_policy_value(log, target.with_columns(pl.col("target_probability") * 0.5), n_bootstrap=BOOT)
    first = world["top"]["request_id"][0]
    with pytest.raises(DataError, match="no distribution"):
        estimate_policy_value(log, target.filter(pl.col("request_id") != first), n_bootstrap=BOOT)
    with pytest.raises(DataError, match="missing required column 'propensity'"):
        estimate_policy_value(log.drop("propensity"), target, n_bootstrap=BOOT)


def test_an_item_level_reward_model_is_used_as_given(world):
    target = world["tables"]["softmax"]
    zero = pl.DataFrame({"item_id": world["items"], "q": 0.0})
    result = estimate_policy_value(world["log"], target, n_bootstrap=BOOT, reward_model=zero, scale_model=False)
    # with q = 0 the model term vanishes: textbook DR is IPS, and the direct method says 0
    assert result.estimates["dr"].value == pytest.approx(result.estimates["ips"].value, rel=1e-12)
    assert result.estimates["dm"].value == 0.0
    with pytest.raises(DataError, match="no q for"):
        estimate_policy_value(world["log"], target, n_bootstrap=BOOT, reward_model=zero.slice(1))
