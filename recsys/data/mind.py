"""MIND (Microsoft News Dataset) adapter: ``news.tsv`` + ``behaviors.tsv`` into a `Dataset`.

Both files are header-less, tab-separated UTF-8 without quoting (titles hold bare ``"``):

- news.tsv: ``news_id, category, subcategory, title, abstract, url, title_entities,
  abstract_entities`` → items ``item_id, title, description (= abstract), category,
  subcategory``; default template ``"{title} | {category} | {description}"``.
- behaviors.tsv: ``impression_id, user_id, time ("11/15/2019 8:55:22 AM"), history (space-separated
  news ids), impressions ("N123-1 N456-0")``.

Rules (the file gives no more than this, so these are choices, written down):

- Times carry no zone; they are taken as UTC.
- Impressions: one row per shown news item; ``request_id`` = impression_id, ``position`` = 0-based
  index in the impression list, ``clicked`` = the ``-1``/``-0`` label, ``propensity`` null (MIND
  logs no propensities). A test file without labels (``"N123 N456"``) yields no impressions and
  no clicks (``notes["unlabeled"]``); a file mixing labelled and unlabelled tokens is an error.
- Interactions: every click (``event="click"``, at the impression's time) plus the user's click
  history (``event="history"``). History entries carry no time: the history of the user's
  *earliest* behaviors row (by time, then file order) is used once per user, and its n entries
  get that row's time minus n, n-1, … 1 seconds, so they keep their order and all precede the
  user's first logged impression. Weight is 1.0 for both.
- News ids in histories or impressions that are missing from news.tsv are an error
  (`unknown_items="error"`, the default: the official files never have them) or dropped and
  counted (`"drop"`, for a news file cut down by hand).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import polars as pl

from recsys.data.contracts import check_unique, validate_impressions, validate_interactions, validate_items
from recsys.data.dataset import Dataset
from recsys.data.readers import check_utf8
from recsys.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MIND_TEMPLATE = "{title} | {category} | {description}"
NEWS_COLUMNS = (
    "news_id", "category", "subcategory", "title", "abstract", "url", "title_entities", "abstract_entities",
)  # fmt: skip
BEHAVIOR_COLUMNS = ("impression_id", "user_id", "time", "history", "impressions")
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
_LABEL = r"-([01])$"


def _read_tsv(path: Path, names: tuple[str, ...]) -> pl.DataFrame:
    """A header-less MIND TSV as text columns; rows are file lines (1-based) in errors."""
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    if path.stat().st_size == 0:
        raise DataError("file is empty (0 bytes)", file=str(path))
    check_utf8(path, "\t", header=False, names=list(names), quote_char=None)
    try:
        frame = pl.read_csv(
            path,
            separator="\t",
            has_header=False,
            infer_schema=False,
            quote_char=None,
        )
    except Exception as exc:
        raise DataError(
            f"cannot parse as MIND TSV ({len(names)} tab-separated fields: {', '.join(names)}): "
            f"{str(exc).splitlines()[0]}",
            file=str(path),
        ) from exc
    if frame.width != len(names):
        raise DataError(
            f"expected {len(names)} tab-separated fields ({', '.join(names)}), found {frame.width}",
            file=str(path),
        )
    if frame.height == 0:
        raise DataError("file has no data lines", file=str(path))
    return frame.rename(dict(zip(frame.columns, names, strict=True)))


def _fail_first(mask: pl.Series, message: str, path: Path, column: str, values: pl.Series) -> None:
    """Raise for the first True of `mask` (a 1-based file line is the row), if there is one."""
    if mask.any():
        row = int(mask.arg_true()[0]) + 1
        raise DataError(
            message.format(value=values[row - 1]),
            file=str(path),
            column=column,
            row=row,
            count=int(mask.sum()),
        )


def load_news(path: str | Path) -> pl.DataFrame:
    """Canonical items from a MIND news.tsv."""
    path = Path(path)
    news = _read_tsv(path, NEWS_COLUMNS)
    items = news.select(
        pl.col("news_id").alias("item_id"),
        pl.col("title").fill_null("").str.strip_chars(),
        pl.col("abstract").fill_null("").str.strip_chars().alias("description"),
        pl.col("category").str.strip_chars(),
        pl.col("subcategory").str.strip_chars(),
    )
    return validate_items(items, str(path))


def _behaviors(path: Path) -> pl.DataFrame:
    """behaviors.tsv with parsed times and checked ids, plus its file line as `_line`."""
    raw = _read_tsv(path, BEHAVIOR_COLUMNS).with_row_index("_line", offset=1)
    for column in ("impression_id", "user_id", "time"):
        text = raw[column].str.strip_chars()
        _fail_first(text.is_null() | (text == ""), f"missing {column}", path, column, text)
    ts = raw["time"].str.strip_chars().str.to_datetime(TIME_FORMAT, strict=False, time_unit="us")
    message = "unparsable time {value!r} (expected like 11/15/2019 8:55:22 AM)"
    _fail_first(ts.is_null(), message, path, "time", raw["time"])
    frame = raw.select(
        pl.col("_line").cast(pl.Int64),
        pl.col("impression_id").str.strip_chars().alias("request_id"),
        pl.col("user_id").str.strip_chars(),
        ts.dt.replace_time_zone("UTC").alias("ts"),
        pl.col("history").fill_null("").str.strip_chars(),
        pl.col("impressions").fill_null("").str.strip_chars(),
    )
    check_unique(frame.select("request_id"), ["request_id"], str(path))
    return frame


def _check_known(
    frame: pl.DataFrame, items: pl.DataFrame, path: Path, column: str, rule: Literal["error", "drop"]
) -> tuple[pl.DataFrame, int]:
    """Unknown news ids in an exploded frame (with `_line`): error naming the line, or drop."""
    known = frame["item_id"].is_in(items["item_id"].implode())
    if known.all():
        return frame, 0
    if rule == "error":
        first = frame.filter(~known).row(0, named=True)
        raise DataError(
            f"news id {first['item_id']!r} is not in news.tsv (use --drop-unknown-items to drop such entries)",
            file=str(path),
            column=column,
            row=int(first["_line"]),
            count=int((~known).sum()),
        )
    return frame.filter(pl.Series(known)), int((~known).sum())


def _impressions(behaviors: pl.DataFrame, path: Path) -> pl.DataFrame | None:
    """Exploded impression tokens; None when the file carries no click labels at all."""
    tokens = (
        behaviors.select("_line", "request_id", "user_id", "ts", pl.col("impressions").str.split(" ").alias("token"))
        .explode("token")
        .filter(pl.col("token").is_not_null() & (pl.col("token") != ""))
        .with_columns(pl.int_range(pl.len()).over("_line").cast(pl.Int32).alias("position"))
        .with_columns(
            pl.col("token").str.replace(_LABEL, "").alias("item_id"),
            pl.col("token").str.extract(_LABEL, 1).alias("label"),
        )
    )
    # News ids have no "-", so a "-" anywhere but in a valid label means a broken entry.
    bad = tokens.filter(pl.col("item_id").str.contains("-", literal=True) | (pl.col("item_id") == ""))
    if bad.height:
        first = bad.row(0, named=True)
        raise DataError(
            f"impression entry {first['token']!r} is not NEWSID-1 / NEWSID-0",
            file=str(path), column="impressions", row=int(first["_line"]), count=bad.height,
        )  # fmt: skip
    labelled = tokens["label"].is_not_null()
    if tokens.height == 0 or not labelled.any():
        return None
    if not labelled.all():
        first = tokens.filter(~labelled).row(0, named=True)
        raise DataError(
            f"impression entry {first['token']!r} has no click label (-1 or -0) while other entries do",
            file=str(path), column="impressions", row=int(first["_line"]), count=int((~labelled).sum()),
        )  # fmt: skip
    tokens = tokens.with_columns((pl.col("label") == "1").alias("clicked"))
    repeat = ~tokens.select(pl.struct("request_id", "item_id").is_first_distinct()).to_series()
    if repeat.any():
        first = tokens.filter(repeat).row(0, named=True)
        raise DataError(
            f"news id {first['item_id']!r} is shown twice in impression {first['request_id']!r}",
            file=str(path), column="impressions", row=int(first["_line"]), count=int(repeat.sum()),
        )  # fmt: skip
    return tokens.select("_line", "request_id", "user_id", "ts", "item_id", "position", "clicked")


def _history(behaviors: pl.DataFrame) -> pl.DataFrame:
    """Each user's history from their earliest row, timed by the rule in the module docstring."""
    first_rows = behaviors.sort("ts", "_line").unique("user_id", keep="first", maintain_order=True)
    return (
        first_rows.select("_line", "user_id", "ts", pl.col("history").str.split(" ").alias("item_id"))
        .explode("item_id")
        .filter(pl.col("item_id").is_not_null() & (pl.col("item_id") != ""))
        .with_columns(
            (pl.len().over("_line") - pl.int_range(pl.len()).over("_line")).alias("_back"),
        )
        .with_columns(
            (pl.col("ts") - pl.duration(seconds=pl.col("_back"))).alias("ts"),
            pl.lit("history").alias("event"),
            pl.lit(1.0).alias("weight"),
        )
        .drop("_back")
    )


def load_mind(
    path: str | Path,
    text_template: str | None = None,
    unknown_items: Literal["error", "drop"] = "error",
    news_file: str = "news.tsv",
    behaviors_file: str = "behaviors.tsv",
) -> Dataset:
    """Load a MIND split folder (MINDsmall_train, MINDlarge_dev, …) as a validated `Dataset`."""
    if unknown_items not in ("error", "drop"):
        raise ConfigError(f"unknown_items must be 'error' or 'drop', not {unknown_items!r}")
    folder = Path(path)
    if not folder.is_dir():
        raise DataError("MIND folder not found", file=str(folder))
    news_path, behaviors_path = folder / news_file, folder / behaviors_file
    items = load_news(news_path)
    behaviors = _behaviors(behaviors_path)

    history, dropped_history = _check_known(_history(behaviors), items, behaviors_path, "history", unknown_items)
    shown = _impressions(behaviors, behaviors_path)
    dropped_shown = 0
    clicks = None
    impressions = None
    if shown is not None:
        shown, dropped_shown = _check_known(shown, items, behaviors_path, "impressions", unknown_items)
        clicks = shown.filter(pl.col("clicked")).select(
            "_line", "user_id", "item_id", "ts", pl.lit("click").alias("event"), pl.lit(1.0).alias("weight")
        )
        impressions = validate_impressions(
            shown.drop("_line").with_columns(pl.lit(None, dtype=pl.Float64).alias("propensity")),
            str(behaviors_path),
            items,
        )
    columns = ["user_id", "item_id", "ts", "event", "weight"]
    parts = [history.select(columns)] + ([clicks.select(columns)] if clicks is not None else [])
    interactions, _ = validate_interactions(
        pl.concat(parts, how="vertical_relaxed").sort("user_id", "ts", "item_id", maintain_order=True),
        str(behaviors_path),
        items,
    )
    dropped = dropped_history + dropped_shown
    if dropped:
        log.warning(
            "%s: dropped %d history/impression entries on news ids missing from %s", behaviors_path, dropped, news_path
        )
    notes: dict[str, int | str] = {
        "source": str(folder),
        "history_interactions": history.height,
        "click_interactions": 0 if clicks is None else clicks.height,
        "history_rule": "earliest row's history, timed first_ts - n..1 s",
        "dropped_unknown_items": dropped,
    }
    if shown is None:
        notes["unlabeled"] = "behaviors carry no click labels: no impressions or clicks"
    return Dataset(
        items=items,
        interactions=interactions,
        impressions=impressions,
        name=f"mind-{folder.name}",
        text_template=text_template or MIND_TEMPLATE,
        notes=notes,
    )
