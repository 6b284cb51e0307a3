"""MovieLens adapter: ml-latest-small / ml-latest (CSV), ml-100k and ml-1m into a `Dataset`.

What each item gets (the same columns for every variant, so templates and features carry over):

- ``item_id`` (the movieId as text), ``title`` as published (``"Matrix, The (1999)"``),
  ``year`` (Int32 from a trailing ``(YYYY)`` or ``(YYYY–YYYY)``, else null),
  ``genres`` (``"Adventure, Animation"``; ``(no genres listed)`` / 100k's ``unknown`` → empty),
  ``category`` (the first genre, or null) and ``tags``.
- ``tags``: the movie's distinct user tags (case-insensitively; the most common spelling shown),
  most frequent first, ties alphabetical, at most `max_tags`, joined with ", ". Only the CSV
  variants ship tags; elsewhere the column is empty. Tags are static item text built from the whole
  file, including tags written after a split's cut: that is how text-based recommenders use them,
  but it is a (small) leak to keep in mind when comparing against id-only models.

Every rating is an interaction: ``user_id, item_id, ts, weight=rating, event="rating"``.
Ratings or tags on a movie missing from the movie file are an error (the official files never
have them, so such a file has been edited), or are dropped and counted with
``unknown_items="drop"``. Movies without ratings stay in the items table; the evaluation catalog
(items with at least one interaction) is the split's business.

Encodings: the CSV variants are UTF-8 (checked, with file/line/column on failure). The official
ml-100k ``u.item`` and ml-1m ``movies.dat`` are Latin-1, so those two are decoded as UTF-8 when
they are valid UTF-8 (a re-encoded copy) and as Latin-1 otherwise — the documented rule of
those formats, not a general fallback.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import polars as pl

from recsys.data.contracts import require_columns, validate_interactions, validate_items
from recsys.data.dataset import Dataset
from recsys.data.readers import check_utf8, read_raw
from recsys.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Variant = Literal["latest-small", "latest", "100k", "1m"]
VARIANTS: tuple[str, ...] = ("latest-small", "latest", "100k", "1m")
MOVIELENS_TEMPLATE = "{title} | {genres} | {tags}"
MAX_TAGS = 10
NO_GENRES = ("(no genres listed)", "unknown")
# ml-100k u.item: 5 fields, then one 0/1 flag per genre in this order (from the ml-100k README / u.genre).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip
_YEAR = r"\((\d{4})(?:\s*[-–]\s*\d{4})?\)\s*$"
_FILES: dict[Variant, tuple[str, str]] = {
    "latest-small": ("movies.csv", "ratings.csv"),
    "100k": ("u.item", "u.data"),
    "1m": ("movies.dat", "ratings.dat"),
}


def detect_variant(path: str | Path) -> Variant:
    """The variant whose files are in `path` (ml-latest and ml-latest-small share one format)."""
    folder = Path(path)
    for variant, names in _FILES.items():
        if all((folder / name).is_file() for name in names):
            if variant == "latest-small" and folder.name == "ml-latest":
                return "latest"
            return variant
    expected = "; ".join(f"{v}: {' + '.join(n)}" for v, n in _FILES.items())
    raise DataError(f"no MovieLens files found (expected {expected})", file=str(folder))


def _resolve_folder(path: str | Path) -> Path:
    """`path` itself, or its single `ml-*` subfolder (what unzipping an archive leaves behind)."""
    folder = Path(path)
    if not folder.exists():
        raise DataError("folder not found", file=str(folder))
    if folder.is_file():
        raise DataError("expected the MovieLens folder, got a file", file=str(folder))
    if any((folder / n).is_file() for names in _FILES.values() for n in names):
        return folder
    inner = [p for p in sorted(folder.glob("ml-*")) if p.is_dir()]
    return inner[0] if len(inner) == 1 else folder


def load_movielens(
    path: str | Path,
    variant: Variant | None = None,
    text_template: str | None = None,
    max_tags: int = MAX_TAGS,
    unknown_items: Literal["error", "drop"] = "error",
) -> Dataset:
    """Load one MovieLens release folder as a validated `Dataset`.

    `variant` is detected from the files present when None. `text_template` defaults to
    ``"{title} | {genres} | {tags}"``. `unknown_items="drop"` drops (and counts in
    ``notes["dropped_unknown_items"]``) ratings and tags on movies missing from the movie file,
    for hand-trimmed copies; the default refuses them.
    """
    folder = _resolve_folder(path)
    found = detect_variant(folder)
    if variant is None:
        variant = found
    elif variant not in VARIANTS:
        raise ConfigError(f"unknown MovieLens variant {variant!r}; use one of {', '.join(VARIANTS)}")
    elif _FILES.get(variant, _FILES["latest-small"]) != _FILES.get(found, _FILES["latest-small"]):
        raise DataError(f"asked for ml-{variant} but the folder holds ml-{found} files", file=str(folder))
    if max_tags < 0:
        raise ConfigError("max_tags must be 0 or more")
    if unknown_items not in ("error", "drop"):
        raise ConfigError(f"unknown_items must be 'error' or 'drop', not {unknown_items!r}")
    if variant in ("latest-small", "latest"):
        items, ratings, ratings_file = _load_latest(folder, max_tags, unknown_items)
    elif variant == "100k":
        items, ratings, ratings_file = _load_100k(folder)
    else:
        items, ratings, ratings_file = _load_1m(folder)
    interactions, dropped = validate_interactions(ratings, ratings_file, items, unknown_items)
    if dropped:
        log.warning("%s: dropped %d ratings on movies missing from the movie file", ratings_file, dropped)
    return Dataset(
        items=items,
        interactions=interactions,
        name=f"movielens-{variant}",
        text_template=text_template or MOVIELENS_TEMPLATE,
        notes={"source": str(folder), "variant": str(variant), "dropped_unknown_items": dropped},
    )


def _finish_items(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """`item_id, title, genre_list[, tags]` -> the canonical MovieLens item columns."""
    genres = pl.col("genre_list").list.eval(
        pl.element()
        .str.strip_chars()
        .filter((pl.element().str.strip_chars() != "") & ~pl.element().str.strip_chars().is_in(NO_GENRES))
    )
    if "tags" not in frame.columns:
        frame = frame.with_columns(pl.lit("", dtype=pl.String).alias("tags"))
    frame = frame.with_columns(pl.col("title").str.strip_chars()).with_columns(
        pl.col("title").str.extract(_YEAR, 1).cast(pl.Int32).alias("year"),
        genres.alias("genre_list"),
    )
    frame = frame.select(
        "item_id",
        "title",
        "year",
        pl.col("genre_list").list.join(", ").alias("genres"),
        pl.col("tags").fill_null(""),
        pl.col("genre_list").list.first().alias("category"),
    )
    return validate_items(frame, source)


def _ratings_frame(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        pl.col("user_id"),
        pl.col("item_id"),
        pl.col("ts"),
        pl.col("weight"),
        pl.lit("rating").alias("event"),
    )


# ml-latest-small / ml-latest ------------------------------------------------------------------


def _load_latest(
    folder: Path, max_tags: int, unknown_items: Literal["error", "drop"]
) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    movies_path, ratings_path, tags_path = folder / "movies.csv", folder / "ratings.csv", folder / "tags.csv"
    movies = read_raw(movies_path)
    require_columns(movies, ("movieId", "title", "genres"), str(movies_path))
    frame = movies.select(
        pl.col("movieId").alias("item_id"),
        pl.col("title"),
        pl.col("genres").fill_null("").str.split("|").alias("genre_list"),
    )
    items = validate_items(frame.select("item_id"), str(movies_path))  # ids first: null/duplicate
    frame = frame.with_columns(items["item_id"])
    if tags_path.exists():
        frame = frame.join(_tags(tags_path, items, max_tags, unknown_items), on="item_id", how="left")
    items = _finish_items(frame, str(movies_path))

    ratings = read_raw(ratings_path)
    require_columns(ratings, ("userId", "movieId", "rating", "timestamp"), str(ratings_path))
    names = {"userId": "user_id", "movieId": "item_id", "rating": "weight", "timestamp": "ts"}
    ratings = ratings.rename(names)
    return items, _ratings_frame(ratings), str(ratings_path)


def _tags(path: Path, items: pl.DataFrame, max_tags: int, unknown_items: Literal["error", "drop"]) -> pl.DataFrame:
    """`item_id, tags` from tags.csv, by the rule in the module docstring."""
    raw = read_raw(path)
    require_columns(raw, ("movieId", "tag"), str(path))
    ids = raw["movieId"].str.strip_chars()
    unknown = ~ids.is_in(items["item_id"].implode()) | ids.is_null()
    if unknown.any() and unknown_items == "error":
        row = int(unknown.arg_true()[0]) + 1
        raise DataError(
            f"tag on movieId {ids[row - 1]!r}, which is not in movies.csv (use --drop-unknown-items to drop such rows)",
            file=str(path),
            column="movieId",
            row=row,
            count=int(unknown.sum()),
        )
    frame = (
        pl.DataFrame({"item_id": ids, "tag": raw["tag"].str.replace_all(r"\s+", " ").str.strip_chars()})
        .filter(~unknown & pl.col("tag").is_not_null() & (pl.col("tag") != ""))
        .with_columns(pl.col("tag").str.to_lowercase().alias("key"))
    )
    counted = frame.group_by("item_id", "key").agg(
        pl.len().alias("n"), pl.col("tag").mode().sort().first().alias("tag")
    )
    return (
        counted.sort(["item_id", "n", "key"], descending=[False, True, False])
        .group_by("item_id", maintain_order=True)
        .agg(pl.col("tag").head(max_tags).str.join(", ").alias("tags"))
    )


# ml-100k ------------------------------------------------------------------------------------


def _decode_legacy(path: Path) -> str:
    """UTF-8 when the bytes are UTF-8, else Latin-1 (the official encoding of these files)."""
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    data = path.read_bytes()
    if not data.strip():
        raise DataError("file is empty", file=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _split_lines(path: Path, separator: str, fields: int, layout: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a header-less fixed-format file; a wrong field count names its line."""
    records = []
    for line_no, line in enumerate(_decode_legacy(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(separator, fields - 1) if separator == "::" else line.split(separator)
        if len(parts) != fields:
            raise DataError(
                f"line {line_no} has {len(parts)} {separator!r}-separated fields, expected {fields} ({layout})",
                file=str(path),
                row=line_no,
            )
        records.append((line_no, parts))
    if not records:
        raise DataError("file has no data lines", file=str(path))
    return records


def _read_numeric_table(path: Path, separator: str, names: tuple[str, ...], layout: str) -> pl.DataFrame:
    """A header-less file of ids and numbers (u.data, ratings.dat) read fast with polars."""
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    if path.stat().st_size == 0:
        raise DataError("file is empty (0 bytes)", file=str(path))
    check_utf8(path, header=False)
    width = len(names) if separator != "::" else 2 * len(names) - 1
    try:
        frame = pl.read_csv(path, separator=separator[0], has_header=False, infer_schema=False, quote_char=None)
    except Exception as exc:
        raise DataError(f"cannot parse ({layout}): {str(exc).splitlines()[0]}", file=str(path)) from exc
    if frame.width != width:
        raise DataError(f"expected the layout {layout}, found {frame.width} fields", file=str(path))
    if separator == "::":
        gaps = frame.select(frame.columns[1::2])
        bad = gaps.select(pl.any_horizontal(pl.all().is_not_null())).to_series()
        if bad.any():
            row = int(bad.arg_true()[0]) + 1
            raise DataError(f"line {row} is not in the layout {layout}", file=str(path), row=row)
        frame = frame.select(frame.columns[0::2])
    return frame.rename(dict(zip(frame.columns, names, strict=True)))


def _load_100k(folder: Path) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    item_path, data_path = folder / "u.item", folder / "u.data"
    layout = "movie id|title|release date|video release date|IMDb URL|19 genre flags"
    records = _split_lines(item_path, "|", 5 + len(ML100K_GENRES), layout)
    genre_lists = []
    for line_no, record in records:
        flags = record[5:]
        if any(f.strip() not in ("0", "1") for f in flags):
            raise DataError(f"genre flags must be 0 or 1, found {flags}", file=str(item_path), row=line_no)
        genre_lists.append([g for g, f in zip(ML100K_GENRES, flags, strict=True) if f.strip() == "1"])
    frame = pl.DataFrame(
        {
            "item_id": [r[0].strip() for _, r in records],
            "title": [r[1] for _, r in records],
            "genre_list": genre_lists,
        },
        schema={"item_id": pl.String, "title": pl.String, "genre_list": pl.List(pl.String)},
    )
    items = _finish_items(frame, str(item_path))
    layout = "user id<TAB>item id<TAB>rating<TAB>timestamp"
    ratings = _read_numeric_table(data_path, "\t", ("user_id", "item_id", "weight", "ts"), layout)
    return items, _ratings_frame(ratings), str(data_path)


# ml-1m --------------------------------------------------------------------------------------


def _load_1m(folder: Path) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    movies_path, ratings_path = folder / "movies.dat", folder / "ratings.dat"
    records = _split_lines(movies_path, "::", 3, "MovieID::Title::Genres")
    frame = pl.DataFrame(
        {
            "item_id": [r[0].strip() for _, r in records],
            "title": [r[1] for _, r in records],
            "genre_list": [r[2].strip().split("|") for _, r in records],
        },
        schema={"item_id": pl.String, "title": pl.String, "genre_list": pl.List(pl.String)},
    )
    items = _finish_items(frame, str(movies_path))
    ratings = _read_numeric_table(
        ratings_path, "::", ("user_id", "item_id", "weight", "ts"), "UserID::MovieID::Rating::Timestamp"
    )
    return items, _ratings_frame(ratings), str(ratings_path)
