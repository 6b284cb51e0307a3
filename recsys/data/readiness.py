"""Is this dataset enough to train on? Checked before any training, with one clear error per problem.

The pipeline's minimum, and why:

- **timestamps that order events**: the split holds out each user's *last* interactions, and the
  ranker's features are point-in-time; if every interaction has the same time there is no "last";
- **at least two items with interactions**: a single item leaves nothing to rank;
- **users with at least 3 interactions** (`MIN_PER_USER`): leave-last-out takes one for test and one
  for validation and needs at least one to learn from; users with fewer stay in training only. If no
  user has 3, nothing can be evaluated;
- **item text**: the encoder reads the rendered template; if it renders empty for every item there is
  nothing to read.

`profile` measures what the budgets are picked from (`jobs.budgets`).
"""

from __future__ import annotations

from dataclasses import dataclass

from recsys.data.dataset import Dataset
from recsys.errors import DataError

MIN_PER_USER = 3


@dataclass(frozen=True)
class DataProfile:
    """The sizes that matter for budgets and for the thin-data checks."""

    users: int
    items: int  # catalog size
    items_with_interactions: int
    interactions: int
    eligible_users: int  # users with >= MIN_PER_USER interactions: the evaluated ones
    distinct_times: int
    median_history: float

    def line(self) -> str:
        return (
            f"{self.users:,} users ({self.eligible_users:,} with >= {MIN_PER_USER} interactions), "
            f"{self.items:,} items ({self.items_with_interactions:,} with interactions), "
            f"{self.interactions:,} interactions, median history {self.median_history:.0f}"
        )


def profile(dataset: Dataset) -> DataProfile:
    """Measure the dataset (cheap: a few group-bys over the interaction log)."""
    inter = dataset.interactions
    per_user = inter.group_by("user_id").len()["len"]
    return DataProfile(
        users=per_user.len(),
        items=dataset.items.height,
        items_with_interactions=inter["item_id"].n_unique(),
        interactions=inter.height,
        eligible_users=int((per_user >= MIN_PER_USER).sum()),
        distinct_times=inter["ts"].n_unique(),
        median_history=float(per_user.median() or 0.0),  # type: ignore[arg-type]  # median of ints is a float
    )


def check_trainable(dataset: Dataset, source: str) -> DataProfile:
    """The profile, or a `DataError` naming what is missing (rules in the module doc)."""
    stats = profile(dataset)
    where = f"{source}/interactions.parquet"
    if stats.interactions == 0:
        raise DataError("no interactions: the pipeline learns from user-item events", file=where)
    if stats.distinct_times < 2:
        raise DataError(
            "every interaction has the same timestamp, so there is no order to hold the last ones "
            "out by; map a real event time to ts (recsys data convert --map <column>=ts)",
            file=where,
            column="ts",
        )
    if stats.items_with_interactions < 2:
        raise DataError(
            f"only {stats.items_with_interactions} item has interactions; ranking needs at least two",
            file=where,
            column="item_id",
        )
    if stats.eligible_users == 0:
        most = int(dataset.interactions.group_by("user_id").len()["len"].max())  # type: ignore[arg-type]  # a count
        raise DataError(
            f"no user has {MIN_PER_USER} or more interactions (the most is {most}); leave-last-out "
            "needs one "
            "to test, one to validate and one to learn from per evaluated user",
            file=where,
            column="user_id",
        )
    texts = dataset.item_text()["text"]
    if (texts.str.len_chars() == 0).all():
        raise DataError(
            f"the item-text template {dataset.text_template!r} renders empty for every item; "
            "convert again with a --template naming text columns",
            file=f"{source}/items.parquet",
        )
    return stats


def empty_text_items(dataset: Dataset) -> int:
    """How many items render to empty text (they are still ranked, by behaviour alone)."""
    return int((dataset.item_text()["text"].str.len_chars() == 0).sum())
