"""Input checks of the facade: in-process callers get the bounds and messages HTTP callers get.

The HTTP layer validates bodies first (`schemas.py`, built from the same `ServingConfig` limits and
`MAX_ID_CHARS`); these checks make `Recommender.recommend` and `.similar` safe to call directly.
Each raises `DataError` naming the field in `column` (the HTTP layer turns it into a 422).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recsys.errors import DataError
from recsys.serving.config import ServingConfig

MAX_ID_CHARS = 256
QUERIES = ("user_id", "history", "text")


def query_kind(user_id: Any, history: Any, text: Any) -> str:
    """Which of user_id, history or text a request gives ("user", "history", "text"); exactly one."""
    given = [name for name, value in zip(QUERIES, (user_id, history, text), strict=True) if value is not None]
    if len(given) != 1:
        raise DataError(
            f"give exactly one of user_id, history or text (got {', '.join(given) or 'none'})", column="query"
        )
    return {"user_id": "user", "history": "history", "text": "text"}[given[0]]


def check_id(value: Any, column: str, row: int | None = None) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_CHARS:
        raise DataError(f"must be a non-empty string of at most {MAX_ID_CHARS} characters", column=column, row=row)
    check_unicode(value, column, row)
    return value


def unicode_problem(value: str) -> str | None:
    """Why `value` is not valid Unicode text, else None.

    Lone surrogates (possible in JSON's \\ud800 escapes) are not text: no tokenizer or log takes them.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds an unpaired surrogate (U+{ord(value[exc.start]):04X}): not valid Unicode text"
    return None


def blank_problem(value: str) -> str | None:
    """Why `value` cannot be a text query (nothing but whitespace: it has no meaning to search), else None."""
    return "must contain a character other than whitespace" if not value.strip() else None


def check_unicode(value: str, column: str, row: int | None = None) -> None:
    problem = unicode_problem(value)
    if problem is not None:
        raise DataError(problem, column=column, row=row)


def check_k(k: Any, config: ServingConfig) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= int(k) <= config.max_k:
        raise DataError(f"must be an integer from 1 to {config.max_k}, got {k!r}", column="k")
    return int(k)


def check_flag(value: Any, column: str) -> bool:
    if not isinstance(value, bool):
        raise DataError("must be true or false", column=column)
    return value


def check_history(history: Any, config: ServingConfig) -> list[str]:
    if isinstance(history, str) or not isinstance(history, Sequence):
        raise DataError("must be a list of item ids", column="item_ids")
    ids = list(history)
    if not 1 <= len(ids) <= config.max_history:
        raise DataError(f"must hold 1 to {config.max_history} item ids, got {len(ids)}", column="item_ids")
    return [check_id(value, "item_ids", row=i + 1) for i, value in enumerate(ids)]


def check_text(text: Any, config: ServingConfig) -> str:
    if not isinstance(text, str) or not 1 <= len(text) <= config.max_text:
        raise DataError(f"must be a string of 1 to {config.max_text} characters", column="text")
    check_unicode(text, "text")
    problem = blank_problem(text)
    if problem is not None:
        raise DataError(problem, column="text")
    return text
