"""`.gz` and `.zst` inputs read directly: decompressed once into a temporary file, then read as usual.

Public catalogs ship compressed (Amazon's `*.json.gz`, `*.jsonl.zst` dumps). Streaming the file
through pyarrow's decompressors into a temporary file keeps memory flat for multi-gigabyte dumps,
and lets every reader (with its UTF-8, delimiter and JSON checks) run unchanged on the plain bytes.
The format of the content follows the suffix under the compression one (`items.json.gz` is JSON
lines); a file whose bytes say gzip/zstd is decompressed whatever its name. Zip archives hold
several files, so they are still refused with a message.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from recsys.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZIP_MAGIC = b"PK\x03\x04"
_SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_BLOCK = 8 * 1024 * 1024


def compression_of(path: Path) -> str | None:
    """ "gzip", "zstd" or None, from the file's first bytes (the suffix may lie or be missing)."""
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic[:2] == GZIP_MAGIC:
        return "gzip"
    if magic == ZSTD_MAGIC:
        return "zstd"
    if magic == ZIP_MAGIC:
        raise DataError("file is a zip archive; unzip it first (gzip and zstd files are read directly)", file=str(path))
    return None


def inner_name(path: Path) -> str:
    """The name without its compression suffix: `items.json.gz` -> `items.json`."""
    return path.stem if path.suffix.lower() in _SUFFIXES else path.name


@contextmanager
def decompressed(path: Path, codec: str) -> Iterator[Path]:
    """A temporary plain copy of `path` (same inner name), removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix="recsys-decompress-"))
    target = folder / inner_name(path)
    try:
        try:
            with pa.input_stream(str(path), compression=codec) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink, _BLOCK)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot decompress ({codec}): {str(exc).splitlines()[0]}", file=str(path)) from exc
        if target.stat().st_size == 0:
            raise DataError(f"file is empty once decompressed ({codec})", file=str(path))
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)
