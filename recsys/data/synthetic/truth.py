"""`GroundTruth`: the latent tastes, item quality, click model and logging policy behind a dataset."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl

from recsys.data.synthetic.vocabulary import N_TOPICS, TOPICS_PER_CATEGORY
from recsys.errors import ConfigError, DataError

TASTE_FLOOR = 1e-4


def _to_us(ts: Any) -> np.ndarray:
    """Timestamps (polars datetimes, numpy datetime64, datetimes or int microseconds) as int64 µs (UTC)."""
    if isinstance(ts, pl.Series):
        if isinstance(ts.dtype, pl.Datetime):
            return ts.dt.epoch("us").to_numpy().astype(np.int64)
        return ts.cast(pl.Int64).to_numpy()
    arr = np.asarray(ts)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[us]").astype(np.int64)
    if arr.dtype == object:
        return _to_us(pl.Series(list(arr)))
    return arr.astype(np.int64)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class GroundTruth:
    """The latent state behind a synthetic dataset: tastes, item quality, click model, logging policy.

    Vectorised methods take parallel sequences of ids and timestamps. Ids are the dataset's own
    (``"u000042"``, ``"i000123"``); unknown ids raise `DataError`.
    """

    start_us: int
    categories: tuple[str, ...]
    user_ids: pl.Series  # by user index
    item_ids: pl.Series  # by internal item index (topic-sorted)
    item_topic: np.ndarray
    item_quality: np.ndarray
    item_logging_quality: np.ndarray
    item_created_s: np.ndarray  # seconds after start (negative: before it)
    theta: np.ndarray  # (2, users, categories) category mixtures of the two anchors
    phi: np.ndarray  # (2, users, categories, topics per category) topic mixtures
    drift: np.ndarray  # (users,) final weight of anchor 1
    first_s: np.ndarray  # (users,) first interaction, seconds after start
    last_s: np.ndarray
    logging_noise: np.ndarray  # (users, n_topics)
    position_bias: np.ndarray
    click_bias: float
    logging_temperature: float
    _index: dict[str, Any] = field(default_factory=dict, repr=False)

    # -- id and time mapping ------------------------------------------------------------------------
    def _user_index(self, user_ids: Any) -> np.ndarray:
        return self._lookup(user_ids, self.user_ids, "user_id")

    def _item_index(self, item_ids: Any) -> np.ndarray:
        return self._lookup(item_ids, self.item_ids, "item_id")

    def _lookup(self, ids: Any, known: pl.Series, column: str) -> np.ndarray:
        if column not in self._index:
            self._index[column] = pl.DataFrame({"_id": known, "_idx": np.arange(known.len(), dtype=np.int64)})
        query = pl.DataFrame({"_id": pl.Series(ids if not isinstance(ids, str) else [ids], dtype=pl.String)})
        found = query.join(self._index[column], on="_id", how="left", maintain_order="left")["_idx"]
        if found.null_count():
            missing = found.is_null()
            row = int(missing.arg_true()[0]) + 1
            raise DataError(
                f"unknown id {query['_id'][row - 1]!r} for this synthetic dataset",
                column=column,
                row=row,
                count=int(missing.sum()),
            )
        return found.to_numpy()

    def _seconds(self, ts: Any) -> np.ndarray:
        return (_to_us(ts) - self.start_us) / 1e6

    # -- tastes -----------------------------------------------------------------------------------
    def _lam(self, uidx: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        first = self.first_s[uidx]
        span = np.maximum(self.last_s[uidx] - first, 1.0)
        return self.drift[uidx] * np.clip((t_s - first) / span, 0.0, 1.0)

    def _topic_pref(self, uidx: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        """(n, n_topics) true topic distribution of each (user, time)."""
        lam = self._lam(uidx, t_s)[:, None]
        p0 = (self.theta[0, uidx][:, :, None] * self.phi[0, uidx]).reshape(len(uidx), -1)
        p1 = (self.theta[1, uidx][:, :, None] * self.phi[1, uidx]).reshape(len(uidx), -1)
        return (1.0 - lam) * p0 + lam * p1

    def _topic_pref_at(self, uidx: np.ndarray, topic: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        """True preference of each user for one topic each: `_topic_pref` without the full matrix."""
        cat, sub = np.divmod(topic, TOPICS_PER_CATEGORY)
        lam = self._lam(uidx, t_s)
        p0 = self.theta[0, uidx, cat].astype(np.float64) * self.phi[0, uidx, cat, sub]
        p1 = self.theta[1, uidx, cat].astype(np.float64) * self.phi[1, uidx, cat, sub]
        return (1.0 - lam) * p0 + lam * p1

    def _affinity_idx(self, uidx: np.ndarray, iidx: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        topic = self.item_topic[iidx]
        pref = self._topic_pref_at(uidx, topic, t_s)
        return np.log(N_TOPICS * np.maximum(pref, TASTE_FLOOR)) + self.item_quality[iidx]

    def category_preference(self, user_ids: Any, ts: Any) -> np.ndarray:
        """(n, n_categories) true category mixture of each user at each time (columns: `categories`)."""
        uidx = self._user_index(user_ids)
        pref = self._topic_pref(uidx, self._seconds(ts))
        return pref.reshape(len(uidx), len(self.categories), TOPICS_PER_CATEGORY).sum(axis=2)

    def affinity(self, user_ids: Any, item_ids: Any, ts: Any) -> np.ndarray:
        """True affinity (a logit) of each user for each item at each time."""
        return self._affinity_idx(self._user_index(user_ids), self._item_index(item_ids), self._seconds(ts))

    def click_probability(self, user_ids: Any, item_ids: Any, positions: Any, ts: Any) -> np.ndarray:
        """P(click) = position_bias[position] * sigmoid(affinity + click_bias), positions 0-based."""
        pos = np.asarray(positions, dtype=np.int64)
        if (pos < 0).any() or (pos >= len(self.position_bias)).any():
            raise ConfigError(f"positions must be in [0, {len(self.position_bias) - 1}]")
        aff = self.affinity(user_ids, item_ids, ts)
        return self.position_bias[pos] * sigmoid(aff + self.click_bias)

    # -- logging policy ----------------------------------------------------------------------------
    @cached_property
    def _availability(self) -> dict[str, np.ndarray]:
        """Items ordered by (topic, created) with per-topic cumulative logging weights."""
        order = np.lexsort((self.item_created_s, self.item_topic))
        topic_sorted = self.item_topic[order]
        starts = np.searchsorted(topic_sorted, np.arange(N_TOPICS), side="left")
        ends = np.searchsorted(topic_sorted, np.arange(N_TOPICS), side="right")
        q = self.item_logging_quality
        weight = np.exp((q - q.max()) / self.logging_temperature)
        cum = np.empty(len(order), dtype=np.float64)
        for t in range(N_TOPICS):  # per-topic cumsums: no cancellation between topics
            cum[starts[t] : ends[t]] = np.cumsum(weight[order[starts[t] : ends[t]]])
        return {
            "order": order,
            "created": self.item_created_s[order],
            "starts": starts,
            "ends": ends,
            "weight": weight,
            "cum": cum,
        }

    def _available(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, n_topics) number of existing items and their summed item weight, per topic, at each time."""
        av = self._availability
        count = np.empty((len(t_s), N_TOPICS), dtype=np.int64)
        mass = np.zeros((len(t_s), N_TOPICS), dtype=np.float64)
        for t in range(N_TOPICS):
            s, e = av["starts"][t], av["ends"][t]
            n = np.searchsorted(av["created"][s:e], t_s, side="right")
            count[:, t] = n
            has = n > 0
            mass[has, t] = av["cum"][s + n[has] - 1]
        return count, mass

    def _logging_topic_factor(self, uidx: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        """(n, n_topics) exp(topic part of the logging score / T), scaled so each row's max is 1."""
        pref = self._topic_pref(uidx, t_s)
        score = np.log(N_TOPICS * np.maximum(pref, TASTE_FLOOR)) + self.logging_noise[uidx]
        score /= self.logging_temperature
        return np.exp(score - score.max(axis=1, keepdims=True))

    def _logging_parts(self, uidx: np.ndarray, t_s: np.ndarray) -> dict[str, np.ndarray]:
        """Per row and topic: score factor, existing-item count and weight, logging mass; and Z per row.

        The logging policy's unnormalised weight of item ``i`` is ``factor[topic(i)] * weight[i]``
        for items that exist; ``z`` sums it over all of them.
        """
        factor = self._logging_topic_factor(uidx, t_s)
        count, weight_mass = self._available(t_s)
        mass = factor * weight_mass
        z = mass.sum(axis=1)
        return {"factor": factor, "count": count, "weight_mass": weight_mass, "mass": mass, "z": z}

    def logging_probability(self, user_ids: Any, item_ids: Any, ts: Any) -> np.ndarray:
        """Single-slot probability that the logging policy shows each item (= the position-0 propensity).

        0 for items that do not exist yet at `ts`.
        """
        uidx, iidx, t_s = self._user_index(user_ids), self._item_index(item_ids), self._seconds(ts)
        parts = self._logging_parts(uidx, t_s)
        rows = np.arange(len(uidx))
        p = parts["factor"][rows, self.item_topic[iidx]] * self._availability["weight"][iidx] / parts["z"]
        return np.where(self.item_created_s[iidx] <= t_s, p, 0.0)

    # -- matrices over a candidate list, for computing true values of target policies -------------------
    def available(self, ts: Any, item_ids: Any) -> np.ndarray:
        """(n_requests, n_items) True where the item exists at the request time (the action set)."""
        return self.item_created_s[self._item_index(item_ids)][None, :] <= self._seconds(ts)[:, None]

    def logging_probability_matrix(self, user_ids: Any, ts: Any, item_ids: Any) -> np.ndarray:
        """(n_requests, n_items) single-slot logging probabilities; rows sum to 1 over the whole catalog."""
        uidx, iidx, t_s = self._user_index(user_ids), self._item_index(item_ids), self._seconds(ts)
        parts = self._logging_parts(uidx, t_s)
        p = parts["factor"][:, self.item_topic[iidx]] * self._availability["weight"][iidx][None, :]
        p /= parts["z"][:, None]
        return np.where(self.item_created_s[iidx][None, :] <= t_s[:, None], p, 0.0)

    def click_probability_matrix(self, user_ids: Any, ts: Any, item_ids: Any, position: int = 0) -> np.ndarray:
        """(n_requests, n_items) true click probabilities if each item were shown at `position`.

        The true single-slot value of a target policy with probabilities ``pi`` (same shape) is
        ``(pi * click_probability_matrix(...)).sum(axis=1).mean()``.
        """
        if not 0 <= position < len(self.position_bias):
            raise ConfigError(f"position must be in [0, {len(self.position_bias) - 1}]; got {position}")
        uidx, iidx, t_s = self._user_index(user_ids), self._item_index(item_ids), self._seconds(ts)
        pref = self._topic_pref(uidx, t_s)[:, self.item_topic[iidx]]
        affinity = np.log(N_TOPICS * np.maximum(pref, TASTE_FLOOR)) + self.item_quality[iidx][None, :]
        return self.position_bias[position] * sigmoid(affinity + self.click_bias)
