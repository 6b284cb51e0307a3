"""The contract between the second stage and its callers (the `Recommender` facade, the API, A/B).

Kept in its own import-light module so the service can type against it without loading LightGBM,
and so the facade and the ranker can be built and tested independently: the facade retrieves
candidates from FAISS and hands them over in a `RankRequest`; the ranker adds its own fallback
candidates (co-visitation with the last items, recent popularity) for cold or sparse users, removes
excluded items, scores everything with the same feature code used in training, and returns the order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class RankRequest:
    """One request, as the online path sees it.

    `history` is oldest first (the facade's order from the interaction log); `history_ts` parallels
    it when timestamps are known (None for a fresh list of recent items sent by a client).
    `candidates`/`interest` are the FAISS results in retrieval order (interest = inner product of
    the user vector with the item vector); they may be empty for a cold user, in which case the
    ranker's fallbacks supply candidates. `exclude` holds items that must not be returned (seen ones
    when `exclude_seen`). `now` defaults to the ranker's behavior snapshot time.
    `user_vector` and `item_vectors` (item ids -> [n, dim] vectors, e.g. `VectorIndex.reconstruct`)
    are optional: with them the ranker scores fallback candidates' interest and the similarity
    features exactly as in training; without them those features are missing (NaN).
    """

    history: Sequence[str]
    candidates: Sequence[str]
    interest: Sequence[float]
    k: int
    user_id: str | None = None
    history_ts: Sequence[datetime] | None = None
    exclude: frozenset[str] = field(default_factory=frozenset)
    allowed: frozenset[str] | None = None
    now: datetime | None = None
    user_vector: Sequence[float] | None = None
    item_vectors: Callable[[Sequence[str]], Any] | None = None
    item_matrix: Any | None = None
    """Optional [n, dim] array of item vectors in the order of the ranker's `item_ids` (NaN rows for
    unknown items): the same values as `item_vectors`, without id lookups on the request path."""


@dataclass
class RankResult:
    """The ranked top-k: ids, ranker scores, where each candidate came from, and optional explanations.

    `sources[i]` is one of "retrieval", "covisit", "popular" (the first source that proposed it).
    `explanations[i]` (when asked) is `{"contributions": {feature: shap value, ...} (top features),
    "because_of": history item id or None, "bias": float}`.
    """

    item_ids: list[str]
    scores: list[float]
    sources: list[str]
    explanations: list[dict[str, Any]] | None = None


@runtime_checkable
class CandidateRanker(Protocol):
    """What the facade needs from a trained ranker."""

    version: str
    """Registry version string (`<prefix>-ranker/<n>`) or a content hash for a local folder."""

    encoder_version: str | None
    """The encoder version whose interest scores it was trained on; None when it accepts any."""

    feature_names: list[str]

    def rank(self, request: RankRequest, *, explain: bool = False) -> RankResult:
        """Score the request's candidates (plus fallbacks) and return the top `request.k`."""
        ...
