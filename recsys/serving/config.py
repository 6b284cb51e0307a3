"""`ServingConfig`: the knobs of the online path, with the request limits the API enforces.

One frozen object shared by the facade and the HTTP layer, so the bounds the OpenAPI schema
advertises are the bounds the facade checks for in-process callers too.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from recsys.errors import ConfigError


@dataclass(frozen=True)
class ServingConfig:
    """Online settings. Limits guard the service against requests that cost far more than they are worth.

    - `candidates`: FAISS candidates handed to the ranker (the ranker re-orders these, then cuts to k).
    - `popular_days`: the cold-start popularity window, counted back from the newest interaction.
    - `max_k`, `max_history`, `max_text`, `max_body`: request bounds (k, history ids, text
      characters, body bytes).
    - `poll_interval`: seconds between hot-swap checks of CURRENT, the aliases and the dataset.
    - `explain_history`: most recent history items an explanation compares a result with.
    - `max_batch`: user/text encodings the encoder worker runs in one forward pass.
    - `device`: torch device of the encoder (None: CUDA when available, as in the nightly job).
    - `threads`: torch CPU threads and FAISS OpenMP threads (None leaves their defaults). On a small or
      shared box, 1 avoids OpenMP teams spinning against each other: an exact single-query search of
      20k vectors measured 17 ms with 2 threads on the loaded 2-core box and 1 ms with 1.
    - `rank_concurrency`: ranker calls that run at once; further requests wait for a slot. Feature
      code is Python and numpy holding the GIL most of the time, so a ranker call per request thread
      (up to 40 under load) only adds contention: on the 2-core box with the ml-latest-small ranker,
      2 slots served 81 / 70 req/s at 8 / 32 clients, unbounded 60 / 42 (p99 0.9 s vs 1.2 s at 32).
    - `max_events`, `max_events_body`: events one `POST /v1/events` batch may hold, and its body bytes
      (1,000 events with long ids and ISO times take ~400 KB; other bodies keep `max_body`).
    - `event_log`: the SQLite event log (None: `events/events.sqlite` in the served store folder).
    - `keep_alive`: seconds uvicorn keeps an idle connection open. It must outlast the clients' own
      pool expiry (httpx: 5 s, uvicorn's default too): with equal timeouts a client can send its next
      request on a connection the server is closing at that moment, which fails without reaching the
      app (measured: a few `ReadError`s a minute at 32 clients on the loaded 2-core box, none at 75 s).
    """

    candidates: int = 200
    popular_days: float = 30.0
    max_k: int = 1000
    max_history: int = 500
    max_text: int = 2000
    max_body: int = 64 * 1024
    poll_interval: float = 5.0
    explain_history: int = 50
    max_batch: int = 64
    device: str | None = None
    threads: int | None = None
    rank_concurrency: int = 2
    keep_alive: float = 75.0
    max_events: int = 1000
    max_events_body: int = 1024 * 1024
    event_log: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "candidates",
            "max_k",
            "max_history",
            "max_text",
            "max_body",
            "explain_history",
            "max_batch",
            "rank_concurrency",
            "max_events",
            "max_events_body",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"serving setting '{name}' must be a positive integer, got {value!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"serving setting 'threads' must be a positive integer, got {self.threads!r}")
        if self.event_log is not None and (not isinstance(self.event_log, str) or not self.event_log):
            raise ConfigError(f"serving setting 'event_log' must be a file path, got {self.event_log!r}")
        for name in ("popular_days", "poll_interval", "keep_alive"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"serving setting '{name}' must be a positive number, got {value!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ServingConfig:
        """Build from a mapping; an unknown key is a typo worth stopping for."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown serving setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)
