"""Paired comparison of two systems on the same users: CIs, p-values, Holm, effect sizes.

Why paired: both systems are scored on the same target users, and per-user metrics vary far more
between users (a heavy user with an easy target vs a cold one) than between systems. Differencing per
user removes that shared variance, so the same data resolve much smaller lifts than two independent
means would.

What is computed for each metric, from the per-user differences d_u = B_u - A_u:

- `mean_a`, `mean_b`, `diff` = mean(d) (= mean_b - mean_a), and `lift` = diff / mean_a (relative).
- `ci_low`, `ci_high`: percentile bootstrap CI of mean(d). Users are resampled with replacement;
  the resamples are shared by every metric (and by the per-system CIs `ci_a`, `ci_b`), so the
  intervals of one comparison are mutually consistent. Vectorised as (resample counts) @ (values),
  in blocks of bounded memory.
- `p_ttest`: two-sided paired t-test (scipy's `ttest_1samp` on d).
- `p_randomization`: two-sided paired randomization (sign-flip) test: under H0 "A and B are
  exchangeable for each user" every d_u is equally likely to have either sign, so the null
  distribution of mean(d) is sampled by random sign flips. p = (1 + #{|T*| >= |T|}) / (1 + R),
  never 0. Not Wilcoxon: with many tied zero differences (most users miss with both systems) it
  inflates false positives at recsys scale.
- `p_holm`: the `primary` test's p-value (randomization by default) after Holm's step-down
  correction across the compared metrics, controlling the family-wise error rate; `p_holm_ttest`
  and `p_holm_randomization` hold both corrected versions.
- `effect_size`: Cohen's d_z = mean(d) / sd(d) (sd with ddof=1), the effect size of paired designs.
  0 when every difference is 0; NaN when the differences are a nonzero constant (sd 0).

The verdict of a metric is "B better" / "A better" when its Holm-corrected primary p-value is below
`alpha`, else "no significant difference".

Degenerate inputs are exact, not approximate: identical systems give diff 0, CI [0, 0], p = 1 and
d_z = 0 on every metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl
from scipy import stats

from recsys.errors import ConfigError, DataError
from recsys.metrics import PER_USER_METRICS, per_user_metrics

Test = Literal["randomization", "ttest"]
TESTS = ("randomization", "ttest")
DEFAULT_BOOTSTRAP = 5000
DEFAULT_PERMUTATIONS = 20_000  # with Holm over 10 metrics, the smallest reachable p is 10 / 20_001
_BLOCK_CELLS = 1 << 22  # resample-matrix cells per block (~32 MB as float64)

_DISPLAY = {"hr": "HR", "recall": "Recall", "ndcg": "NDCG", "mrr": "MRR", "map": "MAP"}


def display_name(metric: str) -> str:
    """`ndcg@10` -> `NDCG@10`, `recall@50` -> `Recall@50`; other names pass through unchanged."""
    name, sep, k = metric.partition("@")
    return f"{_DISPLAY.get(name.lower(), name)}{sep}{k}"


@dataclass
class MetricComparison:
    """Every number of one metric's paired comparison; see the module docstring for definitions."""

    metric: str
    n: int
    mean_a: float
    mean_b: float
    diff: float
    lift: float | None
    ci_low: float
    ci_high: float
    ci_a: tuple[float, float]
    ci_b: tuple[float, float]
    p_ttest: float
    p_randomization: float
    p_holm_ttest: float
    p_holm_randomization: float
    p_holm: float
    effect_size: float
    significant: bool
    verdict: str


@dataclass
class PairedComparison:
    """A full paired comparison: one `MetricComparison` per metric, plus the settings that produced it."""

    metrics: list[MetricComparison]
    n_users: int
    n_bootstrap: int
    n_permutations: int
    confidence: float
    alpha: float
    primary: str
    seed: int
    label_a: str = "A"
    label_b: str = "B"
    extra: dict[str, object] = field(default_factory=dict)

    def verdicts(self) -> list[str]:
        return [m.verdict for m in self.metrics]

    def by_metric(self) -> dict[str, MetricComparison]:
        return {m.metric: m for m in self.metrics}


# -- building blocks -------------------------------------------------------------------------------


def _check_settings(n_bootstrap: int, n_permutations: int, confidence: float, alpha: float, primary: str) -> None:
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 100:
        raise ConfigError(f"n_bootstrap must be an integer >= 100, got {n_bootstrap!r}")
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int) or n_permutations < 100:
        raise ConfigError(f"n_permutations must be an integer >= 100, got {n_permutations!r}")
    if not 0.5 < confidence < 1:
        raise ConfigError(f"confidence must be in (0.5, 1), got {confidence!r}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha!r}")
    if primary not in TESTS:
        raise ConfigError(f"primary test must be one of {', '.join(TESTS)}, got {primary!r}")


def _as_matrix(values: np.ndarray, what: str) -> np.ndarray:
    """(n,) or (n, m) float64 matrix with at least one row and no NaN (a NaN mean is never a result)."""
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise DataError(f"{what}: need a non-empty (users,) or (users, metrics) array, got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise DataError(f"{what}: values must be finite (a metric came out NaN or infinite)")
    return matrix


def bootstrap_means(values: np.ndarray, n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """(n_bootstrap, m) means of `values` ((n,) or (n, m)) over resamples of the rows with replacement.

    Each resample is a row of multinomial counts (how often each user was drawn); the means are
    counts @ values / n, computed in blocks so memory stays bounded for large user counts. The same
    seed and row count give the same resamples whatever the values, which is what lets separately
    computed intervals (A, B and B - A) share their resamples.
    """
    matrix = _as_matrix(values, "bootstrap")
    n = matrix.shape[0]
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n)
    out = np.empty((n_bootstrap, matrix.shape[1]), dtype=np.float64)
    for start in range(0, n_bootstrap, block):
        stop = min(start + block, n_bootstrap)
        rows = stop - start
        draws = rng.integers(0, n, size=(rows, n))
        draws += (np.arange(rows) * n)[:, None]
        counts = np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)
        out[start:stop] = counts @ matrix / n
    return out


def percentile_ci(samples: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper percentile bounds per column of bootstrap `samples` ((B,) or (B, m))."""
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail], axis=0)
    return low, high


def bootstrap_ci(
    values: np.ndarray, n_bootstrap: int = DEFAULT_BOOTSTRAP, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the mean of each column of `values` (of a 1-D array: 1-element arrays)."""
    return percentile_ci(bootstrap_means(values, n_bootstrap, seed), confidence)


def sign_flip_pvalues(diffs: np.ndarray, n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> np.ndarray:
    """Two-sided paired randomization-test p-value of mean(d) = 0 for each column of `diffs`.

    Sign flips are shared across columns and drawn in blocks of bounded memory. A tolerance of a few
    ulps counts flipped statistics equal to the observed one as "at least as extreme" (they are, up
    to rounding), so all-zero differences give p = 1 exactly.
    """
    matrix = _as_matrix(diffs, "randomization test")
    n = matrix.shape[0]
    observed = np.abs(matrix.mean(axis=0))
    tolerance = 1e-12 * np.maximum(np.abs(matrix).mean(axis=0), 1e-300)
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n)
    extreme = np.zeros(matrix.shape[1], dtype=np.int64)
    for start in range(0, n_permutations, block):
        rows = min(block, n_permutations - start)
        signs = rng.integers(0, 2, size=(rows, n), dtype=np.int8).astype(np.float64) * 2.0 - 1.0
        flipped = np.abs(signs @ matrix / n)
        extreme += (flipped >= observed - tolerance).sum(axis=0)
    return (1.0 + extreme) / (1.0 + n_permutations)


def paired_ttest_pvalues(diffs: np.ndarray) -> np.ndarray:
    """Two-sided one-sample t-test p-value of mean(d) = 0 per column (the paired t-test).

    Zero-variance columns are decided exactly instead of by scipy's NaN: all zeros -> 1, a nonzero
    constant -> 0 (every user moved the same way by the same amount). One row -> NaN (no test).
    """
    matrix = _as_matrix(diffs, "t-test")
    out = np.full(matrix.shape[1], np.nan)
    if matrix.shape[0] < 2:
        return out
    sd = matrix.std(axis=0, ddof=1)
    mean = matrix.mean(axis=0)
    constant = sd <= 1e-15 * np.maximum(np.abs(mean), 1e-300)
    out[constant] = np.where(mean[constant] == 0.0, 1.0, 0.0)
    varying = ~constant
    if varying.any():
        out[varying] = stats.ttest_1samp(matrix[:, varying], 0.0, axis=0).pvalue
    return out


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order.

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j)).
    Rejecting where adjusted p < alpha controls the family-wise error rate at alpha with no assumption
    on how the metrics depend on each other (they are strongly correlated here). NaN stays NaN and
    does not count towards m.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def cohens_dz(diffs: np.ndarray) -> np.ndarray:
    """Cohen's d_z = mean(d) / sd(d) per column: 0 for all-zero columns, NaN for a nonzero constant."""
    matrix = _as_matrix(diffs, "effect size")
    mean = matrix.mean(axis=0)
    if matrix.shape[0] < 2:
        return np.full(matrix.shape[1], np.nan)
    sd = matrix.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        dz = np.where(sd > 0, mean / np.where(sd > 0, sd, 1.0), np.nan)
    return np.where((sd == 0) & (mean == 0), 0.0, dz)


# -- verdicts --------------------------------------------------------------------------------------


def format_p(p: float) -> str:
    if np.isnan(p):
        return "p=n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _decimals(*values: float) -> int:
    """3 decimals; 4 when the numbers are all below 0.01, or one would print as a signed zero (-0.000)."""
    finite = [abs(v) for v in values if np.isfinite(v)]
    largest = max(finite, default=0.0)
    hidden = any(0.0 < v < 0.0005 for v in finite)
    return 3 if (largest >= 0.01 or largest == 0.0) and not hidden else 4


def verdict_line(
    metric: str,
    diff: float,
    ci_low: float,
    ci_high: float,
    p_holm: float,
    alpha: float = 0.05,
    confidence: float = 0.95,
    label_a: str = "A",
    label_b: str = "B",
) -> str:
    """One line per metric, e.g. `B better on NDCG@10: +0.012 (95% CI +0.004…+0.020), p=0.003 after Holm`."""
    digits = _decimals(diff, ci_low, ci_high)
    numbers = (
        f"{diff:+.{digits}f} ({confidence:.0%} CI {ci_low:+.{digits}f}…{ci_high:+.{digits}f}), "
        f"{format_p(p_holm)} after Holm"
    )
    name = display_name(metric)
    if not np.isnan(p_holm) and p_holm < alpha and diff != 0:
        winner = label_b if diff > 0 else label_a
        return f"{winner} better on {name}: {numbers}"
    return f"no significant difference on {name}: {numbers}"


# -- the comparison --------------------------------------------------------------------------------


def compare_arrays(
    values_a: np.ndarray,
    values_b: np.ndarray,
    metrics: Sequence[str],
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    confidence: float = 0.95,
    alpha: float = 0.05,
    primary: Test = "randomization",
    seed: int = 0,
    label_a: str = "A",
    label_b: str = "B",
) -> PairedComparison:
    """Paired comparison of per-user metric matrices `values_a`, `values_b` ((users, metrics), same rows).

    Holm's correction runs across the columns given, so pass exactly the family of metrics the
    decision is about.
    """
    _check_settings(n_bootstrap, n_permutations, confidence, alpha, primary)
    a = _as_matrix(values_a, "system A")
    b = _as_matrix(values_b, "system B")
    if a.shape != b.shape:
        raise DataError(f"A and B must have the same (users, metrics) shape; got {a.shape} and {b.shape}")
    names = list(metrics)
    if len(names) != a.shape[1]:
        raise ConfigError(f"{len(names)} metric names for {a.shape[1]} metric columns")
    diffs = b - a
    n = a.shape[0]
    # one set of resamples for A, B and B - A: stacked columns share the counts matrix
    boot = bootstrap_means(np.hstack([a, b, diffs]), n_bootstrap, seed)
    low, high = percentile_ci(boot, confidence)
    m = len(names)
    p_t = paired_ttest_pvalues(diffs)
    p_r = sign_flip_pvalues(diffs, n_permutations, seed + 1)
    holm_t, holm_r = holm(p_t), holm(p_r)
    p_primary = holm_r if primary == "randomization" else holm_t
    dz = cohens_dz(diffs)
    results = []
    for j, metric in enumerate(names):
        mean_a, mean_b, diff = float(a[:, j].mean()), float(b[:, j].mean()), float(diffs[:, j].mean())
        ci_low, ci_high = float(low[2 * m + j]), float(high[2 * m + j])
        p_adj = float(p_primary[j])
        results.append(
            MetricComparison(
                metric=metric,
                n=n,
                mean_a=mean_a,
                mean_b=mean_b,
                diff=diff,
                lift=diff / mean_a if mean_a != 0 else None,
                ci_low=ci_low,
                ci_high=ci_high,
                ci_a=(float(low[j]), float(high[j])),
                ci_b=(float(low[m + j]), float(high[m + j])),
                p_ttest=float(p_t[j]),
                p_randomization=float(p_r[j]),
                p_holm_ttest=float(holm_t[j]),
                p_holm_randomization=float(holm_r[j]),
                p_holm=p_adj,
                effect_size=float(dz[j]),
                significant=bool(not np.isnan(p_adj) and p_adj < alpha and diff != 0),
                verdict=verdict_line(metric, diff, ci_low, ci_high, p_adj, alpha, confidence, label_a, label_b),
            )
        )
    return PairedComparison(
        metrics=results,
        n_users=n,
        n_bootstrap=n_bootstrap,
        n_permutations=n_permutations,
        confidence=confidence,
        alpha=alpha,
        primary=primary,
        seed=seed,
        label_a=label_a,
        label_b=label_b,
    )


def metric_columns(per_user: pl.DataFrame) -> list[str]:
    """The metric columns of a `per_user_metrics` table, headline first: NDCG, HR, MRR, MAP, Recall per K."""
    order = ("ndcg", "hr", "mrr", "map", "recall")
    assert set(order) == set(PER_USER_METRICS)
    ks = sorted({int(c.split("@")[1]) for c in per_user.columns if "@" in c})
    return [f"{name}@{k}" for k in ks for name in order if f"{name}@{k}" in per_user.columns]


def align_per_user(
    per_user_a: pl.DataFrame, per_user_b: pl.DataFrame, metrics: Sequence[str]
) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """Join two per-user tables on `user_id`; a user present in only one counts as 0 in the other.

    Returns the user ids (sorted) and the two (users, metrics) matrices in that order.
    """
    for label, table in (("A", per_user_a), ("B", per_user_b)):
        for column in ("user_id", *metrics):
            if column not in table.columns:
                raise DataError(f"per-user table of {label} is missing column '{column}'", column=column)
    joined = (
        per_user_a.select("user_id", *metrics)
        .join(per_user_b.select("user_id", *metrics), on="user_id", how="full", coalesce=True, suffix="_b")
        .sort("user_id")
    )
    a = joined.select([pl.col(m).fill_null(0.0) for m in metrics]).to_numpy().astype(np.float64)
    b = joined.select([pl.col(f"{m}_b").fill_null(0.0) for m in metrics]).to_numpy().astype(np.float64)
    return joined.select("user_id"), a, b


def compare_topk(
    topk_a: pl.DataFrame,
    topk_b: pl.DataFrame,
    targets: pl.DataFrame,
    ks: Sequence[int] = (10, 50),
    metrics: Sequence[str] | None = None,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    confidence: float = 0.95,
    alpha: float = 0.05,
    primary: Test = "randomization",
    seed: int = 0,
    label_a: str = "A",
    label_b: str = "B",
) -> PairedComparison:
    """Score two top-K tables (`user_id, item_id, rank`) on the same targets and compare them per user.

    Every target user counts: a user missing from a system's lists scores 0 there (`per_user_metrics`
    does that), so a system cannot look better by skipping hard users. `metrics` defaults to every
    per-user metric at every K (Holm then corrects across all of them).
    """
    per_a = per_user_metrics(topk_a, targets, ks)
    per_b = per_user_metrics(topk_b, targets, ks)
    names = list(metrics) if metrics is not None else metric_columns(per_a)
    _, a, b = align_per_user(per_a, per_b, names)
    return compare_arrays(a, b, names, n_bootstrap, n_permutations, confidence, alpha, primary, seed, label_a, label_b)
