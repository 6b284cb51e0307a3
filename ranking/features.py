"""The ranker's features, defined once for training and serving.

`compute(context, queries, candidates)` turns candidates of any number of queries into one float
matrix in `FEATURES` order. Training calls it with thousands of queries (each at its own time t),
the online path with one; the code is the same, which the parity test checks on real requests.
Every behavioral value comes from `BehaviorContext` lookups bounded by the query's t, so a feature
can only see the past (the leakage test plants future events and shows nothing moves).

Missing values are NaN (LightGBM routes them): e.g. the recency features of a client-sent history
without timestamps, the similarity features when no item vectors are at hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ranking.candidates import Candidates, ItemVectors, Query
from ranking.context import DAY, BehaviorContext


@dataclass(frozen=True)
class Feature:
    name: str
    doc: str
    categorical: bool = False


FEATURES: tuple[Feature, ...] = (
    Feature("interest", "retriever score: user vector . item vector"),
    Feature("retrieval_rank", "position in the retrieval list (retrieval_k when not retrieved)"),
    Feature("source", "first candidate source: 0 retrieval, 1 co-visitation, 2 popular, 3 text", categorical=True),
    Feature("pop_1d", "interactions with the item in the day before t"),
    Feature("pop_7d", "... in the 7 days before t"),
    Feature("pop_30d", "... in the 30 days before t"),
    Feature("pop_365d", "... in the 365 days before t"),
    Feature("pop_all", "... ever before t"),
    Feature("item_age_days", "days since the item's first interaction (NaN: none before t)"),
    Feature("year_gap", "years between t and the item's release year"),
    Feature("year", "the item's release year"),
    Feature("category", "the item's primary category", categorical=True),
    Feature("history_len", "number of items in the user's history"),
    Feature("user_30d", "the user's interactions in the 30 days before t (NaN: no timestamps)"),
    Feature("since_last_days", "days since the user's last interaction (NaN: no timestamps)"),
    Feature("genre_affinity", "share of the user's last 50 items sharing each of the item's genres, averaged"),
    Feature("covisit_last", "co-visitation strength with the most recent history item"),
    Feature("covisit_sum", "co-visitation with the 5 most recent items, weighted 1/position"),
    Feature("covisit_max", "strongest co-visitation with one of the 5 most recent items"),
    Feature("covisit_forward", "like covisit_sum, counting only 'item came after the history item'"),
    Feature("covisit_norm", "covisit_sum / sqrt(1 + pop_all): co-visitation beyond popularity"),
    Feature("forward_share", "covisit_forward / covisit_sum: how sequential the link is"),
    Feature("sim_last", "cosine of the item with the most recent history item"),
    Feature("sim_max5", "highest cosine with one of the 5 most recent items"),
    Feature("text_sim_last", "cosine of the item's text with the most recent history item's (NaN: no content)"),
    Feature("text_sim_profile", "cosine of the item's text with the user's text profile (ranking.content)"),
    Feature("impressions", "times the item was shown before t (NaN without impression logs)"),
    Feature("ctr", "smoothed click rate before t: (clicks + 1) / (impressions + 20)"),
)
FEATURE_NAMES = [f.name for f in FEATURES]
CATEGORICAL = [f.name for f in FEATURES if f.categorical]
RECENT = 5
PROFILE_ITEMS = 50
_EPOCH_1900 = -2_208_988_800  # 1900-01-01 in Unix seconds


def compute(
    context: BehaviorContext, queries: list[Query], candidates: Candidates, item_vectors: ItemVectors | None = None
) -> np.ndarray:
    """Feature matrix [len(candidates), len(FEATURES)] in `FEATURES` order (module doc)."""
    n = len(candidates)
    q, item = candidates.query, candidates.item
    t = np.asarray([query.t for query in queries], dtype=np.int64)[q] if n else np.zeros(0, np.int64)
    out: dict[str, np.ndarray] = {
        "interest": candidates.interest.astype(np.float64),
        "retrieval_rank": candidates.retrieval_rank.astype(np.float64),
        "source": candidates.source.astype(np.float64),
    }
    pop = context.popularity
    for days in (1, 7, 30, 365):
        out[f"pop_{days}d"] = pop.total(item, t, t - days * DAY)
    out["pop_all"] = pop.total(item, t)
    first = pop.first_seconds(item, t)
    out["item_age_days"] = np.where(first >= 0, (t - first) / DAY, np.nan)
    year_at_t = 1900.0 + (t + context.origin - _EPOCH_1900) / (365.2425 * DAY)
    out["year"] = context.year[item]
    out["year_gap"] = year_at_t - out["year"]
    category = context.category[item].astype(np.float64)
    out["category"] = np.where(category >= 0, category, np.nan)

    user = _user_features(queries)
    for name, values in user.items():
        out[name] = values[q] if n else np.zeros(0)
    out["genre_affinity"] = _genre_affinity(context, queries, q, item)

    recent = _recent_matrix(queries)[q] if n else np.zeros((0, RECENT), np.int64)
    covisit_sum = np.zeros(n)
    covisit_max = np.zeros(n)
    forward = np.zeros(n)
    sim_max = np.full(n, np.nan)
    for j in range(RECENT):
        ok = recent[:, j] >= 0
        strength = np.zeros(n)
        strength[ok] = context.covisit.strength(recent[ok, j], item[ok], t[ok])
        forward_j = np.zeros(n)
        forward_j[ok] = context.covisit_forward.strength(recent[ok, j], item[ok], t[ok])
        covisit_sum += strength / (j + 1)
        forward += forward_j / (j + 1)
        covisit_max = np.maximum(covisit_max, strength)
        if j == 0:
            out["covisit_last"] = strength
        if item_vectors is not None and ok.any():
            cosine = np.full(n, np.nan)
            cosine[ok] = np.einsum("ij,ij->i", item_vectors(recent[ok, j]), item_vectors(item[ok]))
            if j == 0:
                out["sim_last"] = cosine
            sim_max = np.fmax(sim_max, cosine)
    out["covisit_sum"] = covisit_sum
    out["covisit_max"] = covisit_max
    out["covisit_forward"] = forward
    out["covisit_norm"] = covisit_sum / np.sqrt(1.0 + out["pop_all"])
    out["forward_share"] = np.where(covisit_sum > 0, forward / np.maximum(covisit_sum, 1e-12), np.nan)
    out.setdefault("sim_last", np.full(n, np.nan))
    out["sim_max5"] = sim_max
    out["text_sim_last"], out["text_sim_profile"] = _text_similarity(context, queries, q, item, recent)
    if context.impressions is not None and context.clicks is not None:
        shown = context.impressions.total(item, t)
        out["impressions"] = shown
        out["ctr"] = (context.clicks.total(item, t) + 1.0) / (shown + 20.0)
    else:
        out["impressions"] = np.full(n, np.nan)
        out["ctr"] = np.full(n, np.nan)
    return (
        np.column_stack([out[name].astype(np.float64) for name in FEATURE_NAMES]) if n else np.zeros((0, len(FEATURES)))
    )


def _text_similarity(
    context: BehaviorContext, queries: list[Query], q: np.ndarray, item: np.ndarray, recent: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(cosine with the newest history item's text, cosine with the user's text profile); NaN without content.

    Per query (candidates of one query are contiguous): one [candidates, dim] x [dim, 2] product, so
    memory stays at one query's candidates instead of three [all candidates, dim] gathers.
    """
    n = len(item)
    last, profile = np.full(n, np.nan), np.full(n, np.nan)
    content = context.content
    if content is None or not n:
        return last, profile
    bounds = np.flatnonzero(np.diff(q)) + 1
    for rows in np.split(np.arange(n), bounds):
        query = queries[int(q[rows[0]])]
        anchors = []
        newest = int(recent[rows[0], 0])
        if newest >= 0:
            anchors.append(content.vectors[newest])
        user_profile = content.profile(query.history)
        if user_profile is not None:
            anchors.append(user_profile)
        if not anchors:
            continue
        scores = content.vectors[item[rows]] @ np.stack(anchors, axis=1)
        if newest >= 0:
            last[rows] = scores[:, 0]
        if user_profile is not None:
            profile[rows] = scores[:, -1]
    return last, profile


def _user_features(queries: list[Query]) -> dict[str, np.ndarray]:
    length = np.asarray([len(query.history) for query in queries], dtype=np.float64)
    recent = np.full(len(queries), np.nan)
    since = np.full(len(queries), np.nan)
    for i, query in enumerate(queries):
        seconds = query.history_seconds
        if seconds is not None and len(seconds):
            seconds = np.asarray(seconds, dtype=np.int64)
            recent[i] = float(np.count_nonzero((seconds >= query.t - 30 * DAY) & (seconds < query.t)))
            since[i] = (query.t - int(seconds.max())) / DAY
        elif seconds is not None:
            recent[i] = 0.0
    return {"history_len": length, "user_30d": recent, "since_last_days": since}


def _recent_matrix(queries: list[Query]) -> np.ndarray:
    """[queries, RECENT] item rows, most recent first, -1 padded."""
    matrix = np.full((len(queries), RECENT), -1, dtype=np.int64)
    for i, query in enumerate(queries):
        last = np.asarray(query.history, dtype=np.int64)[::-1][:RECENT]
        matrix[i, : len(last)] = last
    return matrix


def _genre_affinity(context: BehaviorContext, queries: list[Query], q: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Mean, over the item's genres, of the share of the user's last 50 items that have that genre."""
    indicator, normalized = context.genre_matrices()
    profiles = np.zeros((len(queries), indicator.shape[1]))
    for i, query in enumerate(queries):
        last = np.asarray(query.history, dtype=np.int64)[-PROFILE_ITEMS:]
        if len(last):
            profiles[i] = np.asarray(indicator[last].sum(axis=0)).ravel() / len(last)
    if not len(item):
        return np.zeros(0)
    return np.asarray(normalized[item].multiply(profiles[q]).sum(axis=1)).ravel()
