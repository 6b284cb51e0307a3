"""`Recommender`: the one code path from a request to a ranked top-k, in-process or behind HTTP.

    rec = Recommender.load(store="/srv/recsys", data="data/ml", encoder="champion", ranker="champion")
    rec.recommend(user_id="42", k=10)                      # a known user: cached or fresh vector
    rec.recommend(history=["318", "296"], k=10)            # recent item ids, newest first
    rec.recommend(text="space opera with robots", k=10)    # free text through the item tower
    rec.similar("318", k=10)                               # items near an item
    rec.add_events([{"event_id": "e1", "user_id": "42", "item_id": "318"}])  # logged, seen at once

A request reads the current `ServingState` once and uses only it (see `state.py`), so `refresh`
(the hot-swap check the poller runs every few seconds) can replace the state at any moment.

Online flow (docs/architecture.md, one `/v1/recommend` request):
1. User vector. `user_id`: the nightly job's cached vector when it is fresh (its `last_ts` equals
   the user's newest interaction in the served log), else the user's history (newest first, capped
   as in the nightly job) through the encoder's user tower (`EncoderBundle.user_vectors`).
   `history`: those ids through the tower (unknown ids are dropped and reported; none known is a
   `DataError`). `text`: the item tower, projected into the index space. An unknown user, or a
   vector that comes out empty, is a cold start.
2. Retrieval: FAISS top-k (top-`candidates` when a ranker is served), excluding the user's
   history when `exclude_seen`, restricted by `filters`.
3. Ranking: a `ranking.protocol.RankRequest` to the ranker, which may add co-visitation/popular
   candidates and returns the order. No usable ranker: retrieval order. A ranker that fails on a
   request is logged and that request is served in retrieval order.
4. Cold start: the ranker's own fallbacks when it has any (topped up with recent popularity when a
   filter leaves them short of k), else recent popularity.

Real-time events (`add_events`, `POST /v1/events`): appended to the SQLite event log (`events.py`,
fsynced before the call returns), then laid over the catalog's histories (`live.py`), so the user's
next request excludes the item and encodes the updated history (a user with live events never gets
the nightly vector: it predates them). The log is replayed at load and tailed by the poller.

Hot swap (`refresh`, the poller): `hotswap.py`; input checks: `validation.py`. A request's inputs
travel through the stages as one frozen `QueryContext`. `warm_up()` runs one request of each kind
before the first client does (the HTTP app calls it before it reports ready).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ranking.protocol import RankRequest
from recsys.data.dataset import Dataset
from recsys.embedding_store import StoreLayout
from recsys.errors import DataError, RecsysError
from recsys.index import IndexStore
from recsys.index.store import CURRENT_FILE
from recsys.serving.batcher import EncodeBatcher, SearchBatcher, UserTask
from recsys.serving.catalog import Catalog
from recsys.serving.config import ServingConfig
from recsys.serving.errors import NotReadyError, UnknownItemError
from recsys.serving.events import EventLog
from recsys.serving.hotswap import HotSwap, iso
from recsys.serving.live import LiveHistories
from recsys.serving.models import EncoderSource, RankerSource
from recsys.serving.results import EventsResult, Recommendation, RecommendResult
from recsys.serving.state import ServingState
from recsys.serving.validation import (
    check_events,
    check_flag,
    check_history,
    check_id,
    check_k,
    check_text,
    query_kind,
)

if TYPE_CHECKING:
    from recsys.config import Settings

log = logging.getLogger("recsys.serving")


@dataclass(frozen=True)
class QueryContext:
    """One request's inputs, fixed once read: what retrieval, ranking and the cold-start path work from."""

    state: ServingState  # read once at the start; a hot swap mid-request does not reach it
    query: str  # "user", "history" or "text"
    k: int
    exclude: list[str]  # never served: the history when `exclude_seen`
    wanted: dict[str, frozenset[str]]  # the checked filters
    explain: bool
    timings: dict[str, float]  # milliseconds by stage, filled in as the request runs
    user_id: str | None = None
    newest: list[str] = field(default_factory=list)  # the history, newest first
    stamps: np.ndarray | None = None  # its interaction times (µs since the epoch), for a known user


class Recommender:
    """The serving facade (see the module doc). Build it with `Recommender.load`."""

    def __init__(
        self,
        swap: HotSwap,
        *,
        config: ServingConfig,
        stats: dict[str, Any],
        stats_lock: threading.Lock,
        events: EventLog | None = None,
    ) -> None:
        self._swap = swap
        self.events = events  # None: `add_events` is refused (a host's recommender built without a log)
        self.live = LiveHistories()
        if events is not None:
            replayed = self.live.catch_up(events)
            log.info("event log %s: %d events replayed into the histories", events.path, replayed)
        self.config = config
        self.stats = stats  # counters (swaps and refusals counted by the hot swap), under `_stats_lock`
        self._stats_lock = stats_lock
        self._batcher = EncodeBatcher(config.max_batch)
        self._searcher = SearchBatcher(config.max_batch, threads=config.threads)
        self._rank_slots = threading.BoundedSemaphore(config.rank_concurrency)
        self._warm_up: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------------ load
    @classmethod
    def load(
        cls,
        store: str | Path,
        data: str | Path | Dataset,
        encoder: Any = "champion",
        ranker: Any = "champion",
        settings: Settings | None = None,
        config: ServingConfig | None = None,
    ) -> Recommender:
        """Load the CURRENT index of `store` with the encoder it was built with, the dataset and the ranker.

        `store`: a nightly store or an `IndexStore` root (`StoreLayout.served`).
        `encoder`: registry reference, bundle/run folder or `LoadedEncoder`. If it is an alias that
        already moved past the CURRENT index's encoder, the index's own pinned encoder is served and
        the new one waits (as after a hot swap); a folder that did not build CURRENT is a `ConfigError`.
        `ranker`: registry reference, folder, a `CandidateRanker` object, or None. `NotReadyError`
        when nothing is published yet.
        """
        config = config or ServingConfig()
        if config.threads:
            # local (c): torch and faiss stay out of `import recsys.serving` (tests/test_service.py guards it)
            import faiss
            import torch

            torch.set_num_threads(config.threads)
            faiss.omp_set_num_threads(config.threads)
        layout = StoreLayout.served(store)

        index_store = IndexStore(layout.index)
        current = index_store.current_version()
        if current is None:
            if not (index_store.root / CURRENT_FILE).is_file():
                raise NotReadyError(f"no index has been published in {layout.index} yet: run `recsys embed` first")
            # Not "nothing published": a publish always writes a version name. Say so, and start on the newest
            # published version that passes its checks (HotSwap.load), if there is one.
            log.warning(
                "CURRENT in %s is empty (a hand edit or a cut-short write?): starting on the newest "
                "published version that passes its checks",
                layout.index,
            )
            if not index_store.versions():
                raise NotReadyError(
                    f"CURRENT in {layout.index} is empty and no index version is published: run `recsys embed`"
                )
        catalog = _catalog(data, config)
        encoder_source = EncoderSource(encoder, settings=settings, cache_dir=layout.encoders, device=config.device)
        ranker_source = RankerSource(ranker, settings=settings, cache_dir=layout.rankers, embeddings=layout.embeddings)
        stats: dict[str, Any] = {
            "swaps": 0,
            "refusals": {},
            "user_vector": {"cached": 0, "encoded": 0},
            "cold_start": 0,
            "ranker_errors": 0,
            "events": {"accepted": 0, "duplicates": 0, "unknown_items": 0},
        }
        stats_lock = threading.Lock()
        swap = HotSwap.load(index_store, current, catalog, encoder_source, ranker_source, config, stats, stats_lock)
        events = EventLog(config.event_log or layout.events)
        return cls(swap, config=config, stats=stats, stats_lock=stats_lock, events=events)

    # ---------------------------------------------------------------------------------- facts
    @property
    def state(self) -> ServingState:
        return self._swap.state

    @property
    def index_store(self) -> IndexStore:
        return self._swap.index_store

    @property
    def index_version(self) -> str:
        return self._swap.state.index_version

    @property
    def encoder_version(self) -> str:
        return self._swap.state.encoder_version

    @property
    def ranker_version(self) -> str | None:
        return self._swap.state.ranker_version

    # ------------------------------------------------------------------------------ requests
    def recommend(
        self,
        user_id: str | None = None,
        history: Sequence[str] | None = None,
        text: str | None = None,
        *,
        k: int = 10,
        exclude_seen: bool = True,
        filters: Mapping[str, str | Sequence[str]] | None = None,
        explain: bool = False,
    ) -> RecommendResult:
        """Top-k for a user id, a list of recent item ids (newest first) or a free text; exactly one of them.

        `filters` restricts results by item columns (`{"category": "Comedy"}`; see `catalog.py`).
        Bad input raises `DataError` naming the field in `column`.
        """
        started = time.perf_counter()
        state = self._swap.state
        query = query_kind(user_id, history, text)
        k = check_k(k, self.config)
        check_flag(exclude_seen, "exclude_seen")
        wanted = state.catalog.check_filters(filters)
        timings: dict[str, float] = {}
        newest: list[str] = []
        stamps: np.ndarray | None = None
        ignored: list[str] = []
        vector: np.ndarray | None = None
        how: str | None = None
        if query == "user":
            user_id = check_id(user_id, "user_id")
            found, live = self.live.history(state.catalog, user_id)
            if found is not None:
                newest, stamps = found.item_ids, found.ts_us
                vector = None if live else state.users.fresh(user_id, found.last_ts_us)
                how = "cached"
                if vector is None:
                    vector, how = self._user_vector(state, newest, stamps, timings), "encoded"
        elif query == "history":
            ids = check_history(history, self.config)
            newest = [i for i in ids if i in state.catalog]
            ignored = list(dict.fromkeys(i for i in ids if i not in state.catalog))
            if not newest:
                raise DataError(f"none of the {len(ids)} item ids is in the catalog", column="item_ids")
            vector, how = self._user_vector(state, newest, None, timings), "encoded"
        else:
            text = check_text(text, self.config)
            vector = self._timed(timings, "encode", self._batcher.submit, "query_text", state.encoder.bundle, text)
        request = QueryContext(
            state,
            query,
            k,
            newest if exclude_seen and query != "text" else [],
            wanted,
            explain,
            timings,
            user_id,
            newest,
            stamps,
        )
        cold = vector is None or not np.isfinite(vector).all() or not float(np.linalg.norm(vector)) > 0
        if cold:
            items, mode, ranker_ordered = self._cold(request)
            how = None
        else:
            items, mode = self._retrieve(request, np.asarray(vector, dtype=np.float32))
            ranker_ordered = mode == "ranked"
        timings["total"] = (time.perf_counter() - started) * 1000
        self._count(how, cold)
        return RecommendResult(
            items,
            cold,
            mode,
            query,
            state.index_version,
            state.encoder_version,
            state.ranker_version if ranker_ordered else None,
            how,
            ignored,
            {name: round(value, 3) for name, value in timings.items()},
        )

    def similar(
        self, item_id: str, k: int = 10, filters: Mapping[str, str | Sequence[str]] | None = None
    ) -> RecommendResult:
        """Items nearest to `item_id` in the index space (itself excluded); `UnknownItemError` if unindexed."""
        started = time.perf_counter()
        state = self._swap.state
        item_id = check_id(item_id, "item_id")
        k = check_k(k, self.config)
        wanted = state.catalog.check_filters(filters)
        if not len(state.index.rows_of([item_id])):
            raise UnknownItemError(f"item {item_id!r} is not in the served index", column="item_id")
        timings: dict[str, float] = {}
        vector = state.encoder.bundle.as_queries(state.index.reconstruct([item_id]))[0]  # like a one-item user
        ids, scores = self._search(state, vector, k, [item_id], wanted, timings)
        items = [
            Recommendation(i, state.catalog.title_of.get(i), _finite(s), r + 1, "retrieval")
            for r, (i, s) in enumerate(zip(ids, scores, strict=True))
        ]
        timings["total"] = (time.perf_counter() - started) * 1000
        return RecommendResult(
            items,
            False,
            "retrieval",
            "item",
            state.index_version,
            state.encoder_version,
            timings_ms={name: round(value, 3) for name, value in timings.items()},
        )

    def add_events(self, events: Sequence[Mapping[str, Any]]) -> EventsResult:
        """Log a batch of events durably, then apply them to the users' histories; what happened to each.

        `events`: 1 to `config.max_events` mappings `{event_id, user_id, item_id, ts?, event?, weight?}`
        (`validation.check_events`; bad input is a `DataError` naming `events[i].field`). An item the
        catalog lacks is not logged and reported `unknown_item`; an `event_id` already logged is a
        `duplicate` (a retry), the rest are `accepted`. Returns only after the log's fsynced commit.
        """
        if self.events is None:
            raise NotReadyError("this recommender has no event log")
        checked = check_events(events, self.config)
        catalog = self._swap.state.catalog
        known = [event for event in checked if event.item_id in catalog]
        inserted, commit_ms = self.events.append(known) if known else ([], 0.0)
        self.live.apply(event for event, new in zip(known, inserted, strict=True) if new)
        new_of = {id(event): new for event, new in zip(known, inserted, strict=True)}
        statuses = [
            "unknown_item" if id(event) not in new_of else ("accepted" if new_of[id(event)] else "duplicate")
            for event in checked
        ]
        result = EventsResult([event.event_id for event in checked], statuses, round(commit_ms, 3))
        with self._stats_lock:
            counts = self.stats["events"]
            counts["accepted"] += result.accepted
            counts["duplicates"] += result.duplicates
            counts["unknown_items"] += result.unknown_items
        return result

    # ----------------------------------------------------------------------------- internals
    def _user_vector(
        self, state: ServingState, newest: list[str], stamps: np.ndarray | None, timings: dict[str, float]
    ) -> np.ndarray:
        """The user tower on a history's catalog items (newest first), through the encoder worker.

        `EncoderBundle.user_vectors` caps it like the nightly job; `pooled` reads the index's stored
        vectors, as the nightly job reads the stored text vectors.
        """
        keep = [j for j, item in enumerate(newest) if item in state.catalog]
        seconds = None if stamps is None else (np.asarray(stamps, dtype=np.float64)[keep] / 1e6).tolist()
        # The catalog's texts and the index's vectors are the state's own objects: the worker encodes
        # the requests that share them in one call.
        task = UserTask([newest[j] for j in keep], seconds, state.catalog.text_of, state.item_vectors)
        return self._timed(timings, "encode", self._batcher.submit, "user", state.encoder.bundle, task)

    def _retrieve(self, request: QueryContext, vector: np.ndarray) -> tuple[list[Recommendation], str]:
        state, k = request.state, request.k
        # A free-text query is semantic search: the ranker learned to order candidates for a user's
        # history (popularity, co-visitation with recent items), which would drown the query's meaning.
        ranker = state.ranker if request.query != "text" else None
        fetch = max(k, self.config.candidates) if ranker is not None else k
        ids, scores = self._search(state, vector, fetch, request.exclude, request.wanted, request.timings)
        if ranker is not None:
            ranked = self._rank(request, ids, scores, vector)
            if ranked is not None:
                return ranked, "ranked"
        titles = state.catalog.title_of
        items = [
            Recommendation(i, titles.get(i), _finite(s), r + 1, "retrieval")
            for r, (i, s) in enumerate(zip(ids[:k], scores[:k], strict=True))
        ]
        if request.explain:
            items = self._explain_retrieval(request, items)
        return items, "retrieval"

    def _search(
        self,
        state: ServingState,
        vector: np.ndarray,
        k: int,
        exclude: Sequence[str],
        wanted: dict[str, frozenset[str]],
        timings: dict[str, float],
    ) -> tuple[list[str], list[float]]:
        """Top-k through the search worker, which batches concurrent requests into one FAISS call."""
        mask = state.masks.mask(wanted)
        return self._timed(
            timings,
            "search",
            self._searcher.submit,
            "search",
            state.index,
            (vector, min(k, len(state.index)), exclude, mask),
        )

    def _rank(
        self, request: QueryContext, candidates: list[str], interest: list[float], vector: np.ndarray | None = None
    ) -> list[Recommendation] | None:
        """Ask the ranker; None (and a logged error) when it fails, so the caller serves retrieval order.

        The user vector and the index's stored item vectors go along, so the ranker scores its
        fallback candidates' interest and the similarity features exactly as in training.
        """
        state, k, exclude, stamps = request.state, request.k, request.exclude, request.stamps
        allowed = frozenset(state.catalog.matching(request.wanted)) if request.wanted else None
        history_ts = None
        if stamps is not None:
            history_ts = [datetime.fromtimestamp(int(us) / 1e6, tz=timezone.utc) for us in stamps[::-1]]
        # Callers ask only when the state has a ranker; the state makes its ItemVectors when built.
        assert state.ranker is not None and state.item_vectors is not None
        # Stored vectors (NaN rows for items the index lacks: new since the last nightly run); see ItemVectors.
        item_vectors = state.item_vectors.for_request()
        ranker_items = getattr(state.ranker, "item_ids", None)
        item_matrix = state.item_vectors.aligned(ranker_items) if ranker_items is not None else None
        ranked = RankRequest(
            history=list(reversed(request.newest)),
            candidates=list(candidates),
            interest=list(interest),
            k=k,
            user_id=request.user_id,
            history_ts=history_ts,
            exclude=frozenset(exclude),
            allowed=allowed,
            user_vector=None if vector is None else np.asarray(vector, np.float32).ravel().tolist(),
            item_vectors=item_vectors,
            item_matrix=item_matrix,
        )
        started = time.perf_counter()
        try:
            with self._rank_slots:  # a few at a time: more threads only fight over the GIL (ServingConfig)
                result = state.ranker.rank(ranked, explain=request.explain)
        except Exception:
            log.exception("ranker %s failed; serving this request in retrieval order", state.ranker_version)
            with self._stats_lock:
                self.stats["ranker_errors"] += 1
            return None
        finally:
            request.timings["rank"] = (time.perf_counter() - started) * 1000
        titles, banned = state.catalog.title_of, set(exclude)
        explanations: Sequence[dict[str, Any] | None] = (
            result.explanations if result.explanations else [None] * len(result.item_ids)
        )
        items: list[Recommendation] = []
        for item, score, source, why in zip(result.item_ids, result.scores, result.sources, explanations, strict=False):
            if item in banned or (allowed is not None and item not in allowed) or item not in state.catalog:
                continue  # the contract says the ranker removes these; never serve them if it does not
            items.append(
                Recommendation(
                    item,
                    titles.get(item),
                    _finite(score),
                    len(items) + 1,
                    str(source),
                    why if request.explain else None,
                )
            )
            if len(items) == k:
                break
        if items and len(items) < k:
            # A ranker's fallbacks can run short under a filter (its popular candidates are the overall top
            # few, then filtered): top up with catalog popularity, unscored, after the ranked items.
            banned.update(item.item_id for item in items)
            items += self._popular(
                state, k - len(items), banned, allowed, request.explain, start=len(items), scored=False
            )
        return items

    def _cold(self, request: QueryContext) -> tuple[list[Recommendation], str, bool]:
        """No usable user vector: the ranker's own fallbacks, else recent popularity.

        Either way the mode is `popular`: the items are popularity fallbacks, whoever ordered them
        (`ranker_version` says when the ranker did); `ranked` would claim a personalised list.
        """
        state = request.state
        if state.ranker is not None:
            ranked = self._rank(request, [], [])
            if ranked:
                return ranked, "popular", True
        allowed = state.catalog.matching(request.wanted) if request.wanted else None
        return self._popular(state, request.k, set(request.exclude), allowed, request.explain), "popular", False

    @staticmethod
    def _popular(
        state: ServingState,
        k: int,
        banned: set[str],
        allowed: set[str] | frozenset[str] | None,
        explain: bool,
        start: int = 0,
        scored: bool = True,
    ) -> list[Recommendation]:
        """Up to `k` items by recent popularity (then all-time), ranks from `start + 1`.

        `scored=False` (top-ups after a ranker's list) leaves `score` None: counts are not ranker scores.
        """
        catalog = state.catalog
        items: list[Recommendation] = []
        if k <= 0:
            return items
        for position, (item, count) in enumerate(zip(catalog.popular, catalog.popular_counts, strict=True)):
            if item in banned or (allowed is not None and item not in allowed):
                continue
            why = None
            if explain:
                window = f"last {catalog.popular_days:g} days" if position < catalog.popular_in_window else "all time"
                why = {"interactions": float(count), "window": window}
            items.append(
                Recommendation(
                    item,
                    catalog.title_of.get(item),
                    float(count) if scored else None,
                    start + len(items) + 1,
                    "popular",
                    why,
                )
            )
            if len(items) == k:
                break
        return items

    def _explain_retrieval(self, request: QueryContext, items: list[Recommendation]) -> list[Recommendation]:
        """Each result's closest recent history item (by the index's own vectors); text: its interest only."""
        state = request.state
        index = state.index
        rows = index.rows_of(request.newest[: self.config.explain_history])
        if request.query == "text" or not len(rows) or not items:
            return [replace(item, explanation={"interest": item.score}) for item in items]
        history_ids = index.item_ids[rows].tolist()
        content = state.encoder.bundle.content_dim  # a popularity prior column is not similarity
        similarity = (
            index.reconstruct([item.item_id for item in items])[:, :content]
            @ index.reconstruct(history_ids)[:, :content].T
        )
        best = similarity.argmax(axis=1)
        return [
            replace(
                item,
                explanation={
                    "interest": item.score,
                    "because_of": history_ids[int(b)],
                    "because_of_title": state.catalog.title_of.get(history_ids[int(b)]),
                    "similarity": round(float(similarity[j, b]), 6),
                },
            )
            for j, (item, b) in enumerate(zip(items, best, strict=True))
        ]

    @staticmethod
    def _timed(timings: dict[str, float], stage: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - started) * 1000

    def _count(self, how: str | None, cold: bool) -> None:
        with self._stats_lock:
            if how is not None:
                self.stats["user_vector"][how] += 1
            if cold:
                self.stats["cold_start"] += 1

    # ------------------------------------------------------------------------------- warm-up
    @property
    def warmed_up(self) -> bool:
        return self._warm_up is not None

    def warm_up(self, k: int = 10) -> dict[str, Any]:
        """Run one request of each kind now, so that the first clients do not pay for lazy initialisation.

        The first requests after a start measured 200-250 ms against ~15 ms warm: the encoder's first
        forward passes (history and text paths), the worker threads, FAISS's thread pool and the ranker's
        first predictions (with and without explanations) all start on first use. A query the served
        models cannot answer (free text with an id-only tower) is skipped. Not counted in `stats`.
        Returns what ran (also `status()["warm_up"]`): queries, the stages they went through, milliseconds.
        """
        started = time.perf_counter()
        state = self._swap.state
        with self._stats_lock:
            counts = {"user_vector": dict(self.stats["user_vector"]), "cold_start": self.stats["cold_start"]}
        ran: list[str] = []
        skipped: dict[str, str] = {}
        stages: set[str] = set()
        for name, call in _warm_up_calls(self, state, k):
            try:
                stages.update(call().timings_ms)
                ran.append(name)
            except RecsysError as exc:  # the served models refuse this kind (free text with an id-only tower)
                skipped[name] = str(exc)
                log.info("warm-up: no %s query (%s)", name, exc)
            except Exception as exc:  # a warm-up never blocks readiness: the request path reports its own errors
                skipped[name] = f"{type(exc).__name__}: {exc}"
                log.warning("warm-up %s query failed", name, exc_info=True)
        with self._stats_lock:
            self.stats.update(counts)
        self._warm_up = {
            "queries": ran,
            "stages": sorted(stages),
            "skipped": skipped,
            "ms": round((time.perf_counter() - started) * 1000, 1),
        }
        log.info("warmed up in %.0f ms (%s)", self._warm_up["ms"], ", ".join(ran) or "nothing ran")
        return self._warm_up

    # ------------------------------------------------------------------------------ hot swap
    def refresh(self) -> list[str]:
        """Pick up a new CURRENT index, moved aliases and a rewritten dataset; returns what happened.

        Everything new is loaded and validated while the old state keeps serving; the swap is one
        assignment. Failures are refused (logged, listed in `status()`), never raised (`hotswap.py`).
        """
        return self._swap.refresh() + self._tail_events()

    def _tail_events(self) -> list[str]:
        """Apply what other processes (workers of one service) appended to the shared event log."""
        if self.events is None:
            return []
        try:
            added = self.live.catch_up(self.events)
        except Exception:  # a locked or unreadable log must not stop the hot-swap checks
            log.warning("could not read new events from %s", self.events.path, exc_info=True)
            return []
        return [f"{added} events from the log"] if added else []

    def start_polling(self, interval: float | None = None) -> None:
        """Run `refresh` every `interval` seconds (default: the config's) in a daemon thread."""
        self._swap.start_polling(interval, also=self._tail_events)

    # -------------------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """What is served, what waits, what was refused: the body of `/readyz`."""
        swap = self._swap
        state = swap.state
        return {
            "ready": True,
            "index_version": state.index_version,
            "index_note": swap.index_note,
            "index_kind": state.index.kind,
            "items": len(state.index),
            "encoder_version": state.encoder_version,
            "encoder_ref": swap.encoder_source.ref,
            "tower": state.encoder.bundle.tower,
            "pending_encoder": swap.pending_version,
            "ranker": state.ranker_version,
            "mode": state.mode,
            "ranker_note": state.ranker_note,
            "users_cached": len(state.users),
            "user_vectors_note": state.users.note,
            "dataset": state.catalog.name,
            "interactions": state.catalog.interactions,
            "loaded_at": iso(state.loaded_at),
            "last_refresh": iso(swap.last_refresh) if swap.last_refresh else None,
            "swaps": self.stats["swaps"],
            "refused": swap.refusals(),
            "warm_up": self._warm_up,
            "event_log": None if self.events is None else str(self.events.path),
            "live_events": len(self.live),
            "live_users": self.live.users,
        }

    def close(self) -> None:
        """Stop the poller and the encoder worker."""
        self._swap.stop_polling()
        self._batcher.close()
        self._searcher.close()
        if self.events is not None:
            self.events.close()

    def __enter__(self) -> Recommender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------ helpers
def _catalog(data: Any, config: ServingConfig) -> Catalog:
    if isinstance(data, Dataset):
        return Catalog(data, popular_days=config.popular_days)
    return Catalog.from_folder(data, config.popular_days)


def _warm_up_calls(rec: Recommender, state: ServingState, k: int) -> list[tuple[str, Any]]:
    """(name, call) of the warm-up requests: a history (user tower, search, ranker), a cached user with
    explanations, an unknown user (the cold-start path), a free text (text path) and a similar item."""
    catalog = state.catalog
    history = [item for item in catalog.popular[:5] if item in catalog]
    cached = next(iter(state.users.row_of), None)
    calls: list[tuple[str, Any]] = []
    if history:
        calls.append(("history", lambda: rec.recommend(history=history, k=k)))
        calls.append(("text", lambda: rec.recommend(text=catalog.title_of.get(history[0]) or history[0], k=k)))
    if cached is not None:
        calls.append(("user", lambda: rec.recommend(user_id=cached, k=k, explain=True)))
    calls.append(("cold", lambda: rec.recommend(user_id="\u0000warm-up: no such user", k=k)))
    if len(state.index):
        anchor = str(state.index.item_ids[0])
        calls.append(("similar", lambda: rec.similar(anchor, k=k)))
    return calls


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None
