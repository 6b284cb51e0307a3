"""Which item column types the pipeline can use, and their canonical form.

The contract (docs/data.md):

- `item_id`, `title`, `created_at` and `year` are scalars: ids are matched, titles are shown, dates
  and years are features. A list or struct there is refused, naming the column.
- `category` and `genres` are a string or a **list of strings**. A list is kept as a list: the
  ranker's primary category is its first non-empty element and every element feeds the user x
  category affinity features (`ranking.context`). "Books, Fiction" in one string is one category.
- Any other column is kept when the text template can render it: a scalar, a list of scalars, or a
  struct of such fields (`{"Publisher": ..., "Language": ...}`). Lists become lists of strings with
  their elements trimmed and empty or null elements removed, so a template never shows ", ,".
- Columns the template could not render (binary, lists of structs such as scraped image records,
  lists of lists) are dropped with a warning when nothing uses them; a column the template names
  must be renderable, else the convert stops naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import polars as pl
from polars.datatypes import DataTypeClass

from recsys.errors import DataError

DType = pl.DataType | DataTypeClass  # what a schema or a list's `.inner` holds

log = logging.getLogger(__name__)

SCALAR_COLUMNS = ("item_id", "title", "created_at", "year")
LIST_OR_TEXT_COLUMNS = ("category", "genres")


def is_scalar(dtype: DType) -> bool:
    """Strings, numbers, booleans, dates, categoricals and all-null columns."""
    return (
        dtype in (pl.String, pl.Boolean, pl.Null)
        or dtype.is_numeric()
        or dtype.is_temporal()
        or isinstance(dtype, (pl.Categorical, pl.Enum))
    )


def is_list_of_scalars(dtype: DType) -> bool:
    return isinstance(dtype, (pl.List, pl.Array)) and is_scalar(dtype.inner)


def is_renderable(dtype: DType) -> bool:
    """Whether the text template can render a value of this type (see the module doc)."""
    if is_scalar(dtype) or is_list_of_scalars(dtype):
        return True
    return isinstance(dtype, pl.Struct) and all(is_renderable(f.dtype) for f in dtype.fields)


def _describe(dtype: DType) -> str:
    if isinstance(dtype, (pl.List, pl.Array)):
        return f"a list of {_describe(dtype.inner)}" if not is_scalar(dtype.inner) else f"a list ({dtype})"
    if isinstance(dtype, pl.Struct):
        return "an object (struct)"
    return str(dtype)


def check_item_columns(items: pl.DataFrame, source: str, used: Iterable[str] = ()) -> pl.DataFrame:
    """Refuse unusable contract or template columns (naming them); drop other unusable columns."""
    used = set(used)
    for name, dtype in items.schema.items():
        if name in SCALAR_COLUMNS and not is_scalar(dtype):
            raise DataError(
                f"is {_describe(dtype)}, but the contract needs one value per item here "
                "(map a single field with a dotted path, e.g. --map details.name=title)",
                file=source,
                column=name,
            )
        if name in LIST_OR_TEXT_COLUMNS and not (is_scalar(dtype) or is_list_of_scalars(dtype)):
            raise DataError(
                f"is {_describe(dtype)}; the contract takes a string or a list of strings here",
                file=source,
                column=name,
            )
        if name in used and not is_renderable(dtype):
            raise DataError(
                f"is {_describe(dtype)}, which the item-text template cannot render; "
                "take it out of --template or map one of its fields (--map column.field=name)",
                file=source,
                column=name,
            )
    unusable = [name for name, dtype in items.schema.items() if not is_renderable(dtype)]
    if unusable:
        log.warning(
            "%s: dropped column(s) %s: nothing can use their type (%s)",
            source,
            ", ".join(unusable),
            ", ".join(_describe(items.schema[c]) for c in unusable),
        )
        items = items.drop(unusable)
    return items


def canonical_lists(items: pl.DataFrame) -> pl.DataFrame:
    """List columns as `list[str]`: elements trimmed, empty and null elements removed."""
    exprs = []
    for name, dtype in items.schema.items():
        if isinstance(dtype, (pl.List, pl.Array)) and is_scalar(dtype.inner):
            exprs.append(string_list(pl.col(name), dtype.inner).alias(name))
    return items.with_columns(exprs) if exprs else items


def string_list(expr: pl.Expr, inner: DType) -> pl.Expr:
    """A list (or array) of scalars of type `inner` as `list[str]`: trimmed, empty and null elements out."""
    element = pl.element().cast(pl.String).str.strip_chars()
    return (
        expr.cast(pl.List(inner))
        .list.eval(element)
        .list.eval(pl.element().filter(pl.element().is_not_null() & (pl.element() != "")))
    )
