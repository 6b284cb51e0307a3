"""Which target users are "tie-free": the one rule every quality table uses.

Ties are an artefact of the data, not of taste: in MovieLens many ratings share one second (bulk
rating), and the split orders same-second events by item id, an order a model can learn. A target
that shares its second with the interaction just before it is therefore ambiguous. A user is
**tie-free** at a stage when their target is strictly later in time than the last interaction of the
stage's history:

- test stage (history = train + valid): the test target's ts differs from the validation target's;
- valid stage (history = train): the validation target's ts differs from the last train ts.

Generalised to splits with several targets per user (a global time cut): every target's ts must
differ from the user's last history ts. A target user without any history has nothing to tie with
and is tie-free (after a global time cut every user is, since the cut separates the parts in time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from recsys.splits import Split, Stage


def tie_free_users(split: Split, stage: Stage) -> pl.Series:
    """The sorted, distinct ids of `stage`'s target users whose targets are not tied with their history.

    Ids keep the split's `user_id` dtype. See the module docstring for the rule.
    """
    targets = split.targets(stage).select("user_id", pl.col("ts").alias("_target_ts"))
    last = split.history(stage).group_by("user_id").agg(pl.col("ts").max().alias("_last_ts"))
    tied = (
        targets.join(last, on="user_id", how="inner")
        .filter(pl.col("_target_ts") == pl.col("_last_ts"))
        .select("user_id")
        .unique()
    )
    return targets.select("user_id").unique().join(tied, on="user_id", how="anti").sort("user_id")["user_id"]
