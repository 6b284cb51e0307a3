"""Users (activity, session timing, drifting tastes) and their interactions, drawn session by session."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from recsys.data.synthetic.config import SyntheticConfig, utc_datetimes
from recsys.data.synthetic.truth import GroundTruth, sigmoid
from recsys.data.synthetic.vocabulary import CATEGORIES, N_TOPICS, TOPICS_PER_CATEGORY


def _dirichlet(rng: np.random.Generator, alpha: float, shape: tuple[int, ...]) -> np.ndarray:
    """Dirichlet rows along the last axis, from gamma draws (an all-zero row, possible for tiny alpha,
    becomes uniform)."""
    g = rng.standard_gamma(alpha, size=shape)
    total = g.sum(axis=-1, keepdims=True)
    g = np.where(total > 0, g, 1.0)
    return g / g.sum(axis=-1, keepdims=True)


def build_users(
    rng: np.random.Generator, n_users: int, n_interactions: int, horizon: int, cfg: SyntheticConfig
) -> dict[str, np.ndarray]:
    """Per-user counts, session structure, timestamps (seconds after start) and latent tastes."""
    weight = rng.lognormal(0.0, 1.1, n_users)
    counts = 3 + rng.multinomial(n_interactions - 3 * n_users, weight / weight.sum())
    first_idx = np.concatenate([[0], np.cumsum(counts)[:-1]])
    uid = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    k = np.arange(n_interactions, dtype=np.int64) - first_idx[uid]
    new_session = (k == 0) | (rng.random(n_interactions) < cfg.p_new_session)

    user_start = rng.uniform(0, 0.85 * horizon, n_users)
    span = (horizon - user_start) * np.maximum(rng.random(n_users), rng.random(n_users))
    sessions = np.bincount(uid, weights=new_session, minlength=n_users)
    mean_gap = span / np.maximum(sessions - 1, 1)
    between = np.maximum(rng.exponential(1.0, n_interactions) * mean_gap[uid], 1800.0)
    within = 20.0 + rng.exponential(120.0, n_interactions)
    gap = np.where(new_session, between, within).astype(np.int64)
    gap[k == 0] = 0
    cum = np.cumsum(gap)
    t = user_start.astype(np.int64)[uid] + cum - cum[first_idx][uid]
    last_idx = first_idx + counts - 1

    n_cat = len(CATEGORIES)
    return {
        "counts": counts,
        "first_idx": first_idx,
        "uid": uid,
        "new_session": new_session,
        "t": t,
        "first_s": t[first_idx].astype(np.float64),
        "last_s": t[last_idx].astype(np.float64),
        "theta": _dirichlet(rng, cfg.category_concentration, (2, n_users, n_cat)).astype(np.float32),
        "phi": _dirichlet(rng, cfg.topic_concentration, (2, n_users, n_cat, TOPICS_PER_CATEGORY)).astype(np.float32),
        "drift": rng.uniform(*cfg.drift_range, n_users),
        "noise": rng.normal(0.0, cfg.logging_noise, (n_users, N_TOPICS)).astype(np.float32),
    }


def inverse_cdf(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise categorical draws: index of the first cumulative weight above u * row total."""
    cdf = np.cumsum(weights, axis=1, dtype=np.float64)
    pick = (u[:, None] * cdf[:, -1:] >= cdf).sum(axis=1)
    return np.minimum(pick, weights.shape[1] - 1)


def _sample_topics(
    rng: np.random.Generator,
    truth: GroundTruth,
    uidx: np.ndarray,
    anchor: np.ndarray,
    category: np.ndarray | None = None,
    chunk: int = 500_000,
) -> np.ndarray:
    """A topic per row from the user's anchor (0 or 1): category from theta (unless given), topic from phi."""
    u_cat = rng.random(len(uidx))
    u_topic = rng.random(len(uidx))
    out = np.empty(len(uidx), dtype=np.int64)
    for s in range(0, len(uidx), chunk):
        a, us = anchor[s : s + chunk], uidx[s : s + chunk]
        c = category[s : s + chunk] if category is not None else inverse_cdf(truth.theta[a, us], u_cat[s : s + chunk])
        t = inverse_cdf(truth.phi[a, us, c], u_topic[s : s + chunk])
        out[s : s + chunk] = c * TOPICS_PER_CATEGORY + t
    return out


def _sample_in_topic(rng: np.random.Generator, catalog: dict[str, Any], topic: np.ndarray) -> np.ndarray:
    """Popularity-weighted (Zipf) item draws inside each row's topic."""
    pick = np.searchsorted(catalog["sampler"], topic + rng.random(len(topic)), side="right")
    return np.clip(pick, catalog["topic_start"][topic], catalog["topic_end"][topic] - 1)


def _user_rows(user: np.ndarray, first_idx: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """All row indices of the given users (rows are grouped by user, in user order)."""
    lengths = counts[user]
    ends = np.cumsum(lengths)
    return np.repeat(first_idx[user] - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)


def sample_interactions(
    rng: np.random.Generator,
    truth: GroundTruth,
    catalog: dict[str, Any],
    users: dict[str, np.ndarray],
    cfg: SyntheticConfig,
) -> pl.DataFrame:
    uid, t, new_session = users["uid"], users["t"], users["new_session"]
    n = len(uid)
    rows = np.arange(n, dtype=np.int64)
    lam = truth._lam(uid, t.astype(np.float64))
    anchor = (rng.random(n) < lam).astype(np.int64)
    step = rng.random(n)
    fresh = new_session | (step < cfg.p_fresh_topic)
    series_next = ~new_session & (step >= 1.0 - cfg.p_series_next)

    # Topic: drawn from the current taste at fresh steps, carried forward within the session otherwise.
    topic = np.zeros(n, dtype=np.int64)
    fresh_rows = np.flatnonzero(fresh)
    topic[fresh_rows] = _sample_topics(rng, truth, uid[fresh_rows], anchor[fresh_rows])
    topic = topic[np.maximum.accumulate(np.where(fresh, rows, 0))]

    # Item: popularity draw in the topic, or the next volume of the series the run started from.
    item = _sample_in_topic(rng, catalog, topic)
    base = np.maximum.accumulate(np.where(series_next, 0, rows))
    steps = rows - base
    base_item = item[base]
    target = base_item + steps
    ok = series_next & (catalog["series_len"][base_item] > 1)
    ok &= catalog["volume"][base_item] + steps < catalog["series_len"][base_item]
    item = np.where(ok, target, item)

    # Repairs: items must exist at interaction time and a user rarely sees an item twice. A repeat can
    # only involve rows of the same user, so after the first pass only the repaired users are rechecked.
    created = catalog["created"]
    check = rows
    for attempt in range(8):
        key = pl.Series(uid[check] * len(created) + item[check])
        bad = (created[item[check]] > t[check]) | ~key.is_first_distinct().to_numpy()
        bad_rows = check[bad]
        if len(bad_rows) == 0:
            break
        if attempt >= 4:  # the topic is exhausted for this user: another of their topics in the category
            category = topic[bad_rows] // TOPICS_PER_CATEGORY
            topic[bad_rows] = _sample_topics(rng, truth, uid[bad_rows], anchor[bad_rows], category)
        item[bad_rows] = _sample_in_topic(rng, catalog, topic[bad_rows])
        check = _user_rows(np.unique(uid[bad_rows]), users["first_idx"], users["counts"])
    too_new = np.flatnonzero(created[item] > t)
    item[too_new] = catalog["topic_start"][catalog["topic"][item[too_new]]]  # always an old item

    # Events: purchases are likelier for items the user truly likes.
    affinity = truth._affinity_idx(uid, item, t.astype(np.float64))
    purchase = rng.random(n) < cfg.purchase_rate * sigmoid(affinity - 2.5)

    order = np.argsort(t, kind="stable")
    return pl.DataFrame(
        {
            "user_id": truth.user_ids.gather(uid[order]),
            "item_id": truth.item_ids.gather(item[order]),
            "ts": utc_datetimes(truth.start_us, t[order]),
            "event": pl.Series(["view", "purchase"], dtype=pl.String).gather(purchase[order].astype(np.int8)),
            "weight": np.where(purchase[order], 3.0, 1.0),
        }
    )
