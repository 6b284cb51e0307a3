"""Point-in-time lookups over the interaction log: counts, first-seen times and co-visitation.

Why this shape: every behavioral feature the ranker uses is "how much of X happened before time t"
(popularity in a window, an item's first interaction, how often two items were consumed close
together). Stored as one sorted array of `key << 32 | seconds` per table with a cumulative weight,
each question is two `np.searchsorted` calls, vectorised over any number of (key, t) pairs. The
same structure answers a training example at its own time t (so it can never see an event at or
after t: the leakage test plants one) and an online request at "now" (the service), which is what
makes the training and serving paths one piece of code.

Times are whole seconds relative to the log's epoch (`origin`), held in 32 bits: 136 years of range.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import polars as pl

from recsys.errors import ConfigError, DataError

_SHIFT = np.int64(32)
_MAX_SECONDS = (1 << 32) - 1
DEFAULT_COVISIT_WINDOW = 10


def to_seconds(values: pl.Series | np.ndarray | list[datetime], origin: int) -> np.ndarray:
    """UTC datetimes (polars series, numpy datetime64 or python datetimes) as int64 seconds since `origin`."""
    if isinstance(values, pl.Series):
        seconds = values.dt.epoch("s").to_numpy().astype(np.int64)
    elif isinstance(values, np.ndarray) and np.issubdtype(values.dtype, np.datetime64):
        seconds = values.astype("datetime64[s]").astype(np.int64)
    else:
        seconds = np.asarray([int(_aware(v).timestamp()) for v in values], dtype=np.int64)
    return seconds - origin


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


class KeyedEvents:
    """Weighted events per integer key, answering "total weight of key in [start, end)" in O(log n)."""

    def __init__(self, keys: np.ndarray, seconds: np.ndarray, weights: np.ndarray | None = None) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        seconds = np.asarray(seconds, dtype=np.int64)
        if keys.shape != seconds.shape:
            raise DataError(f"{len(keys)} keys but {len(seconds)} timestamps")
        if len(seconds) and (seconds.min() < 0 or seconds.max() > _MAX_SECONDS):
            raise DataError("event times fall outside the 136-year range of the log's epoch", column="ts")
        composite = (keys << _SHIFT) | seconds
        order = np.argsort(composite, kind="stable")
        self.composite = composite[order]
        self.keys = keys[order]
        self.seconds = seconds[order]
        w = np.ones(len(keys)) if weights is None else np.asarray(weights, dtype=np.float64)[order]
        self.cumulative = np.concatenate([[0.0], np.cumsum(w)])

    def __len__(self) -> int:
        return len(self.keys)

    def _position(self, keys: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        clipped = np.clip(seconds, 0, _MAX_SECONDS)
        return np.searchsorted(self.composite, (np.asarray(keys, np.int64) << _SHIFT) | clipped, side="left")

    def total(self, keys: np.ndarray, end: np.ndarray | int, start: np.ndarray | int | None = None) -> np.ndarray:
        """Weight of events of each key with `start <= t < end` (start=None: since the beginning; scalars broadcast)."""
        keys = np.asarray(keys, dtype=np.int64)
        end = np.broadcast_to(np.asarray(end, dtype=np.int64), keys.shape)
        begin = np.zeros_like(keys) if start is None else np.broadcast_to(np.asarray(start, np.int64), keys.shape)
        hi = self._position(keys, end)
        lo = self._position(keys, np.minimum(begin, end))
        return self.cumulative[hi] - self.cumulative[lo]

    def first_seconds(self, keys: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Time of each key's first event before `end`, or -1 when it has none."""
        keys = np.asarray(keys, dtype=np.int64)
        end = np.broadcast_to(np.asarray(end, dtype=np.int64), keys.shape)
        lo = self._position(keys, np.zeros_like(keys))
        ok = lo < len(self.keys)
        lo_safe = np.minimum(lo, max(len(self.keys) - 1, 0))
        if not len(self.keys):
            return np.full(keys.shape, -1, dtype=np.int64)
        ok &= (self.keys[lo_safe] == keys) & (self.seconds[lo_safe] < end)
        return np.where(ok, self.seconds[lo_safe], -1)

    def block_before(self, key: int, end: int) -> slice:
        """Rows of one key with time < end (contiguous, time-ordered)."""
        lo = int(self._position(np.asarray([key]), np.asarray([0]))[0])
        hi = int(self._position(np.asarray([key]), np.asarray([end]))[0])
        return slice(lo, hi)


@dataclass
class CovisitPairs:
    """Directed pairs (a, b): b consumed within `window` positions of a by the same user.

    Each pair occurrence carries the time of its later event (it is only known from then on) and a
    weight 1/distance. `strength(a, b, t)` sums those before t; `neighbours(a, t)` lists every b.
    """

    events: KeyedEvents  # key = dense pair id
    pair_codes: np.ndarray  # sorted distinct a * n_items + b, index = dense pair id
    by_source: KeyedEvents  # key = a, for neighbour lists
    partner: np.ndarray  # b for each row of by_source (same order)
    n_items: int
    window: int

    @classmethod
    def build(
        cls,
        user_rows: np.ndarray,
        item_rows: np.ndarray,
        seconds: np.ndarray,
        n_items: int,
        window: int = DEFAULT_COVISIT_WINDOW,
        directed: bool = False,
    ) -> CovisitPairs:
        """From events sorted by (user, time, item): pairs at distance 1..window in each user's sequence.

        `directed=True` keeps only (earlier, later) pairs: "b came after a", the order signal.
        """
        if window < 1:
            raise ConfigError(f"co-visitation window must be >= 1, got {window}")
        sources, targets, times, weights = [], [], [], []
        for d in range(1, window + 1):
            same = user_rows[d:] == user_rows[:-d]
            a, b = item_rows[:-d][same], item_rows[d:][same]
            t = np.maximum(seconds[:-d][same], seconds[d:][same])
            w = np.full(len(a), 1.0 / d)
            sources += [a] if directed else [a, b]
            targets += [b] if directed else [b, a]
            times += [t] if directed else [t, t]
            weights += [w] if directed else [w, w]
        a = np.concatenate(sources) if sources else np.zeros(0, np.int64)
        b = np.concatenate(targets) if targets else np.zeros(0, np.int64)
        t = np.concatenate(times) if times else np.zeros(0, np.int64)
        w = np.concatenate(weights) if weights else np.zeros(0)
        keep = a != b
        a, b, t, w = a[keep], b[keep], t[keep], w[keep]
        codes = a.astype(np.int64) * n_items + b
        pair_codes, dense = np.unique(codes, return_inverse=True)
        by_source = KeyedEvents(a, t, w)
        order = np.argsort((a.astype(np.int64) << _SHIFT) | t, kind="stable")
        return cls(KeyedEvents(dense, t, w), pair_codes, by_source, b[order], n_items, window)

    def strength(self, a: np.ndarray, b: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Summed 1/distance weight of (a, b) occurrences before `end`; 0 for pairs never seen."""
        codes = np.asarray(a, np.int64) * self.n_items + np.asarray(b, np.int64)
        pos = np.searchsorted(self.pair_codes, codes)
        pos_safe = np.minimum(pos, max(len(self.pair_codes) - 1, 0))
        if not len(self.pair_codes):
            return np.zeros(codes.shape)
        found = self.pair_codes[pos_safe] == codes
        values = self.events.total(pos_safe, end)
        return np.where(found, values, 0.0)

    def neighbours(
        self, items: np.ndarray, end: int, weights: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Partners of `items` before `end` and their summed strength (optionally weighted per item).

        Returns (partner rows, strengths) sorted by strength descending, then row ascending.
        """
        cumulative = self.by_source.cumulative
        partners, values = [], []
        for i, item in enumerate(np.asarray(items, dtype=np.int64).tolist()):
            rows = self.by_source.block_before(item, int(end))
            if rows.stop <= rows.start:
                continue
            scale = 1.0 if weights is None else float(weights[i])
            partners.append(self.partner[rows])
            values.append(np.diff(cumulative[rows.start : rows.stop + 1]) * scale)
        if not partners:
            return np.zeros(0, np.int64), np.zeros(0)
        uniq, inverse = np.unique(np.concatenate(partners), return_inverse=True)
        sums = np.bincount(inverse, weights=np.concatenate(values))
        order = np.lexsort((uniq, -sums))
        return uniq[order], sums[order]
