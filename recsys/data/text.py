"""Item text from a configurable template such as ``"{title} | {genres} | {tags}"``.

The template is the one place where a catalog's columns become the text the encoder reads, so
changing it changes every item's text hash (and so triggers re-encoding in the nightly job).

Rendering rule, so that ``"Heat | | "`` never reaches the model and field *contents* are never
edited (a URL's ``//`` or a title's ``--`` stay as they are):

- The template is cut into one chunk per field: the literal text before a field opens it, and
  closing brackets/quotes at the start of the next literal (``)`` in ``"{title} ({year}) | …"``)
  close it; the literal after the last field closes the last field.
- A chunk whose value is missing, null or blank is left out whole, separators included.
- The first chunk kept loses the separator characters its opening literal starts with (unless it is
  the template's own first chunk, whose prefix is kept).
- Whitespace runs inside values (line breaks, tabs, CR) become one space.
- List values are joined with the dataset's joiner (", " unless `data convert --list-joiner` says
  otherwise), their empty and null elements left out; a struct (a JSON object) renders as
  ``key: value`` pairs joined the same way, its empty fields left out.
"""

from __future__ import annotations

import re
import string

import polars as pl

from recsys.data.item_columns import string_list
from recsys.errors import ConfigError

DEFAULT_TEMPLATE = "{title} | {genres} | {tags}"
DEFAULT_JOINER = ", "
_CLOSERS = re.compile(r"^[)\]}\"'»]*")
_LEADING_SEPARATORS = " \t|;,/:.-–—"
_SPACES = re.compile(r"\s+")


def _parse(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"bad item-text template {template!r}: {exc}") from exc


def template_fields(template: str) -> list[str]:
    """The column names a template refers to, in order."""
    fields = [name for _, name, _, _ in _parse(template) if name is not None]
    if any(not name for name in fields):
        raise ConfigError(f"item-text template {template!r} has an unnamed field '{{}}'; name a column")
    return fields


def _chunks(template: str) -> list[tuple[str, str, str, str | None, str]]:
    """(opener, field, format_spec, conversion, closer) for each field of the template."""
    parsed = _parse(template)
    fields = [(lit, name, spec or "", conv) for lit, name, spec, conv in parsed if name is not None]
    trailing = parsed[-1][0] if parsed and parsed[-1][1] is None else ""
    out = []
    for i, (opener, name, spec, conv) in enumerate(fields):
        if i + 1 < len(fields):
            following = fields[i + 1][0]
            closer = _CLOSERS.match(following).group(0)  # type: ignore[union-attr]  # `^...*` always matches
        else:
            closer = trailing
        if i > 0:
            opener = opener[len(_CLOSERS.match(opener).group(0)) :]  # type: ignore[union-attr]  # always matches
        out.append((opener, name, spec, conv, closer))
    return out


def _value_text(value: object, joiner: str) -> str:
    """One value of a struct field as text: lists joined, nested objects as `key: value`, empties dropped."""
    if value is None:
        return ""
    if isinstance(value, dict):
        parts = [f"{key}: {text}" for key, inner in value.items() if (text := _value_text(inner, joiner))]
        return joiner.join(parts)
    if isinstance(value, (list, tuple)):
        return joiner.join(text for inner in value if (text := _value_text(inner, joiner)))
    return _SPACES.sub(" ", str(value)).strip()


def _column_text(items: pl.DataFrame, name: str, joiner: str) -> list[str] | None:
    if name not in items.columns:
        return None
    column = items[name]
    if isinstance(column.dtype, (pl.List, pl.Array)):
        if isinstance(column.dtype.inner, (pl.List, pl.Array, pl.Struct)):
            return [_value_text(v, joiner) for v in column.to_list()]
        column = column.to_frame().select(string_list(pl.col(name), column.dtype.inner).list.join(joiner)).to_series()
    elif isinstance(column.dtype, pl.Struct):
        return [_value_text(v, joiner) for v in column.to_list()]
    return column.cast(pl.String).fill_null("").to_list()


def render_item_text(items: pl.DataFrame, template: str = DEFAULT_TEMPLATE, joiner: str = DEFAULT_JOINER) -> pl.Series:
    """One text per item, in the frame's order. Fields absent from the frame render empty; list and
    struct values are joined with `joiner` (see the module doc)."""
    fields = template_fields(template)
    if not fields:
        raise ConfigError(f"item-text template {template!r} names no column")
    if not any(f in items.columns for f in fields):
        raise ConfigError(f"item-text template {template!r} names none of the item columns {items.columns}")
    chunks = _chunks(template)
    values = {name: _column_text(items, name, joiner) for _, name, _, _, _ in chunks}
    formatter = string.Formatter()
    rows = []
    for i in range(items.height):
        parts: list[str] = []
        for position, (opener, name, spec, conv, closer) in enumerate(chunks):
            column = values[name]
            value = _SPACES.sub(" ", column[i]).strip() if column is not None else ""
            if not value:
                continue
            if spec or conv:
                try:
                    value = formatter.format_field(formatter.convert_field(value, conv), spec)
                except ValueError as exc:
                    raise ConfigError(f"item-text template field {{{name}:{spec}}}: {exc}") from exc
            if not parts and position > 0:
                opener = opener.lstrip(_LEADING_SEPARATORS)
            parts.append(f"{opener}{value}{closer}")
        rows.append(_SPACES.sub(" ", "".join(parts)).strip())
    return pl.Series("text", rows, dtype=pl.String)
