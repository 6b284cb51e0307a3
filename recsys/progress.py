"""Progress display shared by jobs: a rich progress bar on a terminal, quiet in logs and tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate with a progress bar (tqdm writes to stderr, so stdout stays machine-readable)."""
    if not enabled:
        yield from items
        return

    yield from tqdm(items, desc=description, total=total, dynamic_ncols=True, leave=False)
