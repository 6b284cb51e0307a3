"""`LiveHistories`: the events posted since the dataset was written, laid over the catalog's histories.

The catalog (`catalog.py`) holds every user's history as the dataset folder had it; it is replaced
whole on a hot swap and never edited. Live events are kept here instead, outside the swapped state,
so a swap keeps them, and a request merges the two (`history`). When the dataset is rewritten with
the events in it (`recsys data ingest`) and the catalog reloads, the merge finds each event already
there by (item, time) and adds nothing twice; the user's nightly vector becomes usable again once
the nightly job has encoded the new history (its `last_ts` then matches).

Events come from `Recommender.add_events` (after the log's commit) and from the log itself: all of
it at start (the replay after a restart) and then what other processes appended (`catch_up`, run by
the hot-swap poller, so each worker of `recsys serve --workers N` sees the others' events within a
poll interval). An event is applied once, by `event_id`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import numpy as np

from recsys.serving.catalog import Catalog, UserHistory
from recsys.serving.events import Event, EventLog


class LiveHistories:
    """user -> live (ts_us, item_id) pairs; see the module doc. Thread-safe."""

    def __init__(self) -> None:
        self._by_user: dict[str, list[tuple[int, str]]] = {}
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self.tailed = 0  # the log's last `seq` read by `catch_up`

    def apply(self, events: Iterable[Event]) -> int:
        """Add events not applied yet (by `event_id`); how many were added."""
        added = 0
        with self._lock:
            for e in events:
                if e.event_id in self._ids:
                    continue
                self._ids.add(e.event_id)
                self._by_user.setdefault(e.user_id, []).append((int(e.ts_us), e.item_id))
                added += 1
        return added

    def catch_up(self, log: EventLog) -> int:
        """Apply what the log holds after the last `seq` read here (all of it the first time)."""
        rows = log.since(self.tailed)
        if rows:
            self.tailed = max(self.tailed, rows[-1].seq)
        return self.apply(rows)

    def history(self, catalog: Catalog, user_id: str) -> tuple[UserHistory | None, bool]:
        """The user's history, newest first, with the live events merged in; and whether any was new to it.

        Ordered like the catalog's (time, then item id in natural order, descending); an event the
        catalog already has at the same (item, time) is not added again.
        """
        base = catalog.history(user_id)
        with self._lock:
            live = list(self._by_user.get(user_id, ()))
        if not live:
            return base, False
        own = [] if base is None else list(zip(base.ts_us.tolist(), base.item_ids, strict=True))
        seen = set(own)
        fresh = [pair for pair in dict.fromkeys(live) if pair not in seen]
        if not fresh:
            return base, False
        merged = sorted([*own, *fresh], key=_natural_order(catalog.integer_item_ids, own, fresh), reverse=True)
        return UserHistory([item for _, item in merged], np.asarray([ts for ts, _ in merged], dtype=np.int64)), True

    @property
    def users(self) -> int:
        with self._lock:
            return len(self._by_user)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)


def _natural_order(
    integer_ids: bool, *pairs: list[tuple[int, str]]
) -> Callable[[tuple[int, str]], tuple[int, int]] | None:
    """Sort key of (ts, item id) pairs: same-second ties by id in natural order (`recsys.data.order`)."""
    if integer_ids and all(item.isdigit() for group in pairs for _, item in group):
        return lambda pair: (pair[0], int(pair[1]))
    return None
