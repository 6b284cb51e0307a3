"""`Catalog`: what the service reads from the dataset folder, shaped for per-request lookups.

The dataset folder (`recsys.data.dataset.Dataset`) is the service's view of the world between two
nightly runs: item titles and text (history encoding renders items exactly as the nightly job
did), the columns filters match on, every user's history (for `user_id` requests, `exclude_seen`
and the freshness test of a cached user vector), and recent popularity (the cold-start fallback).
Everything is computed once per load into dicts and arrays, so a request does no dataframe work.

Filter rule: an item passes a filter `{column: values}` when its value in `column`, or one of the
comma/pipe-separated parts of that value (MovieLens `genres` are "Adventure, Comedy"), equals one
of `values`, compared case-insensitively after trimming. Several columns must all pass.

Popularity: items ranked by interactions within `popular_days` of the newest interaction, then the
rest of the catalog by all-time interactions (so a large k still fills), ties by item id.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl

from recsys.data.dataset import Dataset
from recsys.data.order import chronological, ids_are_integers
from recsys.errors import DataError

DATASET_FILES = ("dataset.json", "items.parquet", "interactions.parquet")
_PARTS = re.compile(r"\s*[,|]\s*")


@dataclass(frozen=True)
class UserHistory:
    """One user's interactions, newest first ((ts, item_id) descending, as the splits order them)."""

    item_ids: list[str]
    ts_us: np.ndarray  # int64 Unix microseconds, parallel to item_ids

    @property
    def last_ts_us(self) -> int:
        return int(self.ts_us[0])


def folder_signature(folder: str | Path) -> tuple:
    """(name, size, mtime) of the dataset's files: cheap to poll, changes when the folder is rewritten."""
    out: list[tuple[str, int | None, int | None]] = []
    for name in DATASET_FILES:
        try:
            stat = (Path(folder) / name).stat()
            out.append((name, stat.st_size, stat.st_mtime_ns))
        except FileNotFoundError:
            out.append((name, None, None))
    return tuple(out)


class Catalog:
    """Titles, texts, filters, histories and popularity of one dataset (see the module doc)."""

    def __init__(self, dataset: Dataset, *, popular_days: float = 30.0, folder: str | Path | None = None) -> None:
        items = dataset.items
        self.dataset = dataset  # what a ranker is loaded with
        self.name = dataset.name
        self.folder = Path(folder) if folder is not None else None
        self.signature = folder_signature(folder) if folder is not None else None
        self.popular_days = float(popular_days)
        text = dataset.item_text()
        self.item_ids: list[str] = text["item_id"].to_list()
        self.text_of: dict[str, str] = dict(zip(self.item_ids, text["text"].to_list(), strict=True))
        title_column = "title" if "title" in items.columns else None
        titles = items[title_column].to_list() if title_column else [None] * items.height
        self.title_of: dict[str, str | None] = dict(zip(items["item_id"].to_list(), titles, strict=True))
        self.filter_columns: list[str] = [
            name
            for name, dtype in items.schema.items()
            if name != "item_id" and (dtype == pl.String or dtype.is_integer())
        ]
        self._items = items
        self._tokens: dict[str, dict[str, list[str]]] = {}
        self._lock = threading.Lock()
        self._histories, self.interactions = _histories(dataset.interactions)
        # The tie order of same-second events (`recsys.data.order`), which live events must follow too.
        self.integer_item_ids = ids_are_integers(dataset.interactions["item_id"])
        self.popular, self.popular_counts, self.popular_in_window = _popularity(
            dataset.interactions, self.item_ids, self.popular_days
        )

    @classmethod
    def from_folder(cls, folder: str | Path, popular_days: float = 30.0) -> Catalog:
        signature = folder_signature(folder)
        catalog = cls(Dataset.load(folder), popular_days=popular_days, folder=folder)
        catalog.signature = signature  # what was read, even if the folder changed while reading
        return catalog

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.text_of

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def users(self) -> int:
        return len(self._histories)

    def history(self, user_id: str) -> UserHistory | None:
        """The user's history, or None for a user with no interactions in the log."""
        found = self._histories.get(user_id)
        return None if found is None else UserHistory(found[0], found[1])

    # ------------------------------------------------------------------------------ filters
    def check_filters(self, filters: Mapping[str, str | Sequence[str]] | None) -> dict[str, frozenset[str]]:
        """Normalised filters (column -> lower-cased values); `DataError` naming a bad field."""
        out: dict[str, frozenset[str]] = {}
        for column, raw in (filters or {}).items():
            if column not in self.filter_columns:
                raise DataError(
                    f"cannot filter on '{column}': filterable item columns are "
                    f"{', '.join(self.filter_columns) or 'none'}",
                    column=f"filters.{column}",
                )
            values = [raw] if isinstance(raw, str) else list(raw)
            if not values or not all(isinstance(v, str) for v in values):
                raise DataError(
                    "a filter value must be a string or a non-empty list of strings", column=f"filters.{column}"
                )
            out[column] = frozenset(v.strip().lower() for v in values)
        return out

    def matching(self, filters: Mapping[str, frozenset[str]]) -> set[str]:
        """Item ids passing every filter (normalised by `check_filters`)."""
        result: set[str] | None = None
        for column, values in filters.items():
            tokens = self._column_tokens(column)
            passing = {item for value in values for item in tokens.get(value, ())}
            result = passing if result is None else result & passing
        return set(self.item_ids) if result is None else result

    def _column_tokens(self, column: str) -> dict[str, list[str]]:
        with self._lock:
            found = self._tokens.get(column)
            if found is None:
                found = {}
                for item, value in zip(self._items["item_id"].to_list(), self._items[column].to_list(), strict=True):
                    if value is None:
                        continue
                    whole = str(value).strip().lower()
                    keys = {whole, *(part for part in _PARTS.split(whole) if part)}
                    for key in keys:
                        found.setdefault(key, []).append(item)
                self._tokens[column] = found
            return found


def _histories(interactions: pl.DataFrame) -> tuple[dict[str, tuple[list[str], np.ndarray]], int]:
    """user -> (item ids newest first, their Unix microseconds), same-second ties in the models' order."""
    grouped = (
        chronological(interactions.select("user_id", "item_id", "ts"), descending=True)
        .with_columns(pl.col("ts").dt.epoch("us").alias("us"))
        .group_by("user_id", maintain_order=True)
        .agg("item_id", "us")
    )
    out = {
        user: (items, np.asarray(stamps, dtype=np.int64))
        for user, items, stamps in zip(
            grouped["user_id"].to_list(), grouped["item_id"].to_list(), grouped["us"].to_list(), strict=True
        )
    }
    return out, interactions.height


def _popularity(interactions: pl.DataFrame, catalog: list[str], days: float) -> tuple[list[str], np.ndarray, int]:
    """Catalog items by (window count, all-time count) descending, then id; and how many had window activity."""
    items = pl.DataFrame({"item_id": pl.Series(catalog, dtype=pl.String)})
    if interactions.height:
        cutoff = cast(datetime, interactions["ts"].max()) - timedelta(days=days)  # a non-empty Datetime column
        recent = interactions.filter(pl.col("ts") >= cutoff).group_by("item_id").len("window")
        total = interactions.group_by("item_id").len("total")
    else:
        recent = pl.DataFrame(schema={"item_id": pl.String, "window": pl.UInt32})
        total = pl.DataFrame(schema={"item_id": pl.String, "total": pl.UInt32})
    ranked = (
        items.join(recent, on="item_id", how="left")
        .join(total, on="item_id", how="left")
        .with_columns(pl.col("window").fill_null(0), pl.col("total").fill_null(0))
        .sort(["window", "total", "item_id"], descending=[True, True, False])
    )
    window = ranked["window"].to_numpy().astype(np.float64)
    counts = np.where(window > 0, window, ranked["total"].to_numpy().astype(np.float64))
    return ranked["item_id"].to_list(), counts, int((window > 0).sum())
