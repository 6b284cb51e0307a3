"""`recsys.ties.tie_free_users` on hand-made splits (the rule: test ts != valid ts; valid ts != last train ts)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from recsys.errors import ConfigError
from recsys.splits import Split, leave_last_out
from recsys.ties import tie_free_users

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _rows(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "ts": [T0 + timedelta(seconds=r[2]) for r in rows],
        },
        schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Datetime("us", "UTC")},
    )


@pytest.fixture
def split() -> Split:
    train = _rows([("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 1), ("u2", "b", 5), ("u3", "a", 1), ("u4", "a", 1)])
    valid = _rows(
        [
            ("u1", "c", 3),  # valid after train: tie-free at valid
            ("u2", "c", 5),  # same second as u2's last train event: tied at valid
            ("u3", "b", 2),
        ]
    )
    test = _rows(
        [
            ("u1", "d", 3),  # same second as the valid target: tied at test
            ("u2", "d", 6),
            ("u3", "c", 3),
            ("u5", "a", 9),
        ]
    )  # no history at all: nothing to tie with
    return Split(train=train, valid=valid, test=test, kind="hand-made")


def test_test_stage_compares_the_test_target_with_the_validation_target(split):
    assert tie_free_users(split, "test").to_list() == ["u2", "u3", "u5"]


def test_valid_stage_compares_the_validation_target_with_the_last_train_event(split):
    assert tie_free_users(split, "valid").to_list() == ["u1", "u3"]


def test_users_without_targets_are_never_listed_and_ids_keep_their_dtype(split):
    ids = tie_free_users(split, "valid")
    assert "u4" not in ids.to_list() and ids.dtype == pl.String and ids.name == "user_id"


def test_agrees_with_leave_last_out_on_same_second_events():
    """Bulk rating: the split orders a second's events by item id; the last two share a second -> tied."""
    interactions = _rows(
        [
            ("u1", "1", 0),
            ("u1", "2", 7),
            ("u1", "10", 7),  # valid 2, test 10, same second
            ("u2", "1", 0),
            ("u2", "2", 0),
            ("u2", "3", 4),  # valid tied with train only
            ("u3", "1", 0),
            ("u3", "2", 1),
            ("u3", "3", 2),
        ]
    )
    split = leave_last_out(interactions)
    assert tie_free_users(split, "test").to_list() == ["u2", "u3"]
    assert tie_free_users(split, "valid").to_list() == ["u1", "u3"]


def test_unknown_stage_is_a_config_error(split):
    with pytest.raises(ConfigError, match="unknown stage"):
        tie_free_users(split, "train")  # type: ignore[arg-type]
