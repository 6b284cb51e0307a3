"""Candidate generation: retrieval results plus co-visitation, text and recent-popularity sources.

Why four sources: the dense retriever alone finds the target for ~40% of MovieLens users in its
top 200; the items consumed right next to the user's last few items (co-visitation, point-in-time)
add ~15 points of recall; the items whose text is closest to the user's recent ones
(`ranking.content`, when the context has item text vectors) are the one source that does not come
from behaviour; and recent popularity is the only thing a user without history can get.
Each candidate keeps the first source that proposed it, which the ranker sees as a categorical
feature. Seen/excluded items and items outside `allowed` never become candidates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ranking.context import BehaviorContext
from recsys.errors import ConfigError

SOURCES = ("retrieval", "covisit", "popular", "text")
RETRIEVAL, COVISIT, POPULAR, TEXT = range(4)

ItemVectors = Callable[[np.ndarray], np.ndarray]
"""Item rows -> their vectors in the retrieval space (training: a matrix slice; serving: the index)."""


@dataclass
class CandidateConfig:
    """How many candidates each source contributes; recorded with the model so serving matches training."""

    retrieval_k: int = 200
    covisit_k: int = 100
    popular_k: int = 50
    # Items whose text is closest to the user's recent ones (`ranking.content`); 0, or no content, = off.
    text_k: int = 100
    popular_days: int = 30
    recent_items: int = 5

    def check(self) -> None:
        for name, value in asdict(self).items():
            if int(value) < 0 or (name in ("popular_days", "recent_items") and int(value) < 1):
                raise ConfigError(f"candidate setting {name} must be positive, got {value}")

    @classmethod
    def from_dict(cls, values: dict | None) -> CandidateConfig:
        """Rebuild a stored config; one stored before text candidates existed keeps them off."""
        known = {k: int(v) for k, v in (values or {}).items() if k in cls.__dataclass_fields__}
        known.setdefault("text_k", 0)
        return cls(**known)


@dataclass
class Query:
    """One request in context terms: item rows, context seconds, retrieval output.

    `history` is oldest first; `history_seconds` parallels it (None for a client-sent list).
    `retrieved` are item rows in retrieval order with their `interest` scores.
    """

    history: np.ndarray
    t: int
    retrieved: np.ndarray
    interest: np.ndarray
    history_seconds: np.ndarray | None = None
    exclude: np.ndarray | None = None
    allowed: np.ndarray | None = None  # boolean mask over item rows
    user_vector: np.ndarray | None = None


@dataclass
class Candidates:
    """Candidates of many queries, flattened: parallel arrays with the query index of each row."""

    query: np.ndarray
    item: np.ndarray
    source: np.ndarray
    interest: np.ndarray
    retrieval_rank: np.ndarray

    def __len__(self) -> int:
        return len(self.item)


def generate(
    context: BehaviorContext, queries: list[Query], config: CandidateConfig, item_vectors: ItemVectors | None = None
) -> Candidates:
    """Candidates for every query (see module doc), deduplicated, first source kept."""
    parts: list[tuple[np.ndarray, ...]] = []
    for q_index, query in enumerate(queries):
        parts.append(_one(context, q_index, query, config, item_vectors))
    if not parts:
        empty = np.zeros(0, np.int64)
        return Candidates(empty, empty, empty, np.zeros(0), empty)
    return Candidates(*(np.concatenate([p[i] for p in parts]) for i in range(5)))


def _one(
    context: BehaviorContext, q_index: int, query: Query, config: CandidateConfig, item_vectors: ItemVectors | None
) -> tuple[np.ndarray, ...]:
    banned = set(np.asarray(query.history, np.int64).tolist())
    if query.exclude is not None:
        banned.update(np.asarray(query.exclude, np.int64).tolist())
    allowed = query.allowed

    def usable(rows: np.ndarray) -> list[int]:
        return [r for r in rows.tolist() if r not in banned and (allowed is None or allowed[r])]

    retrieved = np.asarray(query.retrieved, np.int64)[: config.retrieval_k]
    interest_of = dict(zip(retrieved.tolist(), np.asarray(query.interest, np.float64).tolist(), strict=False))
    rank_of = {row: rank for rank, row in enumerate(retrieved.tolist())}
    chosen: dict[int, int] = {}
    for row in usable(retrieved):
        chosen.setdefault(row, RETRIEVAL)

    recent = np.asarray(query.history, np.int64)[::-1][: config.recent_items]
    if config.covisit_k and len(recent):
        weights = 1.0 / np.arange(1, len(recent) + 1)
        partners, _ = context.covisit.neighbours(recent, query.t, weights)
        keep = ~np.isin(partners, np.fromiter(banned, np.int64, len(banned)))
        if allowed is not None:
            keep &= allowed[partners]
        for row in partners[keep][: config.covisit_k].tolist():
            chosen.setdefault(row, COVISIT)
    content = context.content
    if config.text_k and content is not None and len(query.history):
        profile = content.profile(query.history)
        if profile is not None:
            banned_rows = np.fromiter(banned, np.int64, len(banned))
            for row in content.similar(profile, banned_rows, allowed, config.text_k).tolist():
                chosen.setdefault(row, TEXT)
    if config.popular_k:
        # Ask for enough to survive the exclusions; with a filter, look through the whole ranking.
        wanted = len(context.item_ids) if allowed is not None else config.popular_k + len(banned) + len(chosen)
        fresh = [r for r in usable(context.popular(query.t, config.popular_days, wanted)) if r not in chosen]
        for row in fresh[: config.popular_k]:
            chosen[row] = POPULAR

    items = np.fromiter(chosen.keys(), dtype=np.int64, count=len(chosen))
    sources = np.fromiter(chosen.values(), dtype=np.int64, count=len(chosen))
    interest = np.asarray([interest_of.get(r, np.nan) for r in items.tolist()], dtype=np.float64)
    missing = np.isnan(interest)
    if missing.any() and query.user_vector is not None and item_vectors is not None:
        vectors = item_vectors(items[missing])
        interest[missing] = vectors @ np.asarray(query.user_vector, dtype=np.float32)
    ranks = np.asarray([rank_of.get(r, config.retrieval_k) for r in items.tolist()], dtype=np.int64)
    return np.full(len(items), q_index, np.int64), items, sources, interest, ranks
