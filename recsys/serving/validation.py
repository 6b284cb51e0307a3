"""Input checks of the facade: in-process callers get the bounds and messages HTTP callers get.

The HTTP layer validates bodies first (`schemas.py`, built from the same `ServingConfig` limits and
`MAX_ID_CHARS`); these checks make `Recommender.recommend` and `.similar` safe to call directly.
Each raises `DataError` naming the field in `column` (the HTTP layer turns it into a 422).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from recsys.errors import DataError
from recsys.serving.config import ServingConfig
from recsys.serving.events import Event

MAX_ID_CHARS = 256
MAX_EVENT_KIND_CHARS = 64
EVENT_FIELDS = ("event_id", "user_id", "item_id", "ts", "event", "weight")
MIN_EVENT_TS_US = -2_208_988_800 * 10**6  # 1900-01-01: the ranker's time origin
FUTURE_SLACK_US = 86_400 * 10**6  # clocks disagree; a day ahead is a bug, not skew
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


def check_events(events: Any, config: ServingConfig, now_us: int | None = None) -> list[Event]:
    """A batch of 1 to `config.max_events` event mappings, checked (`DataError` naming `events[i].field`).

    `ts`: a datetime (naive is UTC), Unix seconds, or an ISO 8601 string; absent: `now_us` (the time
    of receipt). Times before 1900 or over a day ahead are refused.
    """
    if isinstance(events, str | bytes | Mapping) or not isinstance(events, Sequence):
        raise DataError("must be a list of events", column="events")
    if not 1 <= len(events) <= config.max_events:
        raise DataError(f"must hold 1 to {config.max_events} events, got {len(events)}", column="events")
    now = time.time_ns() // 1000 if now_us is None else now_us
    return [_check_event(raw, f"events[{i}]", now) for i, raw in enumerate(events)]


def _check_event(raw: Any, where: str, now_us: int) -> Event:
    if not isinstance(raw, Mapping):
        raise DataError("must be an object with event_id, user_id and item_id", column=where)
    unknown = sorted(str(key) for key in raw if key not in EVENT_FIELDS)
    if unknown:
        raise DataError(f"unknown field(s) {unknown}; known: {list(EVENT_FIELDS)}", column=where)
    ids = [check_id(raw.get(name), f"{where}.{name}") for name in ("event_id", "user_id", "item_id")]
    kind = raw.get("event")
    if kind is not None and (not isinstance(kind, str) or not 1 <= len(kind) <= MAX_EVENT_KIND_CHARS):
        raise DataError(f"must be a string of 1 to {MAX_EVENT_KIND_CHARS} characters", column=f"{where}.event")
    if kind is not None:
        check_unicode(kind, f"{where}.event")
    weight = raw.get("weight")
    if weight is not None and (
        isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight)
    ):
        raise DataError("must be a finite number", column=f"{where}.weight")
    ts = event_ts_us(raw.get("ts"), f"{where}.ts", now_us)
    return Event(ids[0], ids[1], ids[2], ts, kind, None if weight is None else float(weight))


def event_ts_us(value: Any, column: str, now_us: int) -> int:
    """An event time as Unix microseconds (see `check_events`)."""
    if value is None:
        return now_us
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise DataError(f"not an ISO 8601 time: {value[:40]!r}", column=column) from None
    if isinstance(value, datetime):
        value = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DataError("must be a time: ISO 8601 text or Unix seconds", column=column)
    us = round(value * 1_000_000)
    if not MIN_EVENT_TS_US <= us <= now_us + FUTURE_SLACK_US:
        raise DataError("must lie between 1900 and a day from now", column=column)
    return us
