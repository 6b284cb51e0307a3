"""Durable file-system steps shared by the stores that publish atomically (index, embeddings)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or new entry in `path` durable (POSIX; a no-op where directories cannot be opened)."""
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:  # pragma: no cover - Windows
        return
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (checksums of saved indexes and shards)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(target: Path, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` beside `target`, fsync it, rename it onto `target` and fsync the folder.

    Readers see the old file or the new one whole, never a part; after return the new one survives a
    crash. The temporary's name starts with a dot and carries the pid (concurrent writers, globs).
    """
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)
    return target
