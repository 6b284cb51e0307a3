"""Dotted paths into nested JSON objects: `--map details.publisher=brand`.

JSON lines from scrapers nest fields (`{"details": {"Publisher": "Penguin"}}`); polars reads such a
field as a struct column. A mapping source `details.publisher` names the struct column `details` and
its field `publisher`, to any depth. A column whose own name contains a dot wins over a path, and a
field is matched exactly first, then case-insensitively when exactly one field matches (scraped
keys come as `Publisher` or `publisher` from one dump to the next).
"""

from __future__ import annotations

import polars as pl
from polars.datatypes import DataTypeClass

DType = pl.DataType | DataTypeClass


def _field(dtype: pl.Struct, name: str) -> pl.Field | None:
    exact = [f for f in dtype.fields if f.name == name]
    if exact:
        return exact[0]
    folded = [f for f in dtype.fields if f.name.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def path_expr(schema: pl.Schema, source: str) -> pl.Expr | None:
    """The expression reading `source` (a column, or `column.field[.field...]`); None when absent."""
    if source in schema:
        return pl.col(source)
    parts = source.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest prefix that is a column
        column = ".".join(parts[:cut])
        if column not in schema:
            continue
        expr: pl.Expr = pl.col(column)
        dtype: DType = schema[column]
        for name in parts[cut:]:
            if not isinstance(dtype, pl.Struct):
                return None
            field = _field(dtype, name)
            if field is None:
                return None
            expr, dtype = expr.struct.field(field.name), field.dtype
        return expr
    return None


def has_path(schema: pl.Schema, source: str) -> bool:
    """Whether `source` names a column or a nested field of this schema."""
    return path_expr(schema, source) is not None
