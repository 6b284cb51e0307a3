"""The one chronological order of a user's interactions: (user, ts, item id in natural order).

Why a module of its own: the split, every tower's history, the ranker's point-in-time context and
the nightly job must put same-second events in the same order, or a model is scored on a sequence
it never saw. Same-second ties are common (MovieLens users rate in bulk), so the tie rule decides
which item is the held-out target. Natural order means numeric when every id is an integer
("9" before "10", as the peers' reference split has it), else plain string order.
"""

from __future__ import annotations

import polars as pl

_NUMERIC_KEY = "__item_order"


def ids_are_integers(item_ids: pl.Series) -> bool:
    """True when every id is a plain non-negative integer that fits in 63 bits."""
    ids = item_ids.cast(pl.String)
    return bool(ids.len() == 0 or ids.str.contains(r"^[0-9]{1,18}$").all())


def chronological(frame: pl.DataFrame, descending: bool = False, by_user: bool = True) -> pl.DataFrame:
    """`frame` sorted by (user_id, ts, item id in natural order); newest first when `descending`.

    Users stay ascending either way; `descending` flips only the time and tie order within a user.
    """
    user = ["user_id"] if by_user else []
    flip = [False] * len(user)
    if ids_are_integers(frame["item_id"]):
        keyed = frame.with_columns(pl.col("item_id").cast(pl.String).cast(pl.Int64).alias(_NUMERIC_KEY))
        return keyed.sort(
            [*user, "ts", _NUMERIC_KEY, "item_id"], descending=[*flip, descending, descending, descending]
        ).drop(_NUMERIC_KEY)
    return frame.sort([*user, "ts", "item_id"], descending=[*flip, descending, descending])


def item_order_key(item_ids: pl.Series) -> pl.Series:
    """A sortable key of `item_ids` in natural order (for ranking ties outside a frame sort)."""
    if ids_are_integers(item_ids):
        return item_ids.cast(pl.String).cast(pl.Int64)
    return item_ids.cast(pl.String)
