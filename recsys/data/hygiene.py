"""Catalog hygiene at convert time: one place that turns a raw item table into clean canonical items.

Order matters: repeated products are resolved first (`--dedupe-items`), then the contract checks
and casts (`contracts.validate_items`), then the text is cleaned (`clean`), and last the list columns
are made canonical again, since cleaning can empty an element (`"<br>"` -> `""`).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from recsys.data.clean import clean_items
from recsys.data.contracts import DuplicateRule, dedupe_items, validate_items
from recsys.data.item_columns import canonical_lists


@dataclass(frozen=True)
class ItemRules:
    """How `data convert` tidies a catalog.

    `duplicates`: first / last keeps that copy of a repeated `item_id` and counts the rest; error
    refuses the file naming both rows. `clean_html`: strip tags and unescape entities (whitespace is
    always normalised). `used`: the columns the text template names (they must be renderable).
    """

    duplicates: DuplicateRule = "error"
    clean_html: bool = False
    used: tuple[str, ...] = ()


def tidy_items(frame: pl.DataFrame, source: str, rules: ItemRules) -> tuple[pl.DataFrame, int]:
    """Canonical, clean items and the number of repeated rows dropped by `rules.duplicates`."""
    frame, dropped = dedupe_items(frame, rules.duplicates, source)
    items = validate_items(frame, source, rules.used)
    return canonical_lists(clean_items(items, rules.clean_html)), dropped
