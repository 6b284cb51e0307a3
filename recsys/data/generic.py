"""Generic adapter: your own items / interactions / impressions files into a `Dataset`.

Each file may be CSV/TSV, parquet or JSON lines (`readers.read_raw` picks by suffix). Column names
are mapped to the canonical ones by `mapping`, in one of two shapes:

- flat, ``{"movieId": "item_id", "userId": "user_id"}`` (or ``["movieId=item_id", ...]`` as on the
  command line): each pair applies to every file that has the source column; a pair whose source
  column is in none of the files is an error naming all of them (almost always a typo);
- per file, ``{"items": {...}, "interactions": {...}, "impressions": {...}}``: each pair must
  name a column of that file.

Rules: items keep all their columns (any may feed the text template); interactions and
impressions keep only their contract's columns. Interactions or impressions on items missing from
the items file are an error (`unknown_items="error"`) or are dropped, counted in
``notes["dropped_unknown_items"]`` and logged as a warning (`"drop"`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from recsys.data.contracts import DuplicateRule
from recsys.data.dataset import Dataset
from recsys.data.hygiene import ItemRules
from recsys.data.nested import has_path
from recsys.data.readers import TableKind, is_json_source, parse_mapping, read_raw, to_table
from recsys.data.text import DEFAULT_JOINER, DEFAULT_TEMPLATE, template_fields
from recsys.errors import ConfigError, DataError

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger(__name__)

KINDS: tuple[TableKind, ...] = ("items", "interactions", "impressions")
ColumnMapping = dict[str, str] | dict[str, dict[str, str]] | list[str]


def split_mapping(
    mapping: ColumnMapping | None, frames: dict[str, tuple[str, pl.DataFrame]]
) -> dict[str, dict[str, str]]:
    """The mapping to apply to each file of `frames` (kind -> (source, raw frame))."""
    if not mapping:
        return {kind: {} for kind in frames}
    if isinstance(mapping, list):
        mapping = parse_mapping(mapping)
    if not isinstance(mapping, dict):
        kind = type(mapping).__name__
        raise ConfigError(f"column mapping must be a dict or a list of SOURCE=TARGET, not {kind}")
    nested = [k for k, v in mapping.items() if isinstance(v, dict)]
    if nested:
        if len(nested) != len(mapping) or any(k not in KINDS for k in nested):
            raise ConfigError(
                f"a per-file column mapping needs only the keys {', '.join(KINDS)} with a dict each; "
                f"got keys {list(mapping)}"
            )
        extra = [k for k in nested if k not in frames]
        if extra:
            raise ConfigError(f"column mapping for {extra[0]!r}, but no {extra[0]} file was given")
        return {kind: dict(mapping.get(kind, {})) for kind in frames}  # type: ignore[arg-type]  # all dicts: checked above
    for source, target in mapping.items():
        if not isinstance(target, str) or not str(source).strip() or not target.strip():
            raise DataError(f"bad column mapping {source!r}: {target!r}; expected SOURCE=TARGET names")
    nowhere = [s for s in mapping if not any(has_path(frame.schema, s) for _, frame in frames.values())]
    if nowhere:
        files = ", ".join(source for source, _ in frames.values())
        raise DataError(
            f"column mapping names column {nowhere[0]!r}, which none of the files has ({files})",
            file=next(iter(frames.values()))[0] if len(frames) == 1 else None,
            column=nowhere[0],
        )
    return {
        kind: {s: t for s, t in mapping.items() if has_path(frame.schema, s)}  # type: ignore[misc]  # all str: checked above
        for kind, (_, frame) in frames.items()
    }


def _drop_unknown(table: pl.DataFrame, items: pl.DataFrame, source: str, rule: str) -> tuple[pl.DataFrame, int]:
    """Impressions on unknown items: error (naming the first row) or drop by rule."""
    known = table["item_id"].is_in(items["item_id"].implode())
    if known.all():
        return table, 0
    row = int((~known).arg_true()[0]) + 1
    if rule == "error":
        raise DataError(
            f"item_id {table['item_id'][row - 1]!r} is not in the items table "
            "(use --drop-unknown-items to drop such rows)",
            file=source,
            column="item_id",
            row=row,
            count=int((~known).sum()),
        )
    return table.filter(known), int((~known).sum())


def load_generic(
    items_path: str | Path,
    interactions_path: str | Path,
    impressions_path: str | Path | None = None,
    mapping: ColumnMapping | None = None,
    delimiter: str | dict[str, str] | None = None,
    text_template: str = DEFAULT_TEMPLATE,
    unknown_items: Literal["error", "drop"] = "error",
    name: str | None = None,
    duplicates: DuplicateRule = "error",
    clean_html: bool | None = None,
    list_joiner: str = DEFAULT_JOINER,
) -> Dataset:
    """Read, map and validate the files into a `Dataset` (rules in the module docstring).

    `delimiter` applies to every delimited file, or per file as ``{"items": ";", ...}`` (files
    not named there use the default: ``,``, or tab for ``.tsv``). `duplicates` resolves repeated
    item ids (first / last, counted in ``notes["duplicate_items_dropped"]``; error by default).
    `clean_html` strips tags and unescapes entities in the item text; None means "when the items
    file is JSON", where scraped markup is the norm. `list_joiner` joins list values in the text.
    """
    if unknown_items not in ("error", "drop"):
        raise ConfigError(f"unknown_items must be 'error' or 'drop', not {unknown_items!r}")
    paths: dict[str, str | Path] = {"items": items_path, "interactions": interactions_path}
    if impressions_path is not None:
        paths["impressions"] = impressions_path
    if isinstance(delimiter, dict):
        unknown = [k for k in delimiter if k not in KINDS]
        if unknown:
            raise ConfigError(f"delimiter given for {unknown[0]!r}; use the keys {', '.join(KINDS)}")
        delimiters = {kind: delimiter.get(kind) for kind in paths}
    else:
        delimiters = dict.fromkeys(paths, delimiter)
    frames = {kind: (str(path), read_raw(path, delimiters[kind])) for kind, path in paths.items()}
    per_file = split_mapping(mapping, frames)

    items_source, items_raw = frames["items"]
    fields = template_fields(text_template)
    strip_html = is_json_source(items_path) if clean_html is None else clean_html
    rules = ItemRules(duplicates=duplicates, clean_html=strip_html, used=tuple(fields))
    items, repeated = to_table(items_raw, "items", items_source, per_file["items"], item_rules=rules)
    if not any(f in items.columns for f in fields):
        raise ConfigError(
            f"item-text template {text_template!r} names none of the item columns {items.columns} "
            f"in {items_source}; pass a template that uses them, e.g. '{{title}} | {{description}}'"
        )

    inter_source, inter_raw = frames["interactions"]
    interactions, dropped = to_table(
        inter_raw, "interactions", inter_source, per_file["interactions"], items, unknown_items
    )
    impressions = None
    dropped_impressions = 0
    if "impressions" in frames:
        imp_source, imp_raw = frames["impressions"]
        impressions, _ = to_table(imp_raw, "impressions", imp_source, per_file["impressions"])
        impressions, dropped_impressions = _drop_unknown(impressions, items, imp_source, unknown_items)
    if dropped:
        log.warning("%s: dropped %d rows on item ids missing from %s", inter_source, dropped, items_source)
    if dropped_impressions:
        log.warning("%s: dropped %d rows on item ids missing from %s", imp_source, dropped_impressions, items_source)
    notes: dict[str, int | str] = {
        "items_file": items_source,
        "interactions_file": inter_source,
        "dropped_unknown_items": dropped + dropped_impressions,
        "duplicate_items_dropped": repeated,
        "clean_html": str(strip_html).lower(),
    }
    if impressions is not None:
        notes["impressions_file"] = frames["impressions"][0]
    return Dataset(
        items=items,
        interactions=interactions,
        impressions=impressions,
        name=name or Path(items_path).resolve().parent.name or "dataset",
        text_template=text_template,
        list_joiner=list_joiner,
        notes=notes,
    )
