"""MIND adapter on tiny fixtures in the official layout (no real MIND data is stored here)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from recsys.data.dataset import Dataset
from recsys.data.mind import MIND_TEMPLATE, load_mind
from recsys.errors import DataError
from recsys.splits import leave_last_out

UTC = timezone.utc

NEWS = [
    [
        "N1",
        "sports",
        "football_nfl",
        'Brady\'s "last" game',
        "The quarterback retires.",
        "https://a/1",
        "[]",
        "[]",
    ],
    ["N2", "news", "newsus", "Storm hits coast", "", "https://a/2", "[]", "[]"],
    [
        "N3",
        "lifestyle",
        "lifestyleroyals",
        "Royal wedding",
        "A big day.",
        "https://a/3",
        '[{"Label": "X"}]',
        "[]",
    ],
    ["N4", "finance", "markets", "Stocks rally", "Markets up.", "https://a/4", "[]", "[]"],
    ["N5", "sports", "golf", "Golf open", "Final round.", "https://a/5", "[]", "[]"],
]
BEHAVIORS = [
    ["1", "U1", "11/15/2019 8:55:22 AM", "N1 N2", "N3-1 N4-0 N5-0"],
    ["2", "U2", "11/15/2019 9:00:00 AM", "", "N1-0 N2-1"],
    ["3", "U1", "11/14/2019 11:30:05 PM", "N1 N2", "N4-1 N5-1"],
    ["4", "U1", "11/16/2019 12:00:00 PM", "N1 N2", "N5-1"],
]


def write_tsv(path: Path, rows: list[list[str]]) -> Path:
    path.write_bytes(("".join("\t".join(r) + "\n" for r in rows)).encode("utf-8"))
    return path


def make(folder: Path, news: list[list[str]] | None = None, behaviors: list[list[str]] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_tsv(folder / "news.tsv", NEWS if news is None else news)
    write_tsv(folder / "behaviors.tsv", BEHAVIORS if behaviors is None else behaviors)
    return folder


@pytest.fixture
def dataset(tmp_path: Path) -> Dataset:
    return load_mind(make(tmp_path / "MINDsmall_train"))


def test_items(dataset: Dataset) -> None:
    assert dataset.name == "mind-MINDsmall_train"
    assert dataset.items.columns == ["item_id", "title", "description", "category", "subcategory"]
    first = dataset.items.row(0, named=True)
    assert first == {
        "item_id": "N1",
        "title": 'Brady\'s "last" game',  # bare quotes survive: MIND is not quoted CSV
        "description": "The quarterback retires.",
        "category": "sports",
        "subcategory": "football_nfl",
    }
    assert dataset.text_template == MIND_TEMPLATE
    texts = dataset.item_text()["text"].to_list()
    assert texts[0] == 'Brady\'s "last" game | sports | The quarterback retires.'
    assert texts[1] == "Storm hits coast | news"  # empty abstract: no dangling separator


def test_impressions(dataset: Dataset) -> None:
    imp = dataset.impressions
    assert imp is not None
    assert imp.columns == ["request_id", "user_id", "ts", "item_id", "position", "clicked", "propensity"]
    first = imp.filter(pl.col("request_id") == "1").sort("position")
    assert first["item_id"].to_list() == ["N3", "N4", "N5"]
    assert first["position"].to_list() == [0, 1, 2]
    assert first["clicked"].to_list() == [True, False, False]
    assert first["propensity"].null_count() == 3
    assert first["ts"][0] == datetime(2019, 11, 15, 8, 55, 22, tzinfo=UTC)
    assert imp.height == 3 + 2 + 2 + 1
    assert imp["position"].dtype == pl.Int32
    pm = imp.filter(pl.col("request_id") == "3")["ts"][0]
    assert pm == datetime(2019, 11, 14, 23, 30, 5, tzinfo=UTC)  # 11:30:05 PM


def test_clicks_and_history_interactions(dataset: Dataset) -> None:
    inter = dataset.interactions
    clicks = inter.filter(pl.col("event") == "click")
    assert sorted(zip(clicks["user_id"], clicks["item_id"], strict=True)) == [
        ("U1", "N3"),
        ("U1", "N4"),
        ("U1", "N5"),
        ("U1", "N5"),
        ("U2", "N2"),
    ]
    history = inter.filter(pl.col("event") == "history")
    # U1's history once (not once per row), timed just before U1's earliest row (row 3, 11:30:05 PM).
    assert history["user_id"].to_list() == ["U1", "U1"]
    assert history["item_id"].to_list() == ["N1", "N2"]
    first_seen = datetime(2019, 11, 14, 23, 30, 5, tzinfo=UTC)
    assert history["ts"].to_list() == [first_seen - timedelta(seconds=2), first_seen - timedelta(seconds=1)]
    assert inter["weight"].to_list() == [1.0] * inter.height
    assert dataset.notes["history_interactions"] == 2
    assert dataset.notes["click_interactions"] == 5


def test_split_puts_history_first(dataset: Dataset) -> None:
    split = leave_last_out(dataset.interactions)
    test = split.test.filter(pl.col("user_id") == "U1").row(0, named=True)
    assert test["item_id"] == "N5" and test["ts"] == datetime(2019, 11, 16, 12, tzinfo=UTC)
    train_u1 = split.train.filter(pl.col("user_id") == "U1")
    assert train_u1["item_id"].to_list()[:2] == ["N1", "N2"]  # history precedes every click


def test_save_and_load_round_trip(dataset: Dataset, tmp_path: Path) -> None:
    again = Dataset.load(dataset.save(tmp_path / "ds"))
    assert again.impressions is not None and dataset.impressions is not None
    assert again.impressions.equals(dataset.impressions)
    assert again.interactions.equals(dataset.interactions)


def test_unlabeled_test_file_has_no_impressions(tmp_path: Path) -> None:
    rows = [["1", "U1", "11/15/2019 8:55:22 AM", "N1 N2", "N3 N4"]]
    loaded = load_mind(make(tmp_path, behaviors=rows))
    assert loaded.impressions is None
    assert "unlabeled" in loaded.notes
    assert loaded.interactions["event"].to_list() == ["history", "history"]


def test_unknown_news_in_history_is_an_error_or_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [*BEHAVIORS[:2], ["3", "U3", "11/15/2019 9:10:00 AM", "N1 N404", "N1-1"]]
    folder = make(tmp_path, behaviors=rows)
    with pytest.raises(DataError) as info:
        load_mind(folder)
    err = info.value
    assert err.file == str(folder / "behaviors.tsv")
    assert err.column == "history" and err.row == 3
    assert "'N404'" in str(err)
    with caplog.at_level(logging.WARNING, logger="recsys.data.mind"):
        loaded = load_mind(folder, unknown_items="drop")
    assert loaded.notes["dropped_unknown_items"] == 1
    assert "N404" not in loaded.interactions["item_id"].to_list()
    assert any("dropped 1" in r.getMessage() for r in caplog.records)


def test_unknown_news_in_impressions(tmp_path: Path) -> None:
    rows = [BEHAVIORS[0], ["2", "U2", "11/15/2019 9:00:00 AM", "", "N1-0 N999-1"]]
    folder = make(tmp_path, behaviors=rows)
    with pytest.raises(DataError) as info:
        load_mind(folder)
    assert info.value.column == "impressions" and info.value.row == 2


@pytest.mark.parametrize(
    ("row", "column", "needle"),
    [
        (["2", "U2", "15/11/2019 9:00", "", "N1-0"], "time", "unparsable time '15/11/2019 9:00'"),
        (["2", "", "11/15/2019 9:00:00 AM", "", "N1-0"], "user_id", "missing user_id"),
        (["2", "U2", "11/15/2019 9:00:00 AM", "", "N1-0 N2-x"], "impressions", "'N2-x'"),
        (["2", "U2", "11/15/2019 9:00:00 AM", "", "N1-0 N2"], "impressions", "no click label"),
        (["2", "U2", "11/15/2019 9:00:00 AM", "", "N1-0 N1-1"], "impressions", "shown twice"),
        (["1", "U2", "11/15/2019 9:00:00 AM", "", "N1-0"], "request_id", "duplicate key"),
    ],
    ids=["time", "user", "label", "mixed-labels", "repeat", "dup-impression-id"],
)
def test_bad_behavior_rows(tmp_path: Path, row: list[str], column: str, needle: str) -> None:
    folder = make(tmp_path, behaviors=[BEHAVIORS[0], row])
    with pytest.raises(DataError) as info:
        load_mind(folder)
    assert info.value.file == str(folder / "behaviors.tsv")
    assert info.value.column == column and info.value.row == 2
    assert needle in str(info.value)


def test_news_errors(tmp_path: Path) -> None:
    folder = make(tmp_path, news=[*NEWS, NEWS[2]])
    with pytest.raises(DataError) as info:
        load_mind(folder)
    assert info.value.file == str(folder / "news.tsv")
    assert info.value.column == "item_id" and info.value.row == 6

    latin = ("\t".join(NEWS[0]) + "\n" + "N2\tnews\tnewsus\tCaf\xe9 opens\t\tu\t[]\t[]\n").encode("latin-1")
    (folder / "news.tsv").write_bytes(latin)
    with pytest.raises(DataError) as info:
        load_mind(folder)
    assert info.value.column == "title" and info.value.row == 2
    assert "not UTF-8" in str(info.value)

    write_tsv(folder / "news.tsv", [row[:5] for row in NEWS])
    with pytest.raises(DataError) as info:
        load_mind(folder)
    assert "expected 8 tab-separated fields" in str(info.value)

    (folder / "news.tsv").write_bytes(b"")
    with pytest.raises(DataError) as info:
        load_mind(folder)
    assert "empty" in str(info.value)


def test_missing_folder_or_file(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        load_mind(tmp_path / "nope")
    folder = make(tmp_path)
    (folder / "behaviors.tsv").unlink()
    with pytest.raises(DataError) as info:
        load_mind(folder)
    assert "behaviors.tsv" in str(info.value)
