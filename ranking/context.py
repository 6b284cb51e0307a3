"""`BehaviorContext`: everything the ranker knows about the world besides the request itself.

Built once from a `Dataset` (items, interaction log, optional impressions) and shared by training
(thousands of requests, each at its own time t) and serving (one request at "now"). It holds only
time-indexed structures (`ranking.behavior`), so asking it about time t can never reveal an event at
or after t: point-in-time correctness is a property of the data structure, not of caller discipline.

Item content (`ranking.content`, optional): one text vector per item row, attached by the caller that
has an encoder (`with_content`), since the dataset alone holds texts, not vectors.

Item metadata used as features: a release year (`year` column, or the year of `created_at`), a
primary category (`category`, else the first of `genres`) and the set of genres for the user x
category affinity (`genres` split on "," or "|", else the category alone). Either column may be a
list of strings (docs/data.md): the primary category is then the list's first non-empty element,
and every element of the list feeds the affinity.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import scipy.sparse as sp

from ranking.behavior import DEFAULT_COVISIT_WINDOW, CovisitPairs, KeyedEvents, to_seconds
from ranking.content import ItemContent
from recsys.data.order import chronological
from recsys.errors import DataError

if TYPE_CHECKING:
    from recsys.data.dataset import Dataset

DAY = 86_400
# The epoch of every time held here: 1900 leaves room for old catalogues; 32-bit seconds reach 2036+.
_ORIGIN = int(datetime(1970, 1, 1, tzinfo=timezone.utc).timestamp()) - 70 * 365 * DAY
_GENRE_SPLIT = re.compile(r"\s*[|,]\s*")


@dataclass
class BehaviorContext:
    """Item rows, time-indexed logs and item metadata; see the module doc."""

    item_ids: list[str]
    row_of: dict[str, int]
    popularity: KeyedEvents
    covisit: CovisitPairs
    covisit_forward: CovisitPairs
    user_events: dict[str, tuple[np.ndarray, np.ndarray]]  # user -> (item rows, seconds), oldest first
    year: np.ndarray  # float, NaN unknown
    category: np.ndarray  # int code per item, -1 unknown
    categories: list[str]
    genres: list[frozenset[int]]
    impressions: KeyedEvents | None = None
    clicks: KeyedEvents | None = None
    # Item text vectors (`ranking.content`): the text candidates and similarity features; None = off.
    content: ItemContent | None = None
    as_of: int = 0  # seconds (context epoch) just after the newest event
    origin: int = _ORIGIN
    _popular_cache: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)
    _genre_cache: tuple | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls, dataset: Dataset, covisit_window: int = DEFAULT_COVISIT_WINDOW, interactions: pl.DataFrame | None = None
    ) -> BehaviorContext:
        """Index `interactions` (default: the dataset's whole log) over the dataset's item catalogue."""
        items = dataset.items
        item_ids = items["item_id"].to_list()
        row_of = {item: row for row, item in enumerate(item_ids)}
        log = dataset.interactions if interactions is None else interactions
        log = chronological(log)
        unknown = log.filter(~pl.col("item_id").is_in(items["item_id"].implode()))
        if unknown.height:
            raise DataError(
                f"{unknown.height} interactions name items missing from the catalogue "
                f"(first: {unknown['item_id'][0]!r})",
                column="item_id",
                count=unknown.height,
            )
        item_rows = log["item_id"].replace_strict(row_of, return_dtype=pl.Int64).to_numpy()
        user_codes = log["user_id"].rank("dense").to_numpy().astype(np.int64)
        seconds = to_seconds(log["ts"], _ORIGIN)
        grouped = (
            log.with_columns(row=pl.Series(item_rows), sec=pl.Series(seconds))
            .group_by("user_id", maintain_order=True)
            .agg("row", "sec")
        )
        user_events = {
            user: (np.asarray(rows, np.int64), np.asarray(secs, np.int64))
            for user, rows, secs in zip(
                grouped["user_id"].to_list(), grouped["row"].to_list(), grouped["sec"].to_list(), strict=True
            )
        }
        n = len(item_ids)
        year, category, categories, genres = _item_metadata(items)
        context = cls(
            item_ids=item_ids,
            row_of=row_of,
            popularity=KeyedEvents(item_rows, seconds),
            covisit=CovisitPairs.build(user_codes, item_rows, seconds, n, covisit_window),
            covisit_forward=CovisitPairs.build(user_codes, item_rows, seconds, n, covisit_window, directed=True),
            user_events=user_events,
            year=year,
            category=category,
            categories=categories,
            genres=genres,
            as_of=int(seconds.max()) + 1 if len(seconds) else 0,
        )
        if dataset.impressions is not None and dataset.impressions.height:
            context._add_impressions(dataset.impressions)
        return context

    def with_content(self, vectors: np.ndarray | None) -> BehaviorContext:
        """Attach the items' text vectors (row order; None detaches them); returns self."""
        self.content = None if vectors is None else ItemContent.from_vectors(vectors, len(self.item_ids))
        return self

    def _add_impressions(self, impressions: pl.DataFrame) -> None:
        known = impressions.filter(pl.col("item_id").is_in(list(self.row_of)))
        rows = known["item_id"].replace_strict(self.row_of, return_dtype=pl.Int64).to_numpy()
        seconds = to_seconds(known["ts"], self.origin)
        clicked = known["clicked"].to_numpy().astype(bool)
        self.impressions = KeyedEvents(rows, seconds)
        self.clicks = KeyedEvents(rows[clicked], seconds[clicked])
        if len(seconds):
            self.as_of = max(self.as_of, int(seconds.max()) + 1)

    def genre_matrices(self):
        """(indicator, row-normalised) sparse item x genre matrices, built once (the genre-affinity feature)."""
        cached = self._genre_cache
        if cached is None:
            rows = np.repeat(np.arange(len(self.genres)), [len(g) for g in self.genres])
            cols = np.fromiter((c for g in self.genres for c in sorted(g)), dtype=np.int64, count=len(rows))
            shape = (len(self.genres), max(len(self.categories), 1))
            indicator = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)
            sizes = np.maximum(np.asarray(indicator.sum(axis=1)).ravel(), 1.0)
            cached = (indicator, sp.diags(1.0 / sizes) @ indicator)
            self._genre_cache = cached
        return cached

    # ----------------------------------------------------------------------------- queries
    def seconds_of(self, when: datetime | None) -> int:
        """A request time in context seconds; None means "just after the newest event we know"."""
        if when is None:
            return self.as_of
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return int(when.timestamp()) - self.origin

    def datetime_of(self, seconds: int) -> datetime:
        return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=int(seconds) + self.origin)

    def rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """Row numbers of known ids (unknown ones dropped: the facade reports them)."""
        return np.asarray([self.row_of[i] for i in item_ids if i in self.row_of], dtype=np.int64)

    def history_of(self, user_id: str, before: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A user's (item rows, seconds), oldest first, optionally only events before `before`."""
        rows, seconds = self.user_events.get(user_id, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
        if before is not None:
            keep = seconds < before
            return rows[keep], seconds[keep]
        return rows, seconds

    def popular(self, end: int, days: int, top: int) -> np.ndarray:
        """The `top` item rows by interactions in [end - days, end), then by all-time count before `end`.

        Cached per exact (end, days): online requests all ask at the context's `as_of` and share one
        entry; a coarser key (say, the hour) would let a query see events between its own time and
        that of the query that filled the entry, a point-in-time leak.
        """
        key = (end, days)
        cached = self._popular_cache.get(key)
        if cached is None:  # the whole ranking (items seen before `end`), so any `top` is a slice
            every = np.arange(len(self.item_ids), dtype=np.int64)
            recent = self.popularity.total(every, end, end - days * DAY)
            ever = self.popularity.total(every, end)
            order = np.lexsort((every, -ever, -recent))  # recent first, all-time breaks ties
            cached = order[ever[order] > 0]
            if len(self._popular_cache) > 256:
                self._popular_cache.clear()
            self._popular_cache[key] = cached
        return cached[:top]


def _item_metadata(items: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str], list[frozenset[int]]]:
    """(year, category code, category names, genre-code sets) per item row."""
    n = items.height
    if "year" in items.columns:
        year = items["year"].cast(pl.Float64, strict=False).to_numpy().astype(np.float64)
    elif "created_at" in items.columns:
        year = items["created_at"].dt.year().cast(pl.Float64).to_numpy().astype(np.float64)
    else:
        year = np.full(n, np.nan)
    genre_lists = _labels(items, "genres") if "genres" in items.columns else [[] for _ in range(n)]
    category_lists = _labels(items, "category") if "category" in items.columns else None
    if category_lists is None:
        primary = [g[0] if g else "" for g in genre_lists]
    else:  # a string category is a one-element list; a list's primary category is its first element
        primary = [c[0] if c else "" for c in category_lists]
        genre_lists = [g or c for g, c in zip(genre_lists, category_lists, strict=True)]
    genre_lists = [g or ([p] if p else []) for g, p in zip(genre_lists, primary, strict=True)]
    names = sorted({p for p in primary if p} | {g for gl in genre_lists for g in gl})
    code = {name: i for i, name in enumerate(names)}
    category = np.asarray([code.get(p, -1) if p else -1 for p in primary], dtype=np.int64)
    genres = [frozenset(code[g] for g in gl) for gl in genre_lists]
    return year, category, names, genres


def _labels(items: pl.DataFrame, column: str) -> list[list[str]]:
    """Each item's non-empty labels: a list column's elements, or a string split on "," / "|" for
    `genres` (MovieLens writes "Drama|Crime") and kept whole for `category` ("Books, Fiction" is one)."""
    values = items[column]
    if isinstance(values.dtype, (pl.List, pl.Array)):
        rows = values.cast(pl.List(pl.String)).to_list()
        return [[v.strip() for v in row if v and v.strip()] if row else [] for row in rows]
    texts = values.cast(pl.String).to_list()
    if column == "genres":
        return [[g for g in _GENRE_SPLIT.split(v) if g and g != "(no genres listed)"] if v else [] for v in texts]
    return [[v.strip()] if v and v.strip() else [] for v in texts]
