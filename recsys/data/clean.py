"""Item text as people read it: HTML tags stripped, entities unescaped, whitespace collapsed.

Scraped catalogs (Amazon's among them) carry markup in titles and descriptions: a title such as
``<span class="a-size-medium">Heat</span>`` or ``Rock &amp; Roll``. The encoder would spend its few
tokens on ``span`` and ``amp``, so convert cleans the item table once and stores the clean text.

Rules, chosen so plain text is never edited:

- a tag is ``<name ...>``, ``</name>`` or ``<name/>`` with a letter right after ``<`` (so ``a < b``
  and ``5 > 3`` stay), and comments ``<!-- ... -->``; inline tags (``<b>``, ``<span>``, ``<a>``...)
  vanish, so ``a <b>novel</b>.`` reads ``a novel.``, and the others become a space, so ``a<br>b``
  reads ``a b``;
- an entity is unescaped only in its complete form with the closing ``;`` (``&amp;``, ``&#39;``,
  ``&#x27;``), so ``AT&T`` and ``Fish & Chips`` stay as written;
- whitespace runs (line breaks, tabs, non-breaking spaces) become one space, ends are trimmed.

String columns, the elements of list columns and the string fields of struct columns are cleaned;
`item_id` is left alone (ids are matched, not read).
"""

from __future__ import annotations

import html
import re

import polars as pl
from polars.datatypes import DataTypeClass

DType = pl.DataType | DataTypeClass  # what a schema or a list's `.inner` holds

_INLINE = "a|abbr|b|bdi|bdo|cite|code|em|font|i|kbd|mark|q|s|samp|small|span|strong|sub|sup|u|var"
_INLINE_TAG = rf"(?i)</?(?:{_INLINE})(?:\s[^<>]*)?/?>"
_TAG = r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>"
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_ENTITY_PATTERN = _ENTITY.pattern
_SPACE = r"\s+"


def _unescape(value: str | None) -> str | None:
    if value is None:
        return None
    return _ENTITY.sub(lambda match: html.unescape(match.group(0)), value)


def clean_text(expr: pl.Expr, strip_html: bool) -> pl.Expr:
    """`expr` (a string expression) with tags stripped / entities unescaped when asked, spaces collapsed."""
    if strip_html:
        expr = expr.str.replace_all(_INLINE_TAG, "").str.replace_all(_TAG, " ")
        expr = (
            pl.when(expr.str.contains(_ENTITY_PATTERN))
            .then(expr.map_elements(_unescape, return_dtype=pl.String, skip_nulls=True))
            .otherwise(expr)
        )
    return expr.str.replace_all(_SPACE, " ").str.strip_chars()


def _clean_dtype(expr: pl.Expr, dtype: DType, strip_html: bool) -> pl.Expr | None:
    """A cleaning expression for a value of `dtype`, or None when there is no text in it."""
    if dtype == pl.String:
        return clean_text(expr, strip_html)
    if isinstance(dtype, pl.List) and dtype.inner == pl.String:
        return expr.list.eval(clean_text(pl.element(), strip_html))
    if isinstance(dtype, pl.Struct):
        fields = []
        changed = False
        for field in dtype.fields:
            inner = _clean_dtype(expr.struct.field(field.name), field.dtype, strip_html)
            changed = changed or inner is not None
            fields.append((inner if inner is not None else expr.struct.field(field.name)).alias(field.name))
        return pl.struct(fields) if changed else None
    return None


def clean_items(items: pl.DataFrame, strip_html: bool) -> pl.DataFrame:
    """Every text value of the item table cleaned by the module's rules (`item_id` untouched)."""
    exprs = []
    for name, dtype in items.schema.items():
        if name == "item_id":
            continue
        cleaned = _clean_dtype(pl.col(name), dtype, strip_html)
        if cleaned is not None:
            exprs.append(cleaned.alias(name))
    return items.with_columns(exprs) if exprs else items
