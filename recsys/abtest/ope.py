"""Off-policy estimates (IPS, SNIPS, DR) of the click rate a new policy would get, from logged impressions.

Why: an impression log records what the *logging* policy showed and what was clicked; it cannot be
replayed for a new policy, but when each shown item carries its logging probability (`propensity`),
reweighting the logged clicks gives an unbiased estimate of the new policy's click rate without an
online test (docs/architecture.md, A/B evaluation).

Setting: single-slot evaluation at one `position` (default 0, the top slot). The synthetic
generator records at position 0 the marginal single-slot probability of the shown item (see
`recsys.data.synthetic`), which is what these estimators need. Deeper positions of a Plackett-Luce
log carry *conditional* propensities; they are not evaluated here, but their clicks do train the
reward model.

Interfaces
----------
- `log`: impressions (`request_id, item_id, position, clicked, propensity`, other columns ignored).
  Exactly one row per request at `position`; propensity in (0, 1].
- `target`: the target policy as a table `request_id, item_id, target_probability`: for each logged
  request, the policy's distribution over the items it could show in that slot. Items not listed
  have probability 0; each request's probabilities must sum to 1 (within `tolerance`). A
  deterministic policy is one row per request with probability 1. A policy over a large catalog
  can be given as its top candidates renormalised. `policy_from_topk` turns top-K lists into one.
  The full distribution (not just the probability of the logged item) is what DR's model term needs.

Estimators, with w_i = min(pi(a_i | x_i) / p_i, clip) for logged item a_i, click r_i, n requests:

- `ips`   = mean(w_i r_i). Unbiased without clipping, when the logging policy can show every item
  the target policy can (overlap). Variance grows with the weights.
- `snips` = sum(w_i r_i) / sum(w_i). Self-normalised: slightly biased, much lower variance when the
  weights are large; undefined when no logged item has target probability.
- `dr`    = mean(w_i r_i + b (sum_a pi(a | x_i) q(a) - w_i q(a_i))), doubly robust: unbiased if the
  propensities are right (whatever q is), and low-variance when q is a good reward model. Textbook
  DR has b = 1. Here b (`scale_model`, on by default) is the variance-minimising scale of the model
  term, b = -Cov(w r, C) / Var(C) for the model term C, clipped to [0, 1] and recomputed in every
  bootstrap resample: C is a zero-mean control variate, so DR stays consistent for any b (the
  in-sample b adds an O(1/n) bias, as any control-variate estimate does), and b -> 0 falls back to
  IPS when the model does not explain clicks. (A per-item model learnt from what the logger chose
  to show is too optimistic about items it rarely shows, which can make b = 1 much noisier than IPS
  for policies far from the logger.) The diagnostics report b as `dr_model_scale`.
- `dm`    = mean(sum_a pi(a | x_i) q(a)), the direct method alone (biased by the model; reported
  for reference).

Weight clipping (`clip`, default None = off) caps w at a maximum: it trades a downward bias for
less variance. Diagnostics report how many weights were clipped and the effective sample size
(sum w)^2 / sum w^2.

Reward model for DR (`fit_reward_model`): a position-debiased, smoothed per-item click rate at the
evaluated position: q(i) = (clicks_i + s * c) / (sum over i's impressions of e_k + s), where c is
the log's click rate at the evaluated position, e_k = CTR(position k) / CTR(evaluated position) the
relative examination of position k (a position-based click model), and s (`prior_strength`,
default 10) pseudo-impressions shrink rarely shown items to c; never-shown items get c. It ignores
the user, so it helps DR only as much as item appeal explains clicks; DR stays unbiased regardless.
It is *cross-fitted* (`cross_fit` folds of requests, default 2): the model used for a request is
fitted on the other folds, so a request's own click never enters its q (that would bias DR).

CIs: percentile bootstrap over requests (the reward model held fixed: its own fitting noise is not
in the interval). `compare_policies` shares resamples between two policies, so the difference
B - A gets a proper paired interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import polars as pl

from recsys.abtest.paired import DEFAULT_BOOTSTRAP, bootstrap_means
from recsys.errors import ConfigError, DataError

if TYPE_CHECKING:
    from polars.expr.whenthen import ChainedThen, Then

ESTIMATORS = ("ips", "snips", "dr", "dm")
TERMS = ("ips", "weight", "control", "ips_x_control", "control_sq", "dm")  # per-request columns
LOG_COLUMNS = ("request_id", "item_id", "position", "clicked", "propensity")
TARGET_COLUMNS = ("request_id", "item_id", "target_probability")


@dataclass
class Estimate:
    """A point estimate with its bootstrap CI (None where the estimator is undefined on this log)."""

    value: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass
class OPEResult:
    """Estimates of one target policy's click rate at the evaluated slot, plus weight diagnostics."""

    estimates: dict[str, Estimate]
    diagnostics: dict[str, float | int | None]
    settings: dict[str, Any] = field(default_factory=dict)


# -- inputs ----------------------------------------------------------------------------------------


def _first_row(mask: pl.Series) -> int:
    return int(mask.arg_true()[0]) + 1


def _require(df: pl.DataFrame, columns: Sequence[str], what: str, file: str | None) -> None:
    for column in columns:
        if column not in df.columns:
            raise DataError(
                f"{what} is missing required column '{column}' (has: {', '.join(df.columns)})", file=file, column=column
            )


def _check_log(log: pl.DataFrame, file: str | None) -> pl.DataFrame:
    """The log's needed columns with string ids, float clicks; nulls and bad propensities rejected."""
    _require(log, LOG_COLUMNS, "impression log", file)
    out = log.select(
        pl.col("request_id").cast(pl.String),
        pl.col("item_id").cast(pl.String),
        pl.col("position").cast(pl.Int64, strict=False),
        pl.col("clicked"),
        pl.col("propensity").cast(pl.Float64, strict=False),
    )
    for column in LOG_COLUMNS:
        nulls = out[column].is_null()
        if nulls.any():
            raise DataError(
                "null or non-numeric value", file=file, column=column, row=_first_row(nulls), count=int(nulls.sum())
            )
    clicked = out["clicked"]
    if clicked.dtype != pl.Boolean:
        bad = ~clicked.cast(pl.Float64, strict=False).is_in([0.0, 1.0]).fill_null(False)
        if bad.any():
            raise DataError(
                "clicked must be boolean or 0/1", file=file, column="clicked", row=_first_row(bad), count=int(bad.sum())
            )
    out = out.with_columns(pl.col("clicked").cast(pl.Float64))
    bad = ~((out["propensity"] > 0) & (out["propensity"] <= 1))
    if bad.any():
        raise DataError(
            "propensity must be in (0, 1]", file=file, column="propensity", row=_first_row(bad), count=int(bad.sum())
        )
    return out


def slot_rows(log: pl.DataFrame, position: int = 0, file: str | None = None) -> pl.DataFrame:
    """The evaluated rows: one per request at `position` (`request_id, item_id, clicked, propensity`)."""
    checked = _check_log(log, file)
    rows = checked.filter(pl.col("position") == position).drop("position")
    if rows.height == 0:
        raise DataError(f"no impressions at position {position}: nothing to evaluate", file=file, column="position")
    dup = rows["request_id"].is_duplicated()
    if dup.any():
        raise DataError(
            f"a request has more than one impression at position {position}",
            file=file,
            column="request_id",
            row=_first_row(dup),
            count=int(dup.sum()),
        )
    return rows.sort("request_id")


def _check_target(target: pl.DataFrame, requests: pl.Series, tolerance: float, name: str) -> pl.DataFrame:
    """Target rows of the evaluated requests, validated: probabilities in [0, 1] summing to 1 per request."""
    _require(target, TARGET_COLUMNS, f"target policy {name}", None)
    table = target.select(
        pl.col("request_id").cast(pl.String),
        pl.col("item_id").cast(pl.String),
        pl.col("target_probability").cast(pl.Float64, strict=False),
    )
    probability = table["target_probability"]
    bad = probability.is_null() | ~probability.is_between(0.0, 1.0).fill_null(False)
    if bad.any():
        raise DataError(
            f"target policy {name}: probability must be a number in [0, 1]",
            column="target_probability",
            row=_first_row(bad),
            count=int(bad.sum()),
        )
    wanted = pl.DataFrame({"request_id": requests})
    table = table.join(wanted, on="request_id", how="semi")
    sums = table.group_by("request_id").agg(
        pl.col("target_probability").sum().alias("_sum"),
        (pl.len() - pl.col("item_id").n_unique()).alias("_dups"),
    )
    dups = sums.filter(pl.col("_dups") > 0).sort("request_id")
    if dups.height:
        first = dups["request_id"][0]
        raise DataError(
            f"target policy {name}: an item is listed twice for request {first!r} ({dups.height} request(s) affected)",
            column="item_id",
        )
    missing = wanted.join(sums, on="request_id", how="anti")
    if missing.height:
        raise DataError(
            f"target policy {name} gives no distribution for {missing.height} logged request(s) "
            f"(first: {missing['request_id'][0]!r})",
            column="request_id",
        )
    off = sums.filter((pl.col("_sum") - 1.0).abs() > tolerance).sort("request_id")
    if off.height:
        raise DataError(
            f"target policy {name}: probabilities of request {off['request_id'][0]!r} sum to "
            f"{off['_sum'][0]:.6g}, not 1 ({off.height} request(s) affected)",
            column="target_probability",
        )
    return table


# -- reward model ----------------------------------------------------------------------------------


def fit_reward_model(log: pl.DataFrame, position: int = 0, prior_strength: float = 10.0) -> tuple[pl.DataFrame, float]:
    """(`item_id, q`, default q) of the position-debiased, smoothed per-item click model (module docstring).

    `log` is a checked log (string ids, float clicks) with every position; the default q (the log's
    click rate at `position`) is for items the log never showed.
    """
    if prior_strength < 0:
        raise ConfigError(f"prior_strength must be >= 0, got {prior_strength!r}")
    by_position = log.group_by("position").agg(pl.col("clicked").mean().alias("_ctr"))
    base = by_position.filter(pl.col("position") == position)["_ctr"]
    ctr = float(base[0]) if base.len() else float(cast(float, log["clicked"].mean()) or 0.0)
    if ctr <= 0:  # no click at the slot: the model predicts none
        return pl.DataFrame({"item_id": [], "q": []}, schema={"item_id": pl.String, "q": pl.Float64}), 0.0
    exam = by_position.with_columns((pl.col("_ctr") / ctr).alias("_exam")).select("position", "_exam")
    per_item = (
        log.join(exam, on="position", how="left")
        .group_by("item_id")
        .agg(pl.col("clicked").sum().alias("_clicks"), pl.col("_exam").sum().alias("_exams"))
        .with_columns(
            ((pl.col("_clicks") + prior_strength * ctr) / (pl.col("_exams") + prior_strength)).clip(0.0, 1.0).alias("q")
        )
    )
    return per_item.select("item_id", "q"), ctr


def _folds(requests: pl.Series, cross_fit: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    fold = rng.permutation(requests.len()) % cross_fit
    return pl.DataFrame({"request_id": requests, "_fold": pl.Series(fold, dtype=pl.Int64)})


def _reward_tables(
    checked_log: pl.DataFrame, folds: pl.DataFrame, cross_fit: int, position: int, prior_strength: float
) -> pl.DataFrame:
    """`_fold, item_id, q` plus one row per fold with item_id null holding the default q."""
    parts = []
    log_folds = checked_log.join(folds, on="request_id", how="left").with_columns(pl.col("_fold").fill_null(-1))
    for fold in range(cross_fit):
        train = log_folds.filter(pl.col("_fold") != fold) if cross_fit > 1 else log_folds
        model, default = fit_reward_model(train, position, prior_strength)
        parts.append(model.with_columns(pl.lit(fold, dtype=pl.Int64).alias("_fold")))
        parts.append(
            pl.DataFrame(
                {"item_id": [None], "q": [default], "_fold": [fold]},
                schema={"item_id": pl.String, "q": pl.Float64, "_fold": pl.Int64},
            )
        )
    return pl.concat(parts, how="vertical").select("_fold", "item_id", "q")


def _with_q(df: pl.DataFrame, rewards: pl.DataFrame) -> pl.DataFrame:
    """`df` (with `_fold`, `item_id`) plus `q` from its fold's model, the fold default where unseen.

    The per-fold models are pivoted to one column per fold first, so the (large) target table is
    joined on `item_id` alone.
    """
    folds = sorted(rewards["_fold"].unique().to_list())
    defaults = dict(rewards.filter(pl.col("item_id").is_null()).select("_fold", "q").iter_rows())
    wide = None
    for fold in folds:
        part = rewards.filter((pl.col("_fold") == fold) & pl.col("item_id").is_not_null()).select(
            "item_id", pl.col("q").alias(f"_q{fold}")
        )
        wide = part if wide is None else wide.join(part, on="item_id", how="full", coalesce=True)
    assert wide is not None
    fold0 = folds[0]
    pick: Then | ChainedThen = pl.when(pl.col("_fold") == fold0).then(pl.col(f"_q{fold0}").fill_null(defaults[fold0]))
    for fold in folds[1:]:
        pick = pick.when(pl.col("_fold") == fold).then(pl.col(f"_q{fold}").fill_null(defaults[fold]))
    return (
        df.join(wide, on="item_id", how="left", maintain_order="left")
        .with_columns(pick.alias("q"))
        .drop([f"_q{fold}" for fold in folds])
    )


# -- estimation ------------------------------------------------------------------------------------


def _custom_q(model: pl.DataFrame) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """A `q` lookup from a caller's reward table: `item_id, q` or `request_id, item_id, q`."""
    _require(model, ("item_id", "q"), "reward model", None)
    keys = ["request_id", "item_id"] if "request_id" in model.columns else ["item_id"]
    ids = [pl.col(k).cast(pl.String) for k in keys]
    table = model.select(*ids, pl.col("q").cast(pl.Float64, strict=False))
    bad = table["q"].is_null() | ~table["q"].is_finite().fill_null(False)
    if bad.any():
        raise DataError(
            "reward model: q must be a finite number", column="q", row=_first_row(bad), count=int(bad.sum())
        )
    if table.select(pl.struct(keys).is_duplicated().any()).item():
        raise DataError(f"reward model: more than one q per ({', '.join(keys)})", column="item_id")

    def lookup(df: pl.DataFrame) -> pl.DataFrame:
        # a left join from the large side onto the model table, then a check that nothing is missing
        out = df.join(table, on=keys, how="left", maintain_order="left")
        missing = out["q"].is_null()
        if missing.any():
            first = out.filter(missing).row(0, named=True)
            where = ", ".join(f"{k}={first[k]!r}" for k in keys)
            raise DataError(
                f"reward model has no q for {int(missing.sum())} (request, item) pair(s) the "
                f"estimate needs (first: {where})",
                column="q",
            )
        return out

    return lookup


def _policy_terms(
    rows: pl.DataFrame,
    target: pl.DataFrame,
    q_of: Callable[[pl.DataFrame], pl.DataFrame],
    clip: float | None,
) -> tuple[np.ndarray, dict[str, float | int | None]]:
    """Per-request columns (`TERMS`) in `rows` order, and weight diagnostics.

    A = w r is the IPS term, C = sum_a pi(a) q(a) - w q(a_i) the model's control variate (mean 0 when
    the propensities are right); the products let resamples recompute the DR scale.
    """
    # the small side first: a left join from `rows` would hash the whole (large) target table on two keys
    matched = target.join(rows.select("request_id", "item_id"), on=["request_id", "item_id"], how="inner")
    logged = rows.join(matched, on=["request_id", "item_id"], how="left", maintain_order="left").with_columns(
        pl.col("target_probability").fill_null(0.0)
    )
    logged = q_of(logged)
    model_term = (
        q_of(target.join(rows.select("request_id", "_fold"), on="request_id", how="inner"))
        .group_by("request_id")
        .agg((pl.col("target_probability") * pl.col("q")).sum().alias("_dm"))
    )
    logged = logged.join(model_term, on="request_id", how="left", maintain_order="left")
    raw = (logged["target_probability"] / logged["propensity"]).to_numpy()
    w = np.minimum(raw, clip) if clip is not None else raw
    r = logged["clicked"].to_numpy()
    q = logged["q"].to_numpy()
    dm = logged["_dm"].fill_null(0.0).to_numpy()
    ips, control = w * r, dm - w * q
    terms = np.column_stack([ips, w, control, ips * control, control * control, dm])
    sum_w, sum_w2 = float(w.sum()), float((w * w).sum())
    diagnostics: dict[str, float | int | None] = {
        "requests": len(w),
        "mean_weight": float(w.mean()),
        "max_weight": float(raw.max()),
        "effective_sample_size": sum_w * sum_w / sum_w2 if sum_w2 > 0 else 0.0,
        "clipped": int((raw > clip).sum()) if clip is not None else 0,
        "logged_item_in_target_support": float((raw > 0).mean()),
    }
    return terms, diagnostics


def _model_scale(means: np.ndarray) -> np.ndarray:
    """b = -Cov(A, C) / Var(C) from the means of A, C, A C, C C, clipped to [0, 1] (0 where Var(C) = 0).

    DR = mean(A) + b mean(C). Because C has mean 0 when the propensities are right, any b keeps DR
    consistent, and this b minimises its variance; the clip keeps DR between IPS (b = 0) and textbook
    DR (b = 1), so a reward model that does not explain clicks cannot make DR much noisier than IPS.
    """
    mean_a, mean_c, mean_ac, mean_cc = means[:, 0], means[:, 2], means[:, 3], means[:, 4]
    var = mean_cc - mean_c * mean_c
    cov = mean_ac - mean_a * mean_c
    ok = var > 1e-12 * np.maximum(mean_cc, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(ok, -cov / np.where(ok, var, 1.0), 0.0)
    return np.clip(scale, 0.0, 1.0)


def _estimator_samples(means: np.ndarray, scale_model: bool) -> dict[str, np.ndarray]:
    """Estimator values from means of the `TERMS` columns (one (6,) row, or a (B, 6) matrix of resamples).

    Resamples recompute SNIPS's denominator and DR's model scale, so both carry their own noise.
    """
    means = np.atleast_2d(means)
    with np.errstate(divide="ignore", invalid="ignore"):
        snips = np.where(means[:, 1] > 0, means[:, 0] / np.where(means[:, 1] > 0, means[:, 1], 1.0), np.nan)
    scale = _model_scale(means) if scale_model else np.ones(len(means))
    return {"ips": means[:, 0], "snips": snips, "dr": means[:, 0] + scale * means[:, 2], "dm": means[:, 5]}


def _estimates(point: dict[str, np.ndarray], samples: dict[str, np.ndarray], confidence: float) -> dict[str, Estimate]:
    tail = (1.0 - confidence) / 2.0
    out = {}
    for name in ESTIMATORS:
        value = float(point[name][0])
        boot = samples[name]
        finite = boot[np.isfinite(boot)]
        if not np.isfinite(value) or finite.size < 0.9 * boot.size:
            out[name] = Estimate(None if not np.isfinite(value) else value, None, None)
            continue
        low, high = np.quantile(finite, [tail, 1.0 - tail])
        out[name] = Estimate(value, float(low), float(high))
    return out


def _check_settings(clip: float | None, cross_fit: int, n_bootstrap: int, confidence: float) -> None:
    if clip is not None and not clip > 0:
        raise ConfigError(f"clip must be a positive maximum weight or None, got {clip!r}")
    if isinstance(cross_fit, bool) or not isinstance(cross_fit, int) or cross_fit < 1:
        raise ConfigError(f"cross_fit must be an integer >= 1, got {cross_fit!r}")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 100:
        raise ConfigError(f"n_bootstrap must be an integer >= 100, got {n_bootstrap!r}")
    if not 0.5 < confidence < 1:
        raise ConfigError(f"confidence must be in (0.5, 1), got {confidence!r}")


@dataclass(frozen=True)
class OPESettings:
    """How `compare_policies` and `estimate_policy_value` estimate (every field can also be passed by name).

    `position` is the evaluated slot, `clip` the maximum importance weight (None = off), `cross_fit` and
    `prior_strength` shape the built-in click model, `n_bootstrap`, `confidence` and `seed` the CIs,
    `tolerance` how far a request's target probabilities may sum from 1, `file` the log's name in errors.
    `reward_model` replaces the built-in click model for DR and DM with the caller's predictions at
    the evaluated slot: `item_id, q` or `request_id, item_id, q` covering every logged item and every
    item of the target distributions (used as given: fit it on other data, or it biases DR).
    `scale_model=False` gives textbook DR (model scale 1) instead of the variance-optimal scale.
    """

    position: int = 0
    clip: float | None = None
    cross_fit: int = 2
    prior_strength: float = 10.0
    n_bootstrap: int = DEFAULT_BOOTSTRAP
    confidence: float = 0.95
    seed: int = 0
    tolerance: float = 1e-6
    file: str | None = None
    reward_model: pl.DataFrame | None = None
    scale_model: bool = True

    def __post_init__(self) -> None:
        _check_settings(self.clip, self.cross_fit, self.n_bootstrap, self.confidence)


def compare_policies(
    log: pl.DataFrame, targets: dict[str, pl.DataFrame], settings: OPESettings | None = None, **options: Any
) -> tuple[dict[str, OPEResult], dict[str, dict[str, Estimate]]]:
    """OPE of several target policies on one log with shared bootstrap resamples.

    Returns one `OPEResult` per policy name, and for two or more policies the paired differences of
    every later policy against the first (key `"<later> - <first>"`), estimator by estimator.
    `settings` (default `OPESettings()`), with any of its fields overridden by name in `options`,
    says how (see `OPESettings`).
    """
    opts = replace(settings if settings is not None else OPESettings(), **options)
    position, clip, cross_fit, seed, file = opts.position, opts.clip, opts.cross_fit, opts.seed, opts.file
    n_bootstrap, confidence, scale_model = opts.n_bootstrap, opts.confidence, opts.scale_model
    if not targets:
        raise ConfigError("no target policy to evaluate")
    checked = _check_log(log, file)
    rows = slot_rows(log, position, file)
    folds = _folds(rows["request_id"], cross_fit, seed)
    rows = rows.join(folds, on="request_id", how="left", maintain_order="left")
    if opts.reward_model is None:
        rewards = _reward_tables(checked, folds, cross_fit, position, opts.prior_strength)
        q_of: Callable[[pl.DataFrame], pl.DataFrame] = partial(_with_q, rewards=rewards)
        model_name = "position-debiased smoothed per-item click rate (cross-fitted)"
    else:
        q_of = _custom_q(opts.reward_model)
        model_name = "supplied by the caller"
    names = list(targets)
    columns, diagnostics = [], {}
    for name in names:
        table = _check_target(targets[name], rows["request_id"], opts.tolerance, name)
        terms, diagnostics[name] = _policy_terms(rows, table, q_of, clip)
        columns.append(terms)
    stacked = np.hstack(columns)
    boot = bootstrap_means(stacked, n_bootstrap, seed)
    full = stacked.mean(axis=0)
    settings_used = {
        "position": position,
        "clip": clip,
        "cross_fit": cross_fit,
        "prior_strength": opts.prior_strength,
        "scale_model": scale_model,
        "n_bootstrap": n_bootstrap,
        "confidence": confidence,
        "seed": seed,
        "observed_click_rate": float(cast(float, rows["clicked"].mean())),
        "reward_model": model_name,
    }
    points, samples, results = {}, {}, {}
    for j, name in enumerate(names):
        cols = slice(len(TERMS) * j, len(TERMS) * (j + 1))
        points[name] = _estimator_samples(full[cols], scale_model)
        samples[name] = _estimator_samples(boot[:, cols], scale_model)
        scale = _model_scale(np.atleast_2d(full[cols]))[0] if scale_model else 1.0
        diagnostics[name]["dr_model_scale"] = float(scale)
        results[name] = OPEResult(_estimates(points[name], samples[name], confidence), diagnostics[name], settings_used)
    diffs = {}
    first = names[0]
    for name in names[1:]:
        point = {e: points[name][e] - points[first][e] for e in ESTIMATORS}
        sample = {e: samples[name][e] - samples[first][e] for e in ESTIMATORS}
        diffs[f"{name} - {first}"] = _estimates(point, sample, confidence)
    return results, diffs


def estimate_policy_value(
    log: pl.DataFrame, target: pl.DataFrame, settings: OPESettings | None = None, **options: Any
) -> OPEResult:
    """IPS, SNIPS, DR and DM estimates (with bootstrap CIs) of one target policy's click rate at the slot.

    `settings` and `options` as for `compare_policies`.
    """
    results, _ = compare_policies(log, {"target": target}, settings, **options)
    return results["target"]


def policy_from_topk(
    requests: pl.DataFrame, topk: pl.DataFrame, k: int = 10, weighting: str = "uniform"
) -> pl.DataFrame:
    """A single-slot target policy from top-K lists: each request shows one of its user's top-`k` items.

    `requests`: `request_id, user_id` (e.g. the log's rows at the evaluated position). `weighting`
    `uniform` picks each of the top k items with probability 1/k (of the items the list has);
    `rank` picks rank r with probability proportional to 1 / log2(r + 1) (the NDCG discount), so
    the top of the list is shown more often. Requests of users without a list are left out: the
    caller decides whether to drop those requests or give them another policy.
    A static list per user ignores the request's time, so it may name items that did not exist yet
    at an old request; the estimate is then of a policy that could not have been run back then.
    """
    if weighting not in ("uniform", "rank"):
        raise ConfigError(f"weighting must be 'uniform' or 'rank', got {weighting!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    _require(requests, ("request_id", "user_id"), "requests", None)
    _require(topk, ("user_id", "item_id", "rank"), "top-K", None)
    lists = topk.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String), "rank").filter(
        pl.col("rank") <= k
    )
    weight = pl.lit(1.0) if weighting == "uniform" else 1.0 / (pl.col("rank").cast(pl.Float64) + 1.0).log(2)
    lists = lists.with_columns(weight.alias("_w")).with_columns(
        (pl.col("_w") / pl.col("_w").sum().over("user_id")).alias("target_probability")
    )
    return (
        requests.select(pl.col("request_id").cast(pl.String), pl.col("user_id").cast(pl.String))
        .unique("request_id")
        .join(lists, on="user_id", how="inner")
        .select("request_id", "item_id", "target_probability")
        .sort("request_id", "target_probability", descending=[False, True])
    )
