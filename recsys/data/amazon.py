"""Amazon Reviews adapter: a category's reviews + product metadata (JSON lines, plain, .gz or .zst).

Both public releases are read, recognised by their keys:

- **2018** (Ni et al.): reviews ``{"reviewerID", "asin", "overall", "unixReviewTime", ...}``, metadata
  ``{"asin", "title", "brand", "category": [...], "description": [...], "feature": [...], ...}``;
- **2023** (McAuley lab): reviews ``{"user_id", "parent_asin", "rating", "timestamp" (ms), ...}``,
  metadata ``{"parent_asin", "title", "store", "categories": [...], "main_category", "description": [...],
  "features": [...], "details": {...}, ...}``. Items are keyed by `parent_asin`, as the metadata is.

Output: items ``item_id, title, brand, category (list), description (list), features (list),
main_category`` and interactions ``user_id, item_id, ts, weight`` (the star rating). The default
text template is ``{title} | {brand} | {category} | {description}``.

Review text is **kept out of the item text** by default: reviews are written by the very users whose
next interaction the split holds out, so a review of the test item (or any later one) pasted into
the item's text would leak the answer into both the item tower and the user's history text.

Rules chosen for these dumps, each counted in the dataset's notes (and printed by `data convert`):

- the metadata repeats products (the 2018 files list some asins several times): the first copy is
  kept and the rest counted (`duplicates`, as `data convert --dedupe-items`);
- titles and descriptions carry HTML and entities: cleaned by default (`clean_html`);
- reviews name products missing from the metadata: dropped and counted (`unknown_items`);
- the same review appears twice in the 2018 files: exact repeats of (user, item, time) are dropped and
  counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import polars as pl

from recsys.data.compressed import compression_of, decompressed
from recsys.data.contracts import DuplicateRule, validate_interactions
from recsys.data.dataset import Dataset
from recsys.data.hygiene import ItemRules, tidy_items
from recsys.data.readers import read_raw
from recsys.data.text import DEFAULT_JOINER, template_fields
from recsys.errors import DataError

DEFAULT_TEMPLATE = "{title} | {brand} | {category} | {description}"
ITEM_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "title": pl.String(),
    "brand": pl.String(),
    "category": pl.List(pl.String),
    "description": pl.List(pl.String),
    "features": pl.List(pl.String),
    "main_category": pl.String(),
}
_REVIEW_SCHEMAS: dict[str, dict[str, Any]] = {
    "2018": {"reviewerID": pl.String, "asin": pl.String, "overall": pl.Float64, "unixReviewTime": pl.Int64},
    "2023": {"user_id": pl.String, "parent_asin": pl.String, "rating": pl.Float64, "timestamp": pl.Int64},
}
_REVIEW_COLUMNS = {
    "2018": {"reviewerID": "user_id", "asin": "item_id", "unixReviewTime": "ts", "overall": "weight"},
    "2023": {"user_id": "user_id", "parent_asin": "item_id", "timestamp": "ts", "rating": "weight"},
}


@contextmanager
def _plain(path: Path) -> Iterator[Path]:
    """The file itself, or a decompressed temporary copy of it."""
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    codec = compression_of(path)
    if codec is None:
        yield path
    else:
        with decompressed(path, codec) as plain:
            yield plain


def _records(path: Path, source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object is named."""
    with path.open("r", encoding="utf-8", errors="strict") as handle:
        try:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"line {line_no} is not valid JSON: {exc.msg}", file=source) from exc
                if not isinstance(value, dict):
                    raise DataError(f"line {line_no} is not a JSON object", file=source)
                yield line_no, value
        except UnicodeDecodeError as exc:
            raise DataError("text is not UTF-8; re-save the file as UTF-8", file=source) from exc


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        return " ".join(t for v in value if (t := _text(v)))
    return str(value)


def _text_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [t for v in value if (t := _text(v))]
    return [str(value)]


def _release_of_metadata(record: dict[str, Any], source: str) -> str:
    if "parent_asin" in record:
        return "2023"
    if "asin" in record:
        return "2018"
    raise DataError(
        f"the first record has neither 'asin' (2018) nor 'parent_asin' (2023); keys: "
        f"{sorted(record)[:12]}. Is this an Amazon metadata file?",
        file=source,
    )


def _item_row(record: dict[str, Any], release: str) -> dict[str, Any]:
    found = record.get("details")
    details: dict[str, Any] = found if isinstance(found, dict) else {}
    if release == "2023":
        categories = _text_list(record.get("categories")) or _text_list(record.get("main_category"))
        brand = record.get("store") or details.get("Brand") or details.get("brand")
        features = record.get("features")
        main = record.get("main_category")
        item_id = record.get("parent_asin")
    else:
        categories = _text_list(record.get("category")) or _text_list(record.get("main_cat"))
        brand = record.get("brand")
        features = record.get("feature")
        main = record.get("main_cat")
        item_id = record.get("asin")
    return {
        "item_id": _text(item_id),
        "title": _text(record.get("title")),
        "brand": _text(brand),
        "category": categories,
        "description": _text_list(record.get("description")),
        "features": _text_list(features),
        "main_category": _text(main),
    }


def read_metadata(path: str | Path) -> tuple[pl.DataFrame, str]:
    """The metadata file as raw item rows (before validation) and the release it is from."""
    path = Path(path)
    source = str(path)
    rows: list[dict[str, Any]] = []
    release = ""
    with _plain(path) as plain:
        for _, record in _records(plain, source):
            release = release or _release_of_metadata(record, source)
            rows.append(_item_row(record, release))
    if not rows:
        raise DataError("file has no records", file=source)
    return pl.DataFrame(rows, schema=ITEM_SCHEMA), release


def _release_of_reviews(path: Path, source: str) -> str:
    for _, record in _records(path, source):
        if "reviewerID" in record:
            return "2018"
        if "user_id" in record and ("parent_asin" in record or "asin" in record):
            return "2023"
        raise DataError(
            f"the first record has neither 'reviewerID' (2018) nor 'user_id' (2023); keys: "
            f"{sorted(record)[:12]}. Is this an Amazon reviews file?",
            file=source,
        )
    raise DataError("file has no records", file=source)


def read_reviews(path: str | Path) -> tuple[pl.DataFrame, str]:
    """`user_id, item_id, ts (raw), weight` from a reviews file, and its release; nothing else is read."""
    path = Path(path)
    source = str(path)
    with _plain(path) as plain:
        release = _release_of_reviews(plain, source)
        try:
            frame = pl.read_ndjson(plain, schema=_REVIEW_SCHEMAS[release])
        except Exception as exc:  # polars raises several types; the generic reader names the bad line
            read_raw(path)
            raise DataError(f"cannot read as {release} reviews: {str(exc).splitlines()[0]}", file=source) from exc
    return frame.rename(_REVIEW_COLUMNS[release]).select("user_id", "item_id", "ts", "weight"), release


def load_amazon(
    reviews: str | Path,
    metadata: str | Path,
    text_template: str | None = None,
    duplicates: DuplicateRule = "first",
    clean_html: bool = True,
    list_joiner: str = DEFAULT_JOINER,
    unknown_items: Literal["error", "drop"] = "drop",
    name: str | None = None,
) -> Dataset:
    """Read a reviews + metadata pair of either release into a validated `Dataset` (rules: module doc)."""
    template = text_template or DEFAULT_TEMPLATE
    raw_items, release = read_metadata(metadata)
    rules = ItemRules(duplicates=duplicates, clean_html=clean_html, used=tuple(template_fields(template)))
    items, repeated = tidy_items(raw_items, str(metadata), rules)
    raw_reviews, review_release = read_reviews(reviews)
    if review_release != release:
        raise DataError(
            f"the reviews are from the {review_release} release but the metadata ({metadata}) is from "
            f"{release}; their item ids do not match",
            file=str(reviews),
        )
    interactions, unknown = validate_interactions(raw_reviews, str(reviews), items, unknown_items)
    before = interactions.height
    interactions = interactions.unique(subset=["user_id", "item_id", "ts"], keep="first", maintain_order=True)
    repeats = before - interactions.height
    notes: dict[str, int | str] = {
        "format": f"amazon-{release}",
        "items_file": str(metadata),
        "interactions_file": str(reviews),
        "duplicate_items_dropped": repeated,
        "dropped_unknown_items": unknown,
        "duplicate_reviews_dropped": repeats,
        "clean_html": str(clean_html).lower(),
    }
    return Dataset(
        items=items,
        interactions=interactions,
        name=name or Path(metadata).resolve().parent.name,
        text_template=template,
        list_joiner=list_joiner,
        notes=notes,
    )
