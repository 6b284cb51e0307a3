"""The canonical tables (items, interactions, impressions) and their validation.

Everything downstream (splits, encoders, ranking, the service) may assume a frame that passed
these functions: string ids, UTC timestamps, no null or duplicate keys, and interactions that
point at known items. Validation failures raise `DataError` naming file, column and first row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, cast

import polars as pl

from recsys.data.item_columns import canonical_lists, check_item_columns, is_scalar
from recsys.errors import DataError

UTC_TS = ("us", "UTC")

ITEM_ID = "item_id"
USER_ID = "user_id"
TS = "ts"

ITEMS_REQUIRED = (ITEM_ID,)
INTERACTIONS_REQUIRED = (USER_ID, ITEM_ID, TS)
IMPRESSIONS_REQUIRED = ("request_id", USER_ID, TS, ITEM_ID, "position", "clicked")

UnknownItemRule = Literal["error", "drop"]
DuplicateRule = Literal["first", "last", "error"]


def _first_row(mask: pl.Series) -> tuple[int, int]:
    """1-based index of the first True in `mask` and how many are True."""
    count = int(mask.sum())
    first = int(mask.arg_true()[0]) + 1 if count else 0
    return first, count


def require_columns(df: pl.DataFrame, required: tuple[str, ...], source: str) -> None:
    """Fail with the list of missing columns and the columns that were found."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"missing required column(s) {missing}; found {df.columns}. "
            "Map your column names with --map (e.g. --map movieId=item_id).",
            file=source,
            column=missing[0],
        )


def _as_string_id(df: pl.DataFrame, column: str, source: str) -> pl.DataFrame:
    col = df[column]
    if not is_scalar(col.dtype):
        raise DataError(
            f"ids must be one value per row, found {col.dtype}; map a single "
            "field with a dotted path (e.g. --map product.id=item_id)",
            file=source,
            column=column,
        )
    if col.dtype == pl.String:
        # " 12" and "12" are the same id (hand-written CSVs put spaces after commas); zeros stay.
        col = col.str.strip_chars()
        df = df.with_columns(col.alias(column))
    nulls = col.is_null()
    if col.dtype == pl.String:
        nulls = nulls | (col == "")
    if nulls.any():
        row, count = _first_row(nulls)
        raise DataError("null or empty id", file=source, column=column, row=row, count=count)
    if col.dtype.is_float():
        # 12.0 -> "12": ids read as floats (a CSV with a blank elsewhere) must match int ids.
        whole = (col == col.floor()).all()
        if whole:
            return df.with_columns(pl.col(column).cast(pl.Int64).cast(pl.String))
    return df.with_columns(pl.col(column).cast(pl.String))


def parse_timestamps(df: pl.DataFrame, column: str, source: str, allow_null: bool = False) -> pl.DataFrame:
    """Turn `column` into Datetime(us, UTC).

    Accepted: datetimes (naive ones are taken as UTC, zoned ones converted), dates (midnight UTC),
    numbers as Unix seconds (or milliseconds when the column's largest value is too large to be
    seconds: above 1e11, i.e. past the year 5138), and ISO-8601 strings: date only, ``T`` or space
    between date and time, optional fractional seconds, optional ``Z`` / ``+hh:mm`` / ``+hhmm``
    offset. The rule is per value, so one column may mix naive and offset strings. A numeric
    column is one whose first value is a number; any other value in it is then reported as bad.
    `allow_null` keeps nulls (for optional columns such as items' ``created_at``).
    """
    col = df[column]
    if col.null_count() and not allow_null:
        row, count = _first_row(col.is_null())
        raise DataError("missing timestamp", file=source, column=column, row=row, count=count)
    if isinstance(col.dtype, pl.Datetime):
        parsed = col.dt.replace_time_zone("UTC") if col.dtype.time_zone is None else col.dt.convert_time_zone("UTC")
        parsed = parsed.dt.cast_time_unit("us")
    elif col.dtype == pl.Date:
        parsed = col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    elif col.dtype.is_integer():
        micros = col.cast(pl.Int64)
        # Beyond 1e11 (the year 5138 as seconds) the values must be milliseconds.
        scale = 1_000 if (micros.abs().max() or 0) > 100_000_000_000 else 1_000_000
        micros = micros * scale
        parsed = micros.cast(pl.Datetime("us", "UTC"))
    elif col.dtype.is_float():
        seconds = col.cast(pl.Float64)
        bad = seconds.is_nan() | seconds.is_infinite()
        if bad.any():
            row, count = _first_row(bad)
            raise DataError(
                f"unparsable timestamp {seconds[row - 1]!r}", file=source, column=column, row=row, count=count
            )
        if (seconds.abs().max() or 0) > 1e11:
            seconds = seconds / 1000.0
        parsed = (seconds * 1_000_000).round().cast(pl.Int64).cast(pl.Datetime("us", "UTC"))
    elif col.dtype == pl.String:
        text = col.str.strip_chars()
        numeric = text.str.contains(r"^[+-]?\d+(\.\d+)?$")
        first = text.drop_nulls()
        if first.len() and numeric[int(text.is_not_null().arg_true()[0])]:
            bad = ~numeric & text.is_not_null()
            if bad.any():
                row, count = _first_row(bad.fill_null(False))
                raise DataError(
                    f"unparsable timestamp {text[row - 1]!r} in a column of Unix times",
                    file=source,
                    column=column,
                    row=row,
                    count=count,
                )
            as_int = text.cast(pl.Int64, strict=False)
            number = as_int if as_int.null_count() == text.null_count() else text.cast(pl.Float64)
            return parse_timestamps(df.with_columns(number.alias(column)), column, source, allow_null)
        parsed = _parse_iso(text)
        bad = parsed.is_null() & text.is_not_null()
        if bad.any():
            row, count = _first_row(bad)
            value = text[row - 1]
            raise DataError(
                f"unparsable timestamp {value!r} (expected ISO-8601 such as 2019-11-15T08:55:22Z, or Unix seconds)",
                file=source,
                column=column,
                row=row,
                count=count,
            )
    else:
        raise DataError(f"timestamps of type {col.dtype} are not supported", file=source, column=column)
    return df.with_columns(parsed.alias(column))


_ISO_ZONED = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")
_ISO_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")


def _parse_iso(text: pl.Series) -> pl.Series:
    """Each value by the first ISO-8601 layout that fits; nulls where none does."""
    normal = (
        text.str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T")
        .str.replace(r"\s*[Zz]$", "+00:00")
        .str.replace(r"(\d)\s+([+-]\d{2}:?\d{2})$", "${1}${2}")
    )
    frame = normal.to_frame("t")
    parsed = pl.Series("t", [None] * text.len(), dtype=pl.Datetime("us", "UTC"))
    for fmt in _ISO_ZONED + _ISO_NAIVE:
        attempt = frame.select(pl.col("t").str.to_datetime(format=fmt, strict=False, time_unit="us"))["t"]
        attempt = (
            attempt.dt.replace_time_zone("UTC")
            if cast("pl.Datetime", attempt.dtype).time_zone is None
            else attempt.dt.convert_time_zone("UTC")
        )
        parsed = parsed.fill_null(attempt)
    return parsed.alias(text.name)


def check_unique(df: pl.DataFrame, columns: list[str], source: str) -> None:
    """Fail on the first row whose key was already seen, naming the row where it was first seen."""
    repeat = ~df.select(pl.struct(columns).is_first_distinct()).to_series()
    if repeat.any():
        row, count = _first_row(repeat)
        values = {c: df[c][row - 1] for c in columns}
        key = ", ".join(f"{c}={v!r}" for c, v in values.items())
        match = pl.all_horizontal(pl.col(c) == v for c, v in values.items())
        first_seen = int(df.select(match.arg_max()).item()) + 1
        raise DataError(
            f"duplicate key ({key}), first seen on row {first_seen}",
            file=source,
            column=columns[-1],
            row=row,
            count=count,
        )


# Columns that are text by contract even when a parquet/JSONL file stores them as numbers.
TEXT_COLUMNS = ("title", "description", "genres", "tags", "category", "subcategory")


def validate_items(df: pl.DataFrame, source: str = "items", used: Iterable[str] = ()) -> pl.DataFrame:
    """Canonical items: unique non-null string `item_id`, string text columns, UTC `created_at`.

    Numeric, temporal and boolean extra columns (a MovieLens `year`, a price) keep their type:
    they are features, and the text template renders them as text anyway. The known text columns and any
    other non-numeric scalar column (categoricals, for instance) become strings. List columns (a list of
    categories) become lists of strings without empty elements; column types nothing can use are refused
    or dropped by the rules of `item_columns` (`used`: the columns the text template names).
    """
    require_columns(df, ITEMS_REQUIRED, source)
    df = check_item_columns(df, source, used)
    df = _as_string_id(df, ITEM_ID, source)
    check_unique(df, [ITEM_ID], source)
    if "created_at" in df.columns:
        df = parse_timestamps(df, "created_at", source, allow_null=True)

    def keeps_type(dtype: pl.DataType) -> bool:
        return dtype.is_numeric() or dtype.is_temporal() or dtype == pl.Boolean

    casts = [
        pl.col(c).cast(pl.String)
        for c in df.columns
        if c not in (ITEM_ID, "created_at")
        and df[c].dtype != pl.String
        and is_scalar(df[c].dtype)
        and (c in TEXT_COLUMNS or not keeps_type(df[c].dtype))
    ]
    df = df.with_columns(casts) if casts else df
    return canonical_lists(df)


def dedupe_items(df: pl.DataFrame, rule: DuplicateRule, source: str = "items") -> tuple[pl.DataFrame, int]:
    """Keep the first or last row of each repeated `item_id` (and count the rest), or leave them for
    `validate_items` to refuse (`"error"`). Scraped catalogs repeat products; which copy wins is the
    user's call, so it is an option, never a silent default."""
    if rule not in ("first", "last", "error"):
        raise DataError(f"unknown duplicate-items rule {rule!r}; use first, last or error", file=source)
    if rule == "error" or ITEM_ID not in df.columns:
        return df, 0
    df = _as_string_id(df, ITEM_ID, source)
    kept = df.unique(subset=[ITEM_ID], keep=rule, maintain_order=True)
    return kept, df.height - kept.height


def validate_interactions(
    df: pl.DataFrame,
    source: str = "interactions",
    items: pl.DataFrame | None = None,
    unknown_items: UnknownItemRule = "error",
) -> tuple[pl.DataFrame, int]:
    """Canonical interactions and the number of rows dropped by the unknown-item rule.

    `unknown_items="error"` (default) refuses interactions on items missing from the catalog;
    `"drop"` removes them and reports the count, for catalogs known to be partial.
    """
    require_columns(df, INTERACTIONS_REQUIRED, source)
    df = _as_string_id(df, USER_ID, source)
    df = _as_string_id(df, ITEM_ID, source)
    df = parse_timestamps(df, TS, source)
    if "weight" in df.columns:
        df = _as_float(df, "weight", source)
    if "event" in df.columns:
        df = df.with_columns(pl.col("event").cast(pl.String))
    dropped = 0
    if items is not None:
        known = df[ITEM_ID].is_in(items[ITEM_ID].implode())
        if not known.all():
            row, count = _first_row(~known)
            if unknown_items == "error":
                raise DataError(
                    f"item_id {df[ITEM_ID][row - 1]!r} is not in the items table "
                    "(use --drop-unknown-items to drop such rows)",
                    file=source,
                    column=ITEM_ID,
                    row=row,
                    count=count,
                )
            dropped = count
            df = df.filter(known)
    return df, dropped


def _as_float(df: pl.DataFrame, column: str, source: str) -> pl.DataFrame:
    original = df[column]
    if original.dtype == pl.String:
        original = original.str.strip_chars()
    cast = original.cast(pl.Float64, strict=False)
    bad = cast.is_null() & df[column].is_not_null()
    if bad.any():
        row, count = _first_row(bad)
        raise DataError(f"not a number: {df[column][row - 1]!r}", file=source, column=column, row=row, count=count)
    return df.with_columns(cast.alias(column))


def validate_impressions(
    df: pl.DataFrame, source: str = "impressions", items: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Canonical impressions: one row per shown item in a request, with its click and propensity."""
    require_columns(df, IMPRESSIONS_REQUIRED, source)
    for column in ("request_id", USER_ID, ITEM_ID):
        df = _as_string_id(df, column, source)
    df = parse_timestamps(df, TS, source)
    position = df["position"]
    if position.dtype == pl.String:
        position = position.str.strip_chars()
    position = position.cast(pl.Int32, strict=False)
    bad = position.is_null()
    if bad.any():
        row, count = _first_row(bad)
        raise DataError("position must be an integer", file=source, column="position", row=row, count=count)
    clicked = df["clicked"]
    if clicked.dtype != pl.Boolean:
        clicked = (
            clicked.cast(pl.String)
            .str.strip_chars()
            .str.to_lowercase()
            .replace_strict(
                {"1": True, "0": False, "true": True, "false": False}, default=None, return_dtype=pl.Boolean
            )
        )
    bad = clicked.is_null()
    if bad.any():
        row, count = _first_row(bad)
        raise DataError(
            "clicked must be a boolean (0/1/true/false)", file=source, column="clicked", row=row, count=count
        )
    df = df.with_columns(position.alias("position"), clicked.alias("clicked"))
    if "propensity" in df.columns:
        df = _as_float(df, "propensity", source)
        p = df["propensity"]
        bad = p.is_not_null() & ((p <= 0) | (p > 1))
        if bad.any():
            row, count = _first_row(bad)
            raise DataError("propensity must be in (0, 1]", file=source, column="propensity", row=row, count=count)
    check_unique(df, ["request_id", ITEM_ID], source)
    if items is not None:
        known = df[ITEM_ID].is_in(items[ITEM_ID].implode())
        if not known.all():
            row, count = _first_row(~known)
            raise DataError(
                f"item_id {df[ITEM_ID][row - 1]!r} is not in the items table",
                file=source,
                column=ITEM_ID,
                row=row,
                count=count,
            )
    return df
