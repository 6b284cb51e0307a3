"""Splits: leave-last-out order and ties, min-interaction rule, time cut, save/load round trip."""

from datetime import datetime, timezone

import polars as pl
import pytest

from recsys.data.order import chronological
from recsys.errors import ConfigError, DataError
from recsys.splits import Split, global_time_cut, leave_last_out


def _interactions(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "ts": [datetime.fromtimestamp(r[2], tz=timezone.utc) for r in rows],
        },
        schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Datetime("us", "UTC")},
    )


def test_leave_last_out_takes_last_by_time_then_item_id():
    frame = _interactions(
        [
            ("u1", "c", 10),
            ("u1", "a", 30),
            ("u1", "b", 30),
            ("u1", "d", 20),
            ("u2", "x", 1),
            ("u2", "y", 2),
            ("u2", "z", 3),
            ("u2", "w", 4),
        ]
    ).sample(fraction=1.0, shuffle=True, seed=3)
    split = leave_last_out(frame)
    # u1 sorted by (ts, item_id): c(10), d(20), a(30), b(30) -> test b, valid a
    assert split.test.filter(pl.col("user_id") == "u1")["item_id"].to_list() == ["b"]
    assert split.valid.filter(pl.col("user_id") == "u1")["item_id"].to_list() == ["a"]
    assert sorted(split.train.filter(pl.col("user_id") == "u1")["item_id"].to_list()) == ["c", "d"]
    assert split.test.filter(pl.col("user_id") == "u2")["item_id"].to_list() == ["w"]
    assert split.train.height + split.valid.height + split.test.height == frame.height


def test_same_second_ties_sort_integer_ids_numerically():
    """9 before 10 when every id is an integer (the peers' split); string order otherwise."""
    numeric = leave_last_out(_interactions([("u", "10", 5), ("u", "9", 5), ("u", "100", 5), ("u", "2", 1)]))
    assert numeric.test["item_id"].to_list() == ["100"] and numeric.valid["item_id"].to_list() == ["10"]
    mixed = leave_last_out(_interactions([("u", "10", 5), ("u", "9", 5), ("u", "a", 5), ("u", "2", 1)]))
    assert mixed.test["item_id"].to_list() == ["a"] and mixed.valid["item_id"].to_list() == ["9"]


def test_chronological_descending_flips_time_and_ties_only():
    frame = _interactions([("b", "10", 5), ("b", "9", 5), ("a", "3", 1), ("a", "20", 2)])
    newest_first = chronological(frame, descending=True)
    assert newest_first["user_id"].to_list() == ["a", "a", "b", "b"]
    assert newest_first["item_id"].to_list() == ["20", "3", "10", "9"]


def test_leave_last_out_is_deterministic_under_shuffles():
    rows = [(f"u{u}", f"i{(u * 7 + k) % 13}", k // 2) for u in range(5) for k in range(6)]
    a = leave_last_out(_interactions(rows))
    b = leave_last_out(_interactions(rows[::-1]))
    assert a.test.sort("user_id").equals(b.test.sort("user_id"))
    assert a.valid.sort("user_id").equals(b.valid.sort("user_id"))


def test_short_users_stay_in_train_and_are_not_evaluated():
    frame = _interactions([("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 1), ("u2", "b", 2), ("u2", "c", 3)])
    split = leave_last_out(frame)
    assert split.test["user_id"].to_list() == ["u2"]
    assert split.train.filter(pl.col("user_id") == "u1").height == 2
    with pytest.raises(ConfigError):
        leave_last_out(frame, min_interactions=2)


def test_history_and_catalog():
    frame = _interactions(
        [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u2", "d", 1), ("u2", "e", 2), ("u2", "f", 3)]
    )
    split = leave_last_out(frame)
    assert split.history("valid").height == 2
    assert split.history("test").height == 4
    assert split.catalog().to_list() == ["a", "b", "c", "d", "e", "f"]
    with pytest.raises(ConfigError):
        split.history("train")  # type: ignore[arg-type]


def test_global_time_cut():
    frame = _interactions([("u1", "a", 10), ("u1", "b", 20), ("u1", "c", 30), ("u2", "d", 15), ("u3", "e", 35)])
    split = global_time_cut(
        frame, datetime.fromtimestamp(30, tz=timezone.utc), datetime.fromtimestamp(20, tz=timezone.utc)
    )
    assert sorted(split.train["item_id"].to_list()) == ["a", "d"]
    assert split.valid["item_id"].to_list() == ["b"]
    assert sorted(split.test["item_id"].to_list()) == ["c", "e"]
    with pytest.raises(ConfigError, match="empty"):
        global_time_cut(frame, "2100-01-01")
    with pytest.raises(ConfigError, match="bad cut time"):
        global_time_cut(frame, "yesterday")


def test_save_load_round_trip(tmp_path):
    frame = _interactions([(f"u{u}", f"i{k}", k) for u in range(3) for k in range(5)])
    split = leave_last_out(frame)
    split.save(tmp_path / "split")
    loaded = Split.load(tmp_path / "split")
    assert loaded.kind == "leave_last_out"
    assert loaded.test.equals(split.test)
    assert loaded.train.equals(split.train)
    with pytest.raises(DataError, match=r"no split\.json"):
        Split.load(tmp_path)
