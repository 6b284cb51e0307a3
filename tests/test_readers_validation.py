"""Readers and contract validation: one test per error class, plus the formats that must just work.

Every error test checks the three things a user needs to fix the file: which file, which column
and which (first) row. Rows are 1-based data rows; in a CSV with a header, row N is on line N + 1.
"""

from __future__ import annotations

import gzip
import logging
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from recsys.data import readers
from recsys.data.contracts import (
    parse_timestamps,
    validate_impressions,
    validate_interactions,
    validate_items,
)
from recsys.data.dataset import Dataset
from recsys.data.generic import load_generic
from recsys.data.readers import check_utf8, parse_mapping, read_raw, read_table
from recsys.data.text import render_item_text, template_fields
from recsys.errors import ConfigError, DataError

UTC = timezone.utc


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def assert_located(err: DataError, file: Path | str | None, column: str | None, row: int | None) -> None:
    """The error's fields and its one-line message both name the place."""
    text = str(err)
    if file is not None:
        assert err.file == str(file)
        assert str(file) in text
    if column is not None:
        assert err.column == column
        assert f"column '{column}'" in text
    if row is not None:
        assert err.row == row
        assert f"row {row}" in text
    assert "\n" not in text


ITEMS_CSV = "item_id,title,genres\n1,Heat (1995),Action\n2,Up (2009),Animation\n3,Alien (1979),Horror\n"


@pytest.fixture
def items_csv(tmp_path: Path) -> Path:
    return write(tmp_path, "items.csv", ITEMS_CSV)


@pytest.fixture
def items(items_csv: Path) -> pl.DataFrame:
    return read_table(items_csv, "items")[0]


# --- error classes ---------------------------------------------------------------------------


def test_missing_required_column_names_file_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "inter.csv", "user_id,item_id\nu1,1\n")
    with pytest.raises(DataError) as info:
        read_table(path, "interactions")
    assert_located(info.value, path, "ts", None)
    assert "missing required column" in str(info.value)
    assert "['user_id', 'item_id']" in str(info.value)  # what was found, to spot a misspelling


def test_missing_item_id_column_in_items(tmp_path: Path) -> None:
    path = write(tmp_path, "items.csv", "movieId,title\n1,Heat\n")
    with pytest.raises(DataError) as info:
        read_table(path, "items")
    assert_located(info.value, path, "item_id", None)
    assert "--map" in str(info.value)


def test_null_item_id_names_first_row_and_count(tmp_path: Path) -> None:
    path = write(tmp_path, "items.csv", "item_id,title\n1,Heat\n,Up\n  ,Alien\n4,Jaws\n")
    with pytest.raises(DataError) as info:
        read_table(path, "items")
    assert_located(info.value, path, "item_id", 2)
    assert info.value.count == 2
    assert "2 rows affected" in str(info.value)


def test_null_user_id_in_interactions(tmp_path: Path, items: pl.DataFrame) -> None:
    path = write(tmp_path, "inter.csv", "user_id,item_id,ts\nu1,1,1700000000\nu2,2,1700000001\n,3,1700000002\n")
    with pytest.raises(DataError) as info:
        read_table(path, "interactions", items=items)
    assert_located(info.value, path, "user_id", 3)
    assert "null or empty id" in str(info.value)


def test_duplicate_item_id_names_the_repeat_and_the_first(tmp_path: Path) -> None:
    path = write(tmp_path, "items.csv", "item_id,title\n7,Heat\n8,Up\n7,Heat again\n8,Up again\n")
    with pytest.raises(DataError) as info:
        read_table(path, "items")
    assert_located(info.value, path, "item_id", 3)
    assert "item_id='7'" in str(info.value)
    assert "first seen on row 1" in str(info.value)
    assert info.value.count == 2


def test_duplicate_impression_key(tmp_path: Path, items: pl.DataFrame) -> None:
    path = write(
        tmp_path,
        "imp.csv",
        "request_id,user_id,ts,item_id,position,clicked\n"
        "r1,u1,2020-01-01T00:00:00Z,1,0,1\n"
        "r1,u1,2020-01-01T00:00:00Z,2,1,0\n"
        "r2,u1,2020-01-02T00:00:00Z,1,0,0\n"
        "r1,u1,2020-01-01T00:00:00Z,2,2,1\n",
    )
    with pytest.raises(DataError) as info:
        read_table(path, "impressions", items=items)
    assert_located(info.value, path, "item_id", 4)
    assert "request_id='r1', item_id='2'" in str(info.value)
    assert "first seen on row 2" in str(info.value)


def test_unparsable_timestamp(tmp_path: Path, items: pl.DataFrame) -> None:
    path = write(
        tmp_path,
        "inter.csv",
        "user_id,item_id,ts\nu1,1,2020-01-01T10:00:00\nu1,2,2020-01-02\nu1,3,yesterday\nu2,3,2020-13-45\n",
    )
    with pytest.raises(DataError) as info:
        read_table(path, "interactions", items=items)
    assert_located(info.value, path, "ts", 3)
    assert "'yesterday'" in str(info.value)
    assert info.value.count == 2


def test_non_number_in_a_unix_time_column(tmp_path: Path, items: pl.DataFrame) -> None:
    path = write(tmp_path, "inter.csv", "user_id,item_id,ts\nu1,1,1700000000\nu1,2,soon\n")
    with pytest.raises(DataError) as info:
        read_table(path, "interactions", items=items)
    assert_located(info.value, path, "ts", 2)
    assert "'soon'" in str(info.value)


def test_missing_timestamp(tmp_path: Path, items: pl.DataFrame) -> None:
    path = write(tmp_path, "inter.csv", "user_id,item_id,ts\nu1,1,1700000000\nu1,2,\n")
    with pytest.raises(DataError) as info:
        read_table(path, "interactions", items=items)
    assert_located(info.value, path, "ts", 2)
    assert "missing timestamp" in str(info.value)


INTER_WITH_UNKNOWN = "user_id,item_id,ts\nu1,1,1700000000\nu1,99,1700000001\nu2,2,1700000002\nu2,98,1700000003\n"


def test_interaction_on_unknown_item_is_an_error(tmp_path: Path, items: pl.DataFrame) -> None:
    path = write(tmp_path, "inter.csv", INTER_WITH_UNKNOWN)
    with pytest.raises(DataError) as info:
        read_table(path, "interactions", items=items)
    assert_located(info.value, path, "item_id", 2)
    assert "'99'" in str(info.value)
    assert info.value.count == 2
    assert "--drop-unknown-items" in str(info.value)


def test_interaction_on_unknown_item_dropped_by_rule_with_count(tmp_path: Path, items: pl.DataFrame) -> None:
    path = write(tmp_path, "inter.csv", INTER_WITH_UNKNOWN)
    table, dropped = read_table(path, "interactions", items=items, unknown_items="drop")
    assert dropped == 2
    assert table["item_id"].to_list() == ["1", "2"]


def test_generic_drop_rule_counts_and_warns(tmp_path: Path, items_csv: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "inter.csv", INTER_WITH_UNKNOWN)
    with caplog.at_level(logging.WARNING, logger="recsys.data.generic"):
        dataset = load_generic(items_csv, path, unknown_items="drop")
    assert dataset.notes["dropped_unknown_items"] == 2
    assert dataset.interactions.height == 2
    assert any("dropped 2 rows" in r.getMessage() for r in caplog.records)


def test_impression_on_unknown_item(tmp_path: Path, items_csv: Path) -> None:
    inter = write(tmp_path, "inter.csv", "user_id,item_id,ts\nu1,1,1700000000\n")
    imp = write(
        tmp_path,
        "imp.csv",
        "request_id,user_id,ts,item_id,position,clicked\nr1,u1,1700000000,1,0,1\nr1,u1,1700000000,55,1,0\n",
    )
    with pytest.raises(DataError) as info:
        load_generic(items_csv, inter, imp)
    assert_located(info.value, imp, "item_id", 2)
    dataset = load_generic(items_csv, inter, imp, unknown_items="drop")
    assert dataset.impressions is not None and dataset.impressions.height == 1
    assert dataset.notes["dropped_unknown_items"] == 1


def test_latin1_bytes_name_file_line_and_column(tmp_path: Path) -> None:
    content = 'item_id,title,genres\n1,Heat,Action\n2,"Amélie, Le fabuleux",Comedy\n'.encode("latin-1")
    path = write(tmp_path, "items.csv", content)
    with pytest.raises(DataError) as info:
        read_table(path, "items")
    assert_located(info.value, path, "title", 2)
    assert "not UTF-8" in str(info.value)
    assert "line 3" in str(info.value)
    assert "0xe9" in str(info.value)


def test_latin1_after_a_large_prefix_still_finds_the_line(tmp_path: Path) -> None:
    """The UTF-8 check reads in chunks; the line count must carry across them."""
    body = "".join(f"{i},title {i}\n" for i in range(1, 2001))
    content = ("item_id,title\n" + body).encode() + b"2001,Caf\xe9\n"
    path = write(tmp_path, "items.csv", content)
    original = readers._CHUNK
    readers._CHUNK = 1000  # many chunks, boundaries inside lines
    try:
        with pytest.raises(DataError) as info:
            check_utf8(path, ",")
    finally:
        readers._CHUNK = original
    assert_located(info.value, path, "title", 2001)
    assert "line 2002" in str(info.value)


def test_latin1_in_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, "items.jsonl", b'{"item_id": "1", "title": "ok"}\n{"item_id": "2", "title": "Caf\xe9"}\n')
    with pytest.raises(DataError) as info:
        read_table(path, "items")
    assert_located(info.value, path, None, 2)  # no header in JSON lines: row == line
    assert "line 2" in str(info.value)


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "items.csv", b"")
    with pytest.raises(DataError) as info:
        read_table(path, "items")
    assert_located(info.value, path, None, None)
    assert "empty" in str(info.value)


def test_header_only_file(tmp_path: Path) -> None:
    path = write(tmp_path, "inter.csv", "user_id,item_id,ts\r\n")
    with pytest.raises(DataError) as info:
        read_raw(path)
    assert_located(info.value, path, None, None)
    assert "no data rows" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        read_raw(tmp_path / "nope.csv")
    assert "file not found" in str(info.value)
    assert "nope.csv" in str(info.value)


def test_semicolon_file_read_as_comma(tmp_path: Path) -> None:
    path = write(tmp_path, "items.csv", "item_id;title;genres\n1;Matrix, The (1999);Action\n2;Up;Animation\n")
    with pytest.raises(DataError) as info:
        read_table(path, "items")
    assert_located(info.value, path, None, None)
    assert "--delimiter ';'" in str(info.value)
    table, _ = read_table(path, "items", delimiter=";")
    assert table["title"].to_list() == ["Matrix, The (1999)", "Up"]


def test_tab_file_read_as_comma(tmp_path: Path) -> None:
    path = write(tmp_path, "items.csv", "item_id\ttitle\n1\tHeat\n")
    with pytest.raises(DataError) as info:
        read_raw(path)
    assert "--delimiter '\\t'" in str(info.value)


def test_ragged_line_names_its_row(tmp_path: Path) -> None:
    path = write(tmp_path, "items.csv", "item_id,title\n1,Heat\n2,Matrix, The\n3,Up\n")
    with pytest.raises(DataError) as info:
        read_raw(path)
    assert_located(info.value, path, None, 2)
    assert "line 3 has 3 fields but the header has 2" in str(info.value)


def test_repeated_header_name(tmp_path: Path) -> None:
    path = write(tmp_path, "items.csv", "item_id,title,title\n1,a,b\n")
    with pytest.raises(DataError) as info:
        read_raw(path)
    assert_located(info.value, path, "title", None)


@pytest.mark.parametrize("pair", ["movieId", "movieId=", "=item_id", "a=b=c", ""])
def test_bad_mapping_syntax(pair: str) -> None:
    with pytest.raises(DataError) as info:
        parse_mapping([pair])
    assert "SOURCE=TARGET" in str(info.value)
    assert repr(pair) in str(info.value)


def test_mapping_parses_and_maps(tmp_path: Path) -> None:
    path = write(tmp_path, "movies.csv", "movieId,title\n1,Heat\n")
    mapping = parse_mapping(["movieId=item_id", " title = name "])
    assert mapping == {"movieId": "item_id", "title": "name"}
    table, _ = read_table(path, "items", mapping=mapping)
    assert table.columns == ["item_id", "name"]


def test_mapping_naming_an_absent_column(tmp_path: Path) -> None:
    path = write(tmp_path, "items.csv", "movieId,title\n1,Heat\n")
    with pytest.raises(DataError) as info:
        read_table(path, "items", mapping={"movie_id": "item_id"})
    assert_located(info.value, path, "movie_id", None)
    assert "['movieId', 'title']" in str(info.value)


def test_mapping_onto_an_existing_column(tmp_path: Path) -> None:
    path = write(tmp_path, "items.csv", "movieId,item_id,title\n1,a,Heat\n")
    with pytest.raises(DataError) as info:
        read_table(path, "items", mapping={"movieId": "item_id"})
    assert_located(info.value, path, "item_id", None)
    assert "two columns named 'item_id'" in str(info.value)


def test_flat_mapping_absent_from_every_file(tmp_path: Path, items_csv: Path) -> None:
    inter = write(tmp_path, "inter.csv", "user_id,item_id,ts\nu1,1,1700000000\n")
    with pytest.raises(DataError) as info:
        load_generic(items_csv, inter, mapping={"userid": "user_id"})
    assert info.value.column == "userid"
    assert str(items_csv) in str(info.value) and str(inter) in str(info.value)


def test_per_file_mapping_must_name_columns_of_that_file(tmp_path: Path, items_csv: Path) -> None:
    inter = write(tmp_path, "inter.csv", "uid,item_id,ts\nu1,1,1700000000\n")
    dataset = load_generic(items_csv, inter, mapping={"interactions": {"uid": "user_id"}})
    assert dataset.interactions["user_id"].to_list() == ["u1"]
    with pytest.raises(DataError) as info:
        load_generic(items_csv, inter, mapping={"items": {"uid": "user_id"}})
    assert_located(info.value, items_csv, "uid", None)
    with pytest.raises(ConfigError):
        load_generic(items_csv, inter, mapping={"items": {"a": "b"}, "movieId": "item_id"})


def test_bad_number_in_weight(tmp_path: Path, items: pl.DataFrame) -> None:
    path = write(tmp_path, "inter.csv", "user_id,item_id,ts,rating\nu1,1,1700000000,4.5\nu1,2,1700000001,five\n")
    with pytest.raises(DataError) as info:
        read_table(path, "interactions", items=items)
    assert_located(info.value, path, "weight", 2)  # `rating` becomes `weight` by rule
    assert "'five'" in str(info.value)


def test_bad_impression_fields(tmp_path: Path) -> None:
    header = "request_id,user_id,ts,item_id,position,clicked,propensity\n"
    cases = {
        "position": "r1,u1,1700000000,1,first,1,0.5\n",
        "clicked": "r1,u1,1700000000,1,0,maybe,0.5\n",
        "propensity": "r1,u1,1700000000,1,0,1,1.5\n",
    }
    for column, line in cases.items():
        path = write(tmp_path, f"imp_{column}.csv", header + "r0,u1,1700000000,2,0,0,0.5\n" + line)
        with pytest.raises(DataError) as info:
            read_table(path, "impressions")
        assert_located(info.value, path, column, 2)


def test_invalid_json_line(tmp_path: Path) -> None:
    path = write(tmp_path, "items.jsonl", '{"item_id": "1"}\n{"item_id": "2", \n{"item_id": "3"}\n')
    with pytest.raises(DataError) as info:
        read_raw(path)
    assert_located(info.value, path, None, 2)
    assert "line 2 is not valid JSON" in str(info.value)


def test_broken_parquet(tmp_path: Path) -> None:
    path = write(tmp_path, "items.parquet", b"PAR1 this is not parquet")
    with pytest.raises(DataError) as info:
        read_raw(path)
    assert_located(info.value, path, None, None)
    assert "parquet" in str(info.value)


def test_bad_template_is_a_config_error() -> None:
    frame = pl.DataFrame({"item_id": ["1"], "title": ["Heat"]})
    with pytest.raises(ConfigError):
        template_fields("{title")
    with pytest.raises(ConfigError):
        render_item_text(frame, "{nothing} | {here}")
    with pytest.raises(ConfigError):
        render_item_text(frame, "no fields")


def test_generic_template_naming_no_item_column(tmp_path: Path, items_csv: Path) -> None:
    inter = write(tmp_path, "inter.csv", "user_id,item_id,ts\nu1,1,1700000000\n")
    with pytest.raises(ConfigError) as info:
        load_generic(items_csv, inter, text_template="{headline}")
    assert str(items_csv) in str(info.value)


# --- inputs that must just work ---------------------------------------------------------------


def test_crlf_csv_with_quoted_commas_and_quotes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "movies.csv",
        'movieId,title,genres\r\n1,"Matrix, The (1999)",Action|Sci-Fi\r\n'
        '7789,"11\'09""01 - September 11 (2002)",Drama\r\n3,Up,Animation\r\n',
    )
    table, _ = read_table(path, "items", mapping={"movieId": "item_id"})
    assert table["title"].to_list() == ["Matrix, The (1999)", "11'09\"01 - September 11 (2002)", "Up"]
    assert table["genres"].to_list() == ["Action|Sci-Fi", "Drama", "Animation"]
    for column in table.columns:
        assert not table[column].str.contains("\r").any(), column
    assert "genres" in table.columns  # no '\r' left on the last header name either


def test_utf8_bom_and_trailing_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "items.csv", b"\xef\xbb\xbfitem_id,title\n1,Caf\xc3\xa9\n\n\n")
    table, _ = read_table(path, "items")
    assert table.columns == ["item_id", "title"]
    assert table.to_dicts() == [{"item_id": "1", "title": "Café"}]


def test_zero_padded_ids_keep_their_zeros(tmp_path: Path) -> None:
    items_path = write(tmp_path, "items.csv", "item_id,title\n007,Bond\n7,Seven\n0042,Answer\n")
    inter = write(tmp_path, "inter.csv", "user_id,item_id,ts\n0001,007,1700000000\n1,7,1700000001\n 01 ,0042,1\n")
    dataset = load_generic(items_path, inter)
    assert dataset.items["item_id"].to_list() == ["007", "7", "0042"]
    assert dataset.interactions["item_id"].to_list() == ["007", "7", "0042"]
    assert dataset.interactions["user_id"].to_list() == ["0001", "1", "01"]


def test_jsonl_input_with_int_ids(tmp_path: Path) -> None:
    items_path = write(
        tmp_path,
        "items.jsonl",
        '{"item_id": 1, "title": "Heat", "year": 1995}\n\n{"item_id": 2, "title": "Up"}\n',
    )
    inter = write(
        tmp_path,
        "inter.jsonl",
        '{"user_id": 10, "item_id": 1, "ts": "2020-01-01T00:00:00Z", "extra": [1]}\n'
        '{"user_id": 10, "item_id": 2, "ts": "2020-01-02T00:00:00+01:00"}\n',
    )
    dataset = load_generic(items_path, inter, text_template="{title} ({year})")
    assert dataset.items["item_id"].to_list() == ["1", "2"]
    assert dataset.items["year"].dtype.is_integer()  # numeric extra columns keep their type
    assert dataset.interactions.columns == ["user_id", "item_id", "ts"]  # unknown 'extra' ignored by rule
    assert dataset.interactions["user_id"].to_list() == ["10", "10"]
    assert dataset.interactions["ts"].to_list() == [
        datetime(2020, 1, 1, tzinfo=UTC),
        datetime(2020, 1, 1, 23, tzinfo=UTC),
    ]
    assert dataset.item_text()["text"].to_list() == ["Heat (1995)", "Up"]


def test_json_array_input(tmp_path: Path) -> None:
    path = write(tmp_path, "items.json", '[{"item_id": "a", "title": "A"}, {"item_id": "b", "title": "B"}]')
    assert read_table(path, "items")[0]["item_id"].to_list() == ["a", "b"]


def test_parquet_input_with_typed_columns(tmp_path: Path) -> None:
    items_path = tmp_path / "items.parquet"
    pl.DataFrame({"item_id": [1, 2], "title": ["Heat", "Up"], "category": [3, 4]}).write_parquet(items_path)
    inter_path = tmp_path / "inter.parquet"
    pl.DataFrame(
        {
            "user_id": [5, 5],
            "item_id": [1.0, 2.0],  # ids that went through a float column still match
            "ts": [datetime(2020, 1, 1, 12), datetime(2020, 1, 2, 12)],  # naive: taken as UTC
            "weight": [1, 2],
        }
    ).write_parquet(inter_path)
    dataset = load_generic(items_path, inter_path)
    assert dataset.items["category"].to_list() == ["3", "4"]  # a known text column becomes text
    assert dataset.interactions["item_id"].to_list() == ["1", "2"]
    assert dataset.interactions["ts"].dtype == pl.Datetime("us", "UTC")
    assert dataset.interactions["ts"][0] == datetime(2020, 1, 1, 12, tzinfo=UTC)
    assert dataset.interactions["weight"].dtype == pl.Float64


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            ["1700000000", "1700000060"],
            [datetime(2023, 11, 14, 22, 13, 20), datetime(2023, 11, 14, 22, 14, 20)],
        ),
        (
            ["1700000000000", "1700000000500"],
            [datetime(2023, 11, 14, 22, 13, 20), datetime(2023, 11, 14, 22, 13, 20, 500000)],
        ),
        (
            ["2020-01-01T10:00:00Z", "2020-01-01T10:00:00+02:00"],
            [datetime(2020, 1, 1, 10), datetime(2020, 1, 1, 8)],
        ),
        (
            ["2020-01-01 10:00:00-0530", "2020-01-01T10:00:00.250+00:00"],
            [datetime(2020, 1, 1, 15, 30), datetime(2020, 1, 1, 10, 0, 0, 250000)],
        ),
        (["2020-01-01T10:00:00", "2020-01-01 10:00"], [datetime(2020, 1, 1, 10), datetime(2020, 1, 1, 10)]),
        (["2020-01-01", "2020-01-01T10:00:00Z"], [datetime(2020, 1, 1), datetime(2020, 1, 1, 10)]),
    ],
    ids=["unix-s", "unix-ms", "iso-offset", "iso-space-offset", "iso-naive", "mixed"],
)
def test_timestamp_formats(values: list[str], expected: list[datetime]) -> None:
    parsed = parse_timestamps(pl.DataFrame({"ts": values}), "ts", "x")["ts"]
    assert parsed.dtype == pl.Datetime("us", "UTC")
    assert parsed.to_list() == [e.replace(tzinfo=UTC) for e in expected]


def test_timestamp_typed_inputs() -> None:
    seconds = parse_timestamps(pl.DataFrame({"ts": [0, 86_400]}), "ts", "x")["ts"]
    assert seconds.to_list() == [datetime(1970, 1, 1, tzinfo=UTC), datetime(1970, 1, 2, tzinfo=UTC)]
    zoned = pl.DataFrame({"ts": [datetime(2020, 6, 1, 12)]}).with_columns(
        pl.col("ts").dt.replace_time_zone("Europe/Berlin")
    )
    assert parse_timestamps(zoned, "ts", "x")["ts"].to_list() == [datetime(2020, 6, 1, 10, tzinfo=UTC)]
    dates = pl.DataFrame({"ts": [datetime(2020, 6, 1).date()]})
    assert parse_timestamps(dates, "ts", "x")["ts"].to_list() == [datetime(2020, 6, 1, tzinfo=UTC)]


def test_items_created_at_may_have_gaps(tmp_path: Path) -> None:
    path = write(tmp_path, "items.csv", "item_id,title,created_at\n1,A,2020-01-01\n2,B,\n")
    table, _ = read_table(path, "items")
    assert table["created_at"].dtype == pl.Datetime("us", "UTC")
    assert table["created_at"].to_list() == [datetime(2020, 1, 1, tzinfo=UTC), None]


def test_interactions_keep_event_and_weight(tmp_path: Path, items: pl.DataFrame) -> None:
    path = write(tmp_path, "inter.csv", "user_id,item_id,ts,event,weight,notes\nu1,1,1,view, 2 ,x\n")
    table, _ = read_table(path, "interactions", items=items)
    assert table.columns == ["user_id", "item_id", "ts", "event", "weight"]
    assert table["weight"].to_list() == [2.0]


# --- item text ----------------------------------------------------------------------------


def test_template_rendering_drops_empty_fields_without_dangling_separators() -> None:
    frame = pl.DataFrame(
        {
            "item_id": ["1", "2", "3", "4", "5"],
            "title": ["Heat", None, "Up", "  ", "Line\r\nbreak"],
            "genres": ["", "Comedy", None, "Drama", "x"],
            "tags": [None, "fun", "balloons", "", "see https://a.b/c -- ok"],
        }
    )
    texts = render_item_text(frame, "{title} | {genres} | {tags}").to_list()
    assert texts == [
        "Heat",
        "Comedy | fun",
        "Up | balloons",
        "Drama",
        "Line break | x | see https://a.b/c -- ok",
    ]


def test_template_with_labels_brackets_and_absent_columns() -> None:
    frame = pl.DataFrame({"item_id": ["1", "2"], "title": ["Heat", None], "year": [1995, None]})
    assert render_item_text(frame, "{title} ({year}) | {genres}").to_list() == ["Heat (1995)", ""]
    frame = pl.DataFrame({"item_id": ["1", "2"], "title": [None, "Up"], "genres": ["Drama", None]})
    labelled = render_item_text(frame, "Title: {title}. Genres: {genres}.").to_list()
    assert labelled == ["Genres: Drama.", "Title: Up"]


def test_template_joins_list_columns() -> None:
    frame = pl.DataFrame({"item_id": ["1"], "title": ["Heat"], "tags": [["crime", "la"]]})
    assert render_item_text(frame, "{title} | {tags}").to_list() == ["Heat | crime, la"]


# --- whole datasets -----------------------------------------------------------------------


def test_dataset_round_trip(tmp_path: Path, items_csv: Path) -> None:
    inter = write(tmp_path, "inter.csv", "user_id,item_id,ts,weight\nu1,1,1700000000,4\nu1,2,1700000001,3.5\n")
    dataset = load_generic(items_csv, inter, name="tiny")
    folder = dataset.save(tmp_path / "out")
    again = Dataset.load(folder)
    assert again.name == "tiny"
    assert again.items.equals(dataset.items)
    assert again.interactions.equals(dataset.interactions)
    assert again.item_text()["text"].to_list() == [
        "Heat (1995) | Action",
        "Up (2009) | Animation",
        "Alien (1979) | Horror",
    ]


def test_dataset_load_refuses_a_folder_without_tables(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        Dataset.load(tmp_path)
    (tmp_path / "dataset.json").write_text("{}")
    with pytest.raises(DataError) as info:
        Dataset.load(tmp_path)
    assert "items.parquet" in str(info.value)


def test_validators_accept_already_canonical_frames() -> None:
    items = validate_items(pl.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"]}))
    inter, dropped = validate_interactions(
        pl.DataFrame({"user_id": ["u"], "item_id": ["a"], "ts": [datetime(2020, 1, 1, tzinfo=UTC)]}),
        items=items,
    )
    assert dropped == 0 and inter["ts"].dtype == pl.Datetime("us", "UTC")
    impressions = validate_impressions(
        pl.DataFrame(
            {
                "request_id": [1, 1],
                "user_id": ["u", "u"],
                "ts": [1_700_000_000, 1_700_000_000],
                "item_id": ["a", "b"],
                "position": [0, 1],
                "clicked": [True, False],
            }
        ),
        items=items,
    )
    assert impressions["position"].dtype == pl.Int32
    assert impressions["request_id"].to_list() == ["1", "1"]


def test_gzip_is_read_directly_and_zip_is_named_not_misread(tmp_path: Path) -> None:
    gz = write(tmp_path, "items.csv.gz", gzip.compress(ITEMS_CSV.encode()))
    assert read_raw(gz).equals(read_raw(write(tmp_path, "items.csv", ITEMS_CSV)))
    path = tmp_path / "items.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("items.csv", ITEMS_CSV)
    with pytest.raises(DataError) as info:
        read_raw(path)
    assert_located(info.value, path, None, None)
    assert "zip" in str(info.value)


def test_null_clicked_in_a_boolean_column() -> None:
    frame = pl.DataFrame(
        {
            "request_id": ["r", "r"],
            "user_id": ["u", "u"],
            "ts": [1, 1],
            "item_id": ["a", "b"],
            "position": [0, 1],
            "clicked": [True, None],
        }
    )
    with pytest.raises(DataError) as info:
        validate_impressions(frame, "imp.parquet")
    assert_located(info.value, "imp.parquet", "clicked", 2)


def test_unix_times_with_fractions_and_gaps_where_allowed() -> None:
    frame = pl.DataFrame({"ts": ["1700000000.5", None, "1700000001"]})
    parsed = parse_timestamps(frame, "ts", "x", allow_null=True)["ts"].to_list()
    assert parsed == [
        datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC),
        None,
        datetime(2023, 11, 14, 22, 13, 21, tzinfo=UTC),
    ]
    with pytest.raises(DataError) as info:
        parse_timestamps(frame, "ts", "x")
    assert_located(info.value, "x", "ts", 2)


def test_per_file_delimiters(tmp_path: Path) -> None:
    items_path = write(tmp_path, "items.csv", "item_id;title\n1;Matrix, The\n")
    inter = write(tmp_path, "inter.csv", "user_id,item_id,ts\nu1,1,1700000000\n")
    with pytest.raises(DataError) as info:
        load_generic(items_path, inter, delimiter=";")  # one delimiter cannot fit both files
    assert_located(info.value, inter, None, None)
    dataset = load_generic(items_path, inter, delimiter={"items": ";"})
    assert dataset.items["title"].to_list() == ["Matrix, The"]
