"""What the facade returns: plain dataclasses, so a host application needs no HTTP types."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MODES = ("ranked", "retrieval", "popular")
QUERIES = ("user", "history", "text", "item")


@dataclass(frozen=True)
class Recommendation:
    """One recommended item. `source` says which stage proposed it (`retrieval`, `covisit`, `popular`, `text`);
    `score` is the ranker's score in ranked mode, the inner product in retrieval order, and the
    interaction count in the popularity fallback (None if a ranker returned a non-finite value, and
    for popular items that top up a ranker's list when its own candidates ran short under a filter)."""

    item_id: str
    title: str | None
    score: float | None
    rank: int
    source: str
    explanation: dict[str, Any] | None = None


@dataclass(frozen=True)
class RecommendResult:
    """The top-k and how it was made.

    - `mode`: `ranked` (the ranker ordered the candidates), `retrieval` (FAISS order: no usable ranker),
      or `popular` (cold start without a ranker).
    - `query`: what the request gave: `user`, `history`, `text`, or `item` (`similar`).
    - `user_vector`: `cached` (the nightly vector, still fresh), `encoded` (encoded for this request),
      or None (text/item queries, cold start).
    - `ignored_items`: history ids that are not in the catalog (dropped).
    - `timings_ms`: per stage (`encode`, `search`, `rank`, `total`).
    """

    items: list[Recommendation]
    cold_start: bool
    mode: str
    query: str
    index_version: str
    encoder_version: str
    ranker_version: str | None = None
    user_vector: str | None = None
    ignored_items: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self.items]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EventsResult:
    """What `add_events` did with a batch: each event's status, in the batch's order, and the commit time.

    - `statuses[i]`: `accepted` (logged now), `duplicate` (its `event_id` was logged before: a retry),
      or `unknown_item` (the catalog lacks the item: not logged).
    - `commit_ms`: the log's fsynced commit (0 when nothing was written).
    """

    event_ids: list[str]
    statuses: list[str]
    commit_ms: float = 0.0

    @property
    def accepted(self) -> int:
        return self.statuses.count("accepted")

    @property
    def duplicates(self) -> int:
        return self.statuses.count("duplicate")

    @property
    def unknown_items(self) -> int:
        return self.statuses.count("unknown_item")

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "unknown_items": self.unknown_items,
            "events": [
                {"event_id": event_id, "status": status}
                for event_id, status in zip(self.event_ids, self.statuses, strict=True)
            ],
            "commit_ms": self.commit_ms,
        }
