"""Generic readers: CSV/TSV, parquet and JSONL with a column mapping, into canonical tables.

Problems that show up before any column can be checked (a missing or empty file, bytes that are
not UTF-8, the wrong delimiter, a ragged or badly quoted line, a repeated header name) are found
here and reported with the file, line and column. CSVs are read with every column as text, so ids
keep leading zeros and timestamps are parsed by one rule in `contracts.parse_timestamps`.
"""

from __future__ import annotations

import codecs
import csv
import json
from pathlib import Path
from typing import Literal, cast

import polars as pl

from recsys.data.compressed import compression_of, decompressed, inner_name
from recsys.data.contracts import (
    IMPRESSIONS_REQUIRED,
    INTERACTIONS_REQUIRED,
    validate_impressions,
    validate_interactions,
)
from recsys.data.hygiene import ItemRules, tidy_items
from recsys.data.nested import has_path, path_expr
from recsys.errors import DataError

TableKind = Literal["items", "interactions", "impressions"]
_OPTIONAL = {
    "interactions": ("event", "weight", "rating"),
    "impressions": ("propensity",),
}
_CANDIDATE_DELIMITERS = (",", "\t", ";", "|")
_JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
_CHUNK = 16 * 1024 * 1024  # UTF-8 check reads this much at a time, so big files stay cheap on memory


def parse_mapping(pairs: list[str] | None) -> dict[str, str]:
    """`["movieId=item_id", "userId=user_id"]` -> `{"movieId": "item_id", ...}`."""
    mapping: dict[str, str] = {}
    for pair in pairs or []:
        source, sep, target = pair.partition("=")
        if not sep or not source.strip() or not target.strip() or "=" in target:
            raise DataError(f"bad column mapping {pair!r}; expected SOURCE=TARGET, e.g. movieId=item_id")
        if source.strip() in mapping:
            raise DataError(f"column {source.strip()!r} is mapped twice in the column mapping")
        mapping[source.strip()] = target.strip()
    return mapping


def _field_index(line_prefix: str, delimiter: str, quote_char: str | None = '"') -> int:
    """Which field of a delimited line `line_prefix` ends in (delimiters inside quotes don't count)."""
    index, quoted = 0, False
    for char in line_prefix:
        if char == quote_char:
            quoted = not quoted
        elif char == delimiter and not quoted:
            index += 1
    return index


def _header_fields(first_line: bytes, delimiter: str) -> list[str]:
    text = first_line.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    return next(csv.reader([text], delimiter=delimiter), [])


def check_utf8(
    path: Path,
    delimiter: str | None = None,
    header: bool = True,
    names: list[str] | None = None,
    quote_char: str | None = '"',
) -> None:
    """Raise on the first byte that is not UTF-8, naming the line, the row and (for CSV) the column.

    The file is read in chunks cut at line ends, so a multi-gigabyte ratings file costs no more
    memory than one chunk. `header` says whether line 1 is a header (then data row = line - 1);
    `names` gives the column names of a header-less file; `quote_char=None` for formats without
    quoting (MIND's TSVs, whose titles hold bare `"`).
    """
    path = Path(path)
    first_line = b""
    lines_before = 0
    carry = b""
    with path.open("rb") as handle:
        while True:
            block = handle.read(_CHUNK)
            data = carry + block
            if not data:
                return
            cut = data.rfind(b"\n") + 1 if block else len(data)
            if cut == 0:  # no line end yet: keep reading until a full line is in hand
                carry = data
                continue
            piece, carry = data[:cut], data[cut:]
            if not first_line:
                first_line = piece.split(b"\n", 1)[0]
            try:
                codecs.decode(piece, "utf-8")
            except UnicodeDecodeError as exc:
                _raise_not_utf8(path, piece, exc.start, lines_before, first_line, delimiter, header, names, quote_char)
            lines_before += piece.count(b"\n")
            if not block and not carry:
                return


def _raise_not_utf8(
    path: Path,
    piece: bytes,
    offset: int,
    lines_before: int,
    first_line: bytes,
    delimiter: str | None,
    header: bool,
    names: list[str] | None,
    quote_char: str | None,
) -> None:
    line_start = piece.rfind(b"\n", 0, offset) + 1
    line_no = lines_before + piece.count(b"\n", 0, offset) + 1
    column = None
    if delimiter:
        if header:
            names = _header_fields(first_line, delimiter)
        prefix = piece[line_start:offset].decode("utf-8", errors="replace")
        index = _field_index(prefix, delimiter, quote_char)
        if names and index < len(names) and (line_no > 1 or not header):
            column = names[index]
        elif not header:
            column = f"field {index + 1}"
    row = (line_no - 1 if line_no > 1 else None) if header else line_no
    raise DataError(
        f"text is not UTF-8 (byte 0x{piece[offset]:02x} on line {line_no}); re-save the file as UTF-8",
        file=str(path),
        column=column,
        row=row,
    )


def _guess_delimiter(header: str, given: str) -> str | None:
    """Another delimiter that splits the header into more fields than `given` does."""
    best, best_count = None, header.count(given)
    for candidate in _CANDIDATE_DELIMITERS:
        if candidate != given and header.count(candidate) > best_count:
            best, best_count = candidate, header.count(candidate)
    return best


def _first_ragged_row(path: Path, delimiter: str, width: int) -> tuple[int, int, int] | None:
    """(data row, line, field count) of the first record with more fields than the header.

    Only called after polars refused the file, so the slow csv-module pass costs nothing on the
    happy path. Records with fewer fields are legal (polars fills them with nulls, and the
    contract checks then name the row whose required value is missing).
    """
    with path.open("r", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            next(reader)
            for row_no, record in enumerate(reader, start=1):
                if len(record) > width:
                    return row_no, reader.line_num, len(record)
        except csv.Error:
            return None
    return None


def _read_delimited(path: Path, delimiter: str) -> pl.DataFrame:
    check_utf8(path, delimiter)
    with path.open("r", encoding="utf-8", newline="") as handle:
        header = handle.readline().lstrip("\ufeff").rstrip("\r\n")
    if not header.strip():
        raise DataError("file has no header line (line 1 is blank)", file=str(path))
    names = next(csv.reader([header], delimiter=delimiter), [])
    other = _guess_delimiter(header, delimiter)
    if len(names) == 1 and other is not None:
        raise DataError(
            f"the header has one column with delimiter {delimiter!r} but splits on {other!r}; "
            f"pass --delimiter {other!r}",
            file=str(path),
        )
    stripped = [n.strip() for n in names]
    repeated = sorted({n for n in stripped if stripped.count(n) > 1})
    if repeated:
        raise DataError(f"the header names column(s) {repeated} more than once", file=str(path), column=repeated[0])
    blank = [i + 1 for i, n in enumerate(stripped) if not n]
    if blank:
        raise DataError(f"the header has an empty column name (field {blank[0]})", file=str(path))
    try:
        frame = pl.read_csv(path, separator=delimiter, infer_schema=False, quote_char='"', truncate_ragged_lines=False)
    except Exception as exc:
        reason = str(exc).splitlines()[0]
        ragged = _first_ragged_row(path, delimiter, len(names))
        if ragged is not None:
            row, line, fields = ragged
            hint = f"; is the delimiter {other!r}? pass --delimiter {other!r}" if other else ""
            raise DataError(
                f"line {line} has {fields} fields but the header has {len(names)}{hint}",
                file=str(path),
                row=row,
            ) from exc
        raise DataError(f"cannot parse as {delimiter!r}-delimited text: {reason}", file=str(path)) from exc
    frame = frame.rename({c: c.strip() for c in frame.columns})
    # Blank lines at the end of a hand-edited file become all-null rows: drop only those, so the
    # row numbers of every other row still match the file.
    if frame.height:
        filled = frame.select(pl.any_horizontal(pl.all().is_not_null())).to_series()
        last = cast(int, filled.arg_true().max()) + 1 if filled.any() else 0
        frame = frame.head(last)
    return frame


def _read_json(path: Path) -> pl.DataFrame:
    check_utf8(path, header=False)
    with path.open("rb") as handle:
        text_start = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text_start:
        raise DataError("file is empty (only blank lines)", file=str(path))
    try:
        if text_start.startswith(b"["):
            return pl.read_json(path, infer_schema_length=10_000)
        return pl.read_ndjson(path, infer_schema_length=10_000)
    except Exception as exc:
        if not text_start.startswith(b"["):
            with path.open("r", encoding="utf-8") as handle:
                record = 0
                for line_no, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    record += 1
                    try:
                        value = json.loads(line)
                    except json.JSONDecodeError as bad:
                        raise DataError(
                            f"line {line_no} is not valid JSON: {bad.msg}", file=str(path), row=record
                        ) from exc
                    if not isinstance(value, dict):
                        raise DataError(f"line {line_no} is not a JSON object", file=str(path), row=record) from exc
        raise DataError(f"not valid JSON lines: {str(exc).splitlines()[0]}", file=str(path)) from exc


def read_raw(path: str | Path, delimiter: str | None = None) -> pl.DataFrame:
    """Read a file as-is (CSV/TSV as all-text columns), after the checks any format needs.

    The format follows the suffix: `.parquet`; `.jsonl`/`.ndjson`/`.json` (JSON lines, or one
    JSON array); anything else is delimited text, `,` by default and tab for `.tsv`/`.tab`.
    Gzip and zstd files (`items.json.gz`, `events.csv.zst`) are read directly (`compressed`);
    errors still name the compressed file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", file=str(path))
    if path.is_dir():
        raise DataError("expected a file, found a folder", file=str(path))
    if path.stat().st_size == 0:
        raise DataError("file is empty (0 bytes)", file=str(path))
    codec = compression_of(path)
    if codec is None:
        return _read_plain(path, delimiter)
    with decompressed(path, codec) as plain:
        try:
            return _read_plain(plain, delimiter)
        except DataError as exc:
            raise DataError(exc.reason, file=str(path), column=exc.column, row=exc.row, count=exc.count) from exc


def _read_plain(path: Path, delimiter: str | None) -> pl.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            frame = pl.read_parquet(path)
        except Exception as exc:  # polars raises several types for broken parquet
            reason = f"not a readable parquet file ({exc.__class__.__name__})"
            raise DataError(reason, file=str(path)) from exc
    elif suffix in _JSON_SUFFIXES:
        frame = _read_json(path)
    else:
        frame = _read_delimited(path, delimiter or ("\t" if suffix in (".tsv", ".tab") else ","))
    if frame.height == 0:
        raise DataError("file has a header but no data rows", file=str(path))
    return frame


def apply_mapping(frame: pl.DataFrame, mapping: dict[str, str], source: str) -> pl.DataFrame:
    """Rename source columns to canonical names; a dotted source (`details.publisher`) reads a nested field.

    A mapping naming an absent column or field is an error, and so is one that would leave two
    columns with the same name (two sources on one target, or a target the file already has).
    A nested field becomes a new column; its struct column stays (the template may use it).
    """
    absent = [c for c in mapping if not has_path(frame.schema, c)]
    if absent:
        raise DataError(
            f"column mapping names column(s) {absent} that the file does not have; found {frame.columns}",
            file=source,
            column=absent[0],
        )
    nested = {s: t for s, t in mapping.items() if s not in frame.columns}
    renames = {s: t for s, t in mapping.items() if s in frame.columns}
    renamed = [renames.get(c, c) for c in frame.columns] + list(nested.values())
    clash = sorted({c for c in renamed if renamed.count(c) > 1})
    if clash:
        raise DataError(
            f"column mapping would make two columns named {clash[0]!r} (mapping {mapping}, "
            f"columns {frame.columns}); drop one or map it elsewhere",
            file=source,
            column=clash[0],
        )
    if nested:
        frame = frame.with_columns(path_expr(frame.schema, s).alias(t) for s, t in nested.items())  # type: ignore[union-attr]  # has_path checked above
    return frame.rename(renames)


def is_json_source(path: str | Path) -> bool:
    """Whether `path` holds JSON (lines), compressed or not: the generic reader cleans HTML there by default."""
    return Path(inner_name(Path(path))).suffix.lower() in _JSON_SUFFIXES


def _keep_contract_columns(frame: pl.DataFrame, kind: TableKind) -> pl.DataFrame:
    """Interactions/impressions keep only contract columns (unknown ones are ignored by rule)."""
    required = INTERACTIONS_REQUIRED if kind == "interactions" else IMPRESSIONS_REQUIRED
    keep = [c for c in frame.columns if c in required or c in _OPTIONAL[kind]]
    return frame.select(keep)


def to_table(
    frame: pl.DataFrame,
    kind: TableKind,
    source: str,
    mapping: dict[str, str] | None = None,
    items: pl.DataFrame | None = None,
    unknown_items: Literal["error", "drop"] = "error",
    item_rules: ItemRules | None = None,
) -> tuple[pl.DataFrame, int]:
    """Map and validate an already-read frame into one canonical table (see `read_table`).

    The count returned is of rows dropped by rule: unknown items for interactions, repeated
    products for items (`item_rules.duplicates`).
    """
    if kind not in ("items", "interactions", "impressions"):
        raise DataError(f"unknown table kind {kind!r}; use items, interactions or impressions", file=source)
    frame = apply_mapping(frame, mapping or {}, source)
    if kind == "items":
        return tidy_items(frame, source, item_rules or ItemRules())
    frame = _keep_contract_columns(frame, kind)
    if kind == "interactions":
        if "weight" not in frame.columns and "rating" in frame.columns:
            frame = frame.rename({"rating": "weight"})
        elif "rating" in frame.columns:
            frame = frame.drop("rating")
        return validate_interactions(frame, source, items, unknown_items)
    return validate_impressions(frame, source, items), 0


def read_table(
    path: str | Path,
    kind: TableKind,
    mapping: dict[str, str] | None = None,
    delimiter: str | None = None,
    items: pl.DataFrame | None = None,
    unknown_items: Literal["error", "drop"] = "error",
    item_rules: ItemRules | None = None,
) -> tuple[pl.DataFrame, int]:
    """Read, map and validate one canonical table. Returns the frame and rows dropped by rule.

    Rule for unknown columns: items keep every column (any may feed the text template);
    interactions and impressions keep only their contract's columns (a `rating` column becomes
    `weight` when there is no `weight`).
    """
    return to_table(read_raw(path, delimiter), kind, str(path), mapping, items, unknown_items, item_rules)
