"""`Recommender`: the one code path from a request to a ranked top-k, in-process or behind HTTP.

    rec = Recommender.load(store="/srv/recsys", data="data/ml", encoder="champion", ranker="champion")
    rec.recommend(user_id="42", k=10)                      # a known user: cached or fresh vector
    rec.recommend(history=["318", "296"], k=10)            # recent item ids, newest first
    rec.recommend(text="space opera with robots", k=10)    # free text through the item tower
    rec.similar("318", k=10)                               # items near an item

A request reads the current `ServingState` once and uses only it (see `state.py`), so `refresh`
(the hot-swap check the poller runs every few seconds) can replace the state at any moment.

Online flow (DESIGN §3, §5):
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

Hot swap (`refresh`): a new CURRENT index is loaded in the background with full checksum checks
and paired with the encoder it was built with; a registry alias that moved to a new encoder loads
that encoder but only swaps once an index built with it is CURRENT; a moved ranker alias loads the
new ranker (pinned to the version the alias named), which serves only with the encoder it was trained
on: one trained on the pending encoder waits for that encoder's index, one trained on any other is
refused while the previous ranker keeps serving; a rewritten dataset folder is reloaded. Anything
that fails validation is refused, logged and listed in `status()["refused"]`, and the previous state
keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.embedding_store import StoreLayout
from recsys.errors import ConfigError, DataError, RecsysError
from recsys.serving.batcher import EncodeBatcher, SearchBatcher, UserTask
from recsys.serving.catalog import Catalog, folder_signature
from recsys.serving.config import ServingConfig
from recsys.serving.errors import NotReadyError, UnknownItemError
from recsys.serving.models import EncoderSource, RankerSource, ranker_conflict
from recsys.serving.results import Recommendation, RecommendResult
from recsys.serving.state import ServingState, load_index

if TYPE_CHECKING:
    from encoders.registry import LoadedEncoder
    from recsys.config import Settings
    from recsys.data.dataset import Dataset
    from recsys.index import IndexStore

log = logging.getLogger("recsys.serving")
MAX_ID_CHARS = 256
REFUSALS_KEPT = 20


class Recommender:
    """The serving facade (see the module doc). Build it with `Recommender.load`."""

    def __init__(self, state: ServingState, *, index_store: IndexStore, encoder_source: EncoderSource,
                 ranker_source: RankerSource, config: ServingConfig, ranker_obj: Any = None,
                 ranker_loaded: str | None = None, ranker_tried: str | None = None,
                 pending: LoadedEncoder | None = None) -> None:
        self._state = state
        self.index_store = index_store
        self.config = config
        self._encoder_source = encoder_source
        self._ranker_source = ranker_source
        self._ranker_obj = ranker_obj            # loaded ranker, served only while compatible
        self._ranker_loaded = ranker_loaded      # registry version it came from
        self._ranker_tried = ranker_tried or ranker_loaded  # last registry version tried (never retried)
        self._pending = pending                  # encoder an alias moved to, waiting for its index
        self._refresh_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._refusals: deque[dict[str, Any]] = deque(maxlen=REFUSALS_KEPT)
        self._refused_index: dict[str, frozenset[str]] = {}
        self._refused_encoders: set[str] = set()
        self._refused_rankers: set[tuple[str, str]] = set()  # (ranker version, encoder version)
        self._refused_dataset: tuple | None = None
        self._last_refresh: float | None = None
        self._last_error: str | None = None
        self.stats: dict[str, Any] = {"swaps": 0, "refusals": {}, "user_vector": {"cached": 0, "encoded": 0},
                                      "cold_start": 0, "ranker_errors": 0}
        self._batcher = EncodeBatcher(config.max_batch)
        self._searcher = SearchBatcher(config.max_batch, threads=config.threads)
        self._rank_slots = threading.BoundedSemaphore(config.rank_concurrency)
        self._poll_stop = threading.Event()
        self._poller: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ load
    @classmethod
    def load(cls, store: str | Path, data: str | Path | Dataset, encoder: Any = "champion", ranker: Any = "champion",
             settings: Settings | None = None, config: ServingConfig | None = None) -> Recommender:
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
            import faiss
            import torch

            torch.set_num_threads(config.threads)
            faiss.omp_set_num_threads(config.threads)
        layout = StoreLayout.served(store)
        from recsys.index import IndexStore

        index_store = IndexStore(layout.index)
        current = index_store.current_version()
        if current is None:
            raise NotReadyError(f"no index has been published in {layout.index} yet: run `recsys embed` first")
        catalog = _catalog(data, config)
        encoder_source = EncoderSource(encoder, settings=settings, cache_dir=layout.encoders, device=config.device)
        built_with = str(index_store.metadata(current).get("encoder_version"))
        loaded, pending = encoder_source.load(), None
        if loaded.version != built_with:
            pinned = (index_store.metadata(current).get("extra") or {}).get("model_uri")
            if encoder_source.movable and pinned:
                pending, loaded = loaded, encoder_source.load(str(pinned))
                log.info("encoder %s waits for an index built with it; serving %s with index %s",
                         pending.version, loaded.version, current)
            if loaded.version != built_with:
                raise ConfigError(f"the CURRENT index {current} was built with encoder {built_with}, but encoder "
                                  f"{encoder_source.ref} is {loaded.version}: run `recsys embed` with this encoder "
                                  "or serve the one the index was built with")
        index, metadata, users = load_index(index_store, current, loaded)
        ranker_source = RankerSource(ranker, settings=settings, cache_dir=layout.rankers)
        ranker_obj, note, ranker_loaded = None, None, None
        if ranker_source.wanted:
            if ranker_source.movable and ranker_source.loader()[0] is not None:
                try:
                    ranker_loaded = ranker_source.wanted_version()
                except RecsysError as exc:
                    note = f"ranker {ranker_source.ref!r}: {exc}"
            if note is None:
                ranker_obj, note = ranker_source.load(catalog.dataset, RankerSource.pinned(ranker_loaded))
        else:
            note = "no ranker configured"
        served, mismatch = ranker_obj, None
        if ranker_obj is not None:
            mismatch = _ranker_mismatch(ranker_obj, ranker_loaded, loaded, pending)
            if mismatch is not None:
                served, note = None, f"{mismatch[0]}: serving retrieval order"
        if note and ranker_source.wanted and mismatch is None:
            log.info("serving retrieval order: %s", note)
        state = ServingState(loaded, index, current, metadata, users, catalog, served, note)
        log.info("serving index %s (%d items, %s) with encoder %s, ranker %s", current, len(index), index.kind,
                 loaded.version, state.ranker_version)
        recommender = cls(state, index_store=index_store, encoder_source=encoder_source, ranker_source=ranker_source,
                          config=config, ranker_obj=ranker_obj, pending=pending, ranker_tried=ranker_loaded,
                          ranker_loaded=ranker_loaded if ranker_obj is not None else None)
        if mismatch is not None:
            recommender._ranker_mismatch_seen(ranker_obj, ranker_loaded, loaded.version, *mismatch)
        return recommender

    # ---------------------------------------------------------------------------------- facts
    @property
    def state(self) -> ServingState:
        return self._state

    @property
    def index_version(self) -> str:
        return self._state.index_version

    @property
    def encoder_version(self) -> str:
        return self._state.encoder_version

    @property
    def ranker_version(self) -> str | None:
        return self._state.ranker_version

    # ------------------------------------------------------------------------------ requests
    def recommend(self, user_id: str | None = None, history: Sequence[str] | None = None, text: str | None = None, *,
                  k: int = 10, exclude_seen: bool = True, filters: Mapping[str, str | Sequence[str]] | None = None,
                  explain: bool = False) -> RecommendResult:
        """Top-k for a user id, a list of recent item ids (newest first) or a free text; exactly one of them.

        `filters` restricts results by item columns (`{"category": "Comedy"}`; see `catalog.py`).
        Bad input raises `DataError` naming the field in `column`.
        """
        started = time.perf_counter()
        state = self._state
        given = [name for name, value in (("user_id", user_id), ("history", history), ("text", text))
                 if value is not None]
        if len(given) != 1:
            raise DataError(f"give exactly one of user_id, history or text (got {', '.join(given) or 'none'})",
                            column="query")
        k = self._check_k(k)
        if not isinstance(exclude_seen, bool):
            raise DataError("must be true or false", column="exclude_seen")
        wanted = state.catalog.check_filters(filters)
        timings: dict[str, float] = {}
        newest: list[str] = []
        stamps: np.ndarray | None = None
        ignored: list[str] = []
        vector: np.ndarray | None = None
        how: str | None = None
        if user_id is not None:
            query = "user"
            user_id = _check_id(user_id, "user_id")
            found = state.catalog.history(user_id)
            if found is not None:
                newest, stamps = found.item_ids, found.ts_us
                vector = state.users.fresh(user_id, found.last_ts_us)
                how = "cached"
                if vector is None:
                    vector, how = self._user_vector(state, newest, stamps, timings), "encoded"
        elif history is not None:
            query = "history"
            ids = self._check_history(history)
            newest = [i for i in ids if i in state.catalog]
            ignored = list(dict.fromkeys(i for i in ids if i not in state.catalog))
            if not newest:
                raise DataError(f"none of the {len(ids)} item ids is in the catalog", column="item_ids")
            vector, how = self._user_vector(state, newest, None, timings), "encoded"
        else:
            query = "text"
            text = self._check_text(text)
            vector = self._timed(timings, "encode", self._batcher.submit, "query_text", state.encoder.bundle, text)
        exclude = newest if exclude_seen and query != "text" else []
        cold = vector is None or not np.isfinite(vector).all() or not float(np.linalg.norm(vector)) > 0
        if cold:
            items, mode = self._cold(state, user_id, newest, stamps, k, exclude, wanted, explain, timings)
            how = None
        else:
            items, mode = self._retrieve(state, np.asarray(vector, dtype=np.float32), user_id, newest, stamps, k,
                                         exclude, wanted, explain, query, timings)
        timings["total"] = (time.perf_counter() - started) * 1000
        self._count(how, cold)
        return RecommendResult(items, cold, mode, query, state.index_version, state.encoder_version,
                               state.ranker_version if mode == "ranked" else None, how, ignored,
                               {name: round(value, 3) for name, value in timings.items()})

    def similar(self, item_id: str, k: int = 10, filters: Mapping[str, str | Sequence[str]] | None = None
                ) -> RecommendResult:
        """Items nearest to `item_id` in the index space (itself excluded); `UnknownItemError` if unindexed."""
        started = time.perf_counter()
        state = self._state
        item_id = _check_id(item_id, "item_id")
        k = self._check_k(k)
        wanted = state.catalog.check_filters(filters)
        if not len(state.index.rows_of([item_id])):
            raise UnknownItemError(f"item {item_id!r} is not in the served index", column="item_id")
        timings: dict[str, float] = {}
        vector = state.encoder.bundle.as_queries(state.index.reconstruct([item_id]))[0]  # like a one-item user
        ids, scores = self._search(state, vector, k, [item_id], wanted, timings)
        items = [Recommendation(i, state.catalog.title_of.get(i), _finite(s), r + 1, "retrieval")
                 for r, (i, s) in enumerate(zip(ids, scores, strict=True))]
        timings["total"] = (time.perf_counter() - started) * 1000
        return RecommendResult(items, False, "retrieval", "item", state.index_version, state.encoder_version,
                               timings_ms={name: round(value, 3) for name, value in timings.items()})

    # ----------------------------------------------------------------------------- internals
    def _user_vector(self, state: ServingState, newest: list[str], stamps: np.ndarray | None,
                     timings: dict[str, float]) -> np.ndarray:
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

    def _retrieve(self, state: ServingState, vector: np.ndarray, user_id: str | None, newest: list[str],
                  stamps: np.ndarray | None, k: int, exclude: list[str], wanted: dict[str, frozenset[str]],
                  explain: bool, query: str, timings: dict[str, float]) -> tuple[list[Recommendation], str]:
        # A free-text query is semantic search: the ranker learned to order candidates for a user's
        # history (popularity, co-visitation with recent items), which would drown the query's meaning.
        ranker = state.ranker if query != "text" else None
        fetch = max(k, self.config.candidates) if ranker is not None else k
        ids, scores = self._search(state, vector, fetch, exclude, wanted, timings)
        if ranker is not None:
            ranked = self._rank(state, user_id, newest, stamps, ids, scores, k, exclude, wanted, explain, timings,
                                vector)
            if ranked is not None:
                return ranked, "ranked"
        titles = state.catalog.title_of
        items = [Recommendation(i, titles.get(i), _finite(s), r + 1, "retrieval")
                 for r, (i, s) in enumerate(zip(ids[:k], scores[:k], strict=True))]
        if explain:
            items = self._explain_retrieval(state, items, newest, query)
        return items, "retrieval"

    def _search(self, state: ServingState, vector: np.ndarray, k: int, exclude: Sequence[str],
                wanted: dict[str, frozenset[str]], timings: dict[str, float]) -> tuple[list[str], list[float]]:
        """Top-k through the search worker, which batches concurrent requests into one FAISS call."""
        mask = state.masks.mask(wanted)
        return self._timed(timings, "search", self._searcher.submit, "search", state.index,
                           (vector, min(k, len(state.index)), exclude, mask))

    def _rank(self, state: ServingState, user_id: str | None, newest: list[str], stamps: np.ndarray | None,
              candidates: list[str], interest: list[float], k: int, exclude: list[str],
              wanted: dict[str, frozenset[str]], explain: bool, timings: dict[str, float],
              vector: np.ndarray | None = None) -> list[Recommendation] | None:
        """Ask the ranker; None (and a logged error) when it fails, so the caller serves retrieval order.

        The user vector and the index's stored item vectors go along, so the ranker scores its
        fallback candidates' interest and the similarity features exactly as in training.
        """
        from ranking.protocol import RankRequest

        allowed = frozenset(state.catalog.matching(wanted)) if wanted else None
        history_ts = None
        if stamps is not None:
            history_ts = [datetime.fromtimestamp(int(us) / 1e6, tz=timezone.utc) for us in stamps[::-1]]
        # Stored vectors (NaN rows for items the index lacks: new since the last nightly run); see ItemVectors.
        item_vectors = state.item_vectors.for_request()  # type: ignore[union-attr]
        ranker_items = getattr(state.ranker, "item_ids", None)
        item_matrix = state.item_vectors.aligned(ranker_items) if ranker_items is not None else None  # type: ignore[union-attr]
        request = RankRequest(history=list(reversed(newest)), candidates=list(candidates), interest=list(interest),
                              k=k, user_id=user_id, history_ts=history_ts, exclude=frozenset(exclude), allowed=allowed,
                              user_vector=None if vector is None else np.asarray(vector, np.float32).ravel().tolist(),
                              item_vectors=item_vectors, item_matrix=item_matrix)
        started = time.perf_counter()
        try:
            with self._rank_slots:  # a few at a time: more threads only fight over the GIL (ServingConfig)
                result = state.ranker.rank(request, explain=explain)  # type: ignore[union-attr]
        except Exception:
            log.exception("ranker %s failed; serving this request in retrieval order", state.ranker_version)
            with self._stats_lock:
                self.stats["ranker_errors"] += 1
            return None
        finally:
            timings["rank"] = (time.perf_counter() - started) * 1000
        titles, banned = state.catalog.title_of, set(exclude)
        explanations = result.explanations or [None] * len(result.item_ids)
        items: list[Recommendation] = []
        for item, score, source, why in zip(result.item_ids, result.scores, result.sources, explanations, strict=False):
            if item in banned or (allowed is not None and item not in allowed) or item not in state.catalog:
                continue  # the contract says the ranker removes these; never serve them if it does not
            items.append(Recommendation(item, titles.get(item), _finite(score), len(items) + 1, str(source),
                                        why if explain else None))
            if len(items) == k:
                break
        if items and len(items) < k:
            # A ranker's fallbacks can run short under a filter (its popular candidates are the overall top
            # few, then filtered): top up with catalog popularity, unscored, after the ranked items.
            banned.update(item.item_id for item in items)
            items += self._popular(state, k - len(items), banned, allowed, explain, start=len(items), scored=False)
        return items

    def _cold(self, state: ServingState, user_id: str | None, newest: list[str], stamps: np.ndarray | None, k: int,
              exclude: list[str], wanted: dict[str, frozenset[str]], explain: bool, timings: dict[str, float]
              ) -> tuple[list[Recommendation], str]:
        """No usable user vector: the ranker's own fallbacks, else recent popularity."""
        if state.ranker is not None:
            ranked = self._rank(state, user_id, newest, stamps, [], [], k, exclude, wanted, explain, timings)
            if ranked:
                return ranked, "ranked"
        allowed = state.catalog.matching(wanted) if wanted else None
        return self._popular(state, k, set(exclude), allowed, explain), "popular"

    @staticmethod
    def _popular(state: ServingState, k: int, banned: set[str], allowed: set[str] | frozenset[str] | None,
                 explain: bool, start: int = 0, scored: bool = True) -> list[Recommendation]:
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
            items.append(Recommendation(item, catalog.title_of.get(item), float(count) if scored else None,
                                        start + len(items) + 1, "popular", why))
            if len(items) == k:
                break
        return items

    def _explain_retrieval(self, state: ServingState, items: list[Recommendation], newest: list[str],
                           query: str) -> list[Recommendation]:
        """Each result's closest recent history item (by the index's own vectors); text: its interest only."""
        from dataclasses import replace

        index = state.index
        rows = index.rows_of(newest[:self.config.explain_history])
        if query == "text" or not len(rows) or not items:
            return [replace(item, explanation={"interest": item.score}) for item in items]
        history_ids = index.item_ids[rows].tolist()
        content = state.encoder.bundle.content_dim  # a popularity prior column is not similarity
        similarity = (index.reconstruct([item.item_id for item in items])[:, :content]
                      @ index.reconstruct(history_ids)[:, :content].T)
        best = similarity.argmax(axis=1)
        return [replace(item, explanation={"interest": item.score, "because_of": history_ids[int(b)],
                                           "because_of_title": state.catalog.title_of.get(history_ids[int(b)]),
                                           "similarity": round(float(similarity[j, b]), 6)})
                for j, (item, b) in enumerate(zip(items, best, strict=True))]

    def _check_k(self, k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= int(k) <= self.config.max_k:
            raise DataError(f"must be an integer from 1 to {self.config.max_k}, got {k!r}", column="k")
        return int(k)

    def _check_history(self, history: Any) -> list[str]:
        if isinstance(history, str) or not isinstance(history, Sequence):
            raise DataError("must be a list of item ids", column="item_ids")
        ids = list(history)
        if not 1 <= len(ids) <= self.config.max_history:
            raise DataError(f"must hold 1 to {self.config.max_history} item ids, got {len(ids)}", column="item_ids")
        return [_check_id(value, "item_ids", row=i + 1) for i, value in enumerate(ids)]

    def _check_text(self, text: Any) -> str:
        if not isinstance(text, str) or not 1 <= len(text) <= self.config.max_text:
            raise DataError(f"must be a string of 1 to {self.config.max_text} characters", column="text")
        _check_unicode(text, "text")
        return text

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

    # ------------------------------------------------------------------------------ hot swap
    def refresh(self) -> list[str]:
        """Pick up a new CURRENT index, moved aliases and a rewritten dataset; returns what happened.

        Everything new is loaded and validated while the old state keeps serving; the swap is one
        assignment. Failures are refused (logged, listed in `status()`), never raised.
        """
        with self._refresh_lock:
            events: list[str] = []
            state = self._state
            changes: dict[str, Any] = {}
            catalog = self._refresh_catalog(state, events)
            if catalog is not state.catalog:
                changes["catalog"] = catalog
            self._refresh_encoder(state, events)
            changes.update(self._refresh_index(state, events))
            encoder = changes.get("encoder", state.encoder)
            ranker, note = self._refresh_ranker(state, catalog, encoder, events)
            if ranker is not state.ranker or note != state.ranker_note:
                changes.update(ranker=ranker, ranker_note=note)
            if changes:
                self._state = state.replace(**changes)  # the swap: one reference assignment
                with self._stats_lock:
                    self.stats["swaps"] += 1
                new = self._state
                log.info("swapped: index %s, encoder %s, ranker %s, dataset %s", new.index_version,
                         new.encoder_version, new.ranker_version, new.catalog.name)
            self._last_refresh = time.time()
            return events

    def _refresh_catalog(self, state: ServingState, events: list[str]) -> Catalog:
        catalog = state.catalog
        if catalog.folder is None:
            return catalog
        signature = folder_signature(catalog.folder)
        if signature == catalog.signature or signature == self._refused_dataset:
            return catalog
        try:
            fresh = Catalog.from_folder(catalog.folder, self.config.popular_days)
        except (RecsysError, OSError) as exc:
            self._refused_dataset = signature
            self._refuse("dataset", str(catalog.folder), exc)
            return catalog
        events.append(f"dataset {fresh.name} reloaded ({fresh.interactions} interactions)")
        return fresh

    def _refresh_encoder(self, state: ServingState, events: list[str]) -> None:
        if not self._encoder_source.movable:
            return
        try:
            wanted = self._encoder_source.wanted_version()
        except RecsysError as exc:
            self._note_error(f"encoder {self._encoder_source.ref!r}: {exc}")
            return
        if wanted == state.encoder_version:
            if self._pending is not None:
                events.append(f"encoder alias is back on {wanted}; dropped pending {self._pending.version}")
            self._pending = None
            return
        if wanted is None or wanted in self._refused_encoders or (self._pending and self._pending.version == wanted):
            return
        try:
            loaded = self._encoder_source.load()
        except (RecsysError, OSError) as exc:
            self._refused_encoders.add(wanted)
            self._refuse("encoder", wanted, exc)
            return
        self._pending = loaded
        events.append(f"encoder {loaded.version} loaded; waiting for an index built with it")
        log.info("encoder %s loaded; it is served once an index built with it is CURRENT", loaded.version)

    def _refresh_index(self, state: ServingState, events: list[str]) -> dict[str, Any]:
        current = self.index_store.current_version()
        if current is None or current == state.index_version:
            return {}
        candidates = [e for e in (self._pending, state.encoder) if e is not None]
        key = frozenset(e.version for e in candidates)
        if self._refused_index.get(current) == key:
            return {}
        try:
            built_with = str(self.index_store.metadata(current).get("encoder_version"))
            chosen = next((e for e in candidates if e.version == built_with), None)
            if chosen is None:
                raise ConfigError(f"built with encoder {built_with}, but the service runs {state.encoder_version}"
                                  + (f" (pending {self._pending.version})" if self._pending else ""))
            index, metadata, users = load_index(self.index_store, current, chosen)
        except (RecsysError, OSError) as exc:
            self._refused_index[current] = key
            self._refuse("index", current, exc)
            return {}
        if chosen is self._pending:
            self._pending = None
        events.append(f"index {current} loaded (encoder {chosen.version})")
        return {"encoder": chosen, "index": index, "index_version": current, "index_meta": metadata, "users": users}

    def _refresh_ranker(self, state: ServingState, catalog: Catalog, encoder: LoadedEncoder,
                        events: list[str]) -> tuple[Any, str | None]:
        """(ranker to serve, note) after checking the ranker alias, the dataset and the encoder pairing.

        A ranker loaded from a reference reads the behaviour log at load, so a reloaded dataset reloads
        it. A new alias version trained on another encoder's scores is refused like a broken index: the
        ranker serving now keeps serving (when it fits the encoder), and the refusal is listed. One
        trained on the pending encoder waits for that encoder's index instead of being refused.
        """
        source = self._ranker_source
        note = state.ranker_note if self._ranker_obj is None else None
        served = state.ranker
        if catalog is not state.catalog and source.ref is not None:
            if self._ranker_obj is not None:
                serving_alias = served is self._ranker_obj
                self._ranker_obj = self._reload_ranker(self._ranker_obj, self._ranker_loaded, catalog, events)
                served = self._ranker_obj if serving_alias else served
            if served is not None and served is not self._ranker_obj:  # an older version kept serving
                served = self._reload_ranker(served, str(getattr(served, "version", "")) or None, catalog, events)
        if source.movable and source.loader()[0] is not None:
            try:
                wanted = source.wanted_version()
            except RecsysError as exc:
                wanted = None
                if self._ranker_obj is None:
                    note = f"ranker {source.ref!r}: {exc}"
            if wanted is not None and wanted not in (self._ranker_loaded, self._ranker_tried):
                self._ranker_tried = wanted
                loaded, why = source.load(catalog.dataset, RankerSource.pinned(wanted))
                if loaded is None:
                    self._refuse("ranker", wanted, why or "not loaded")
                else:
                    self._ranker_obj, self._ranker_loaded, note = loaded, wanted, None
                    events.append(f"ranker {wanted} loaded")
        if self._ranker_obj is None:
            return None, note
        mismatch = _ranker_mismatch(self._ranker_obj, self._ranker_loaded, encoder, self._pending)
        if mismatch is None:
            return self._ranker_obj, None
        text, _ = mismatch
        if served is not None and served is not self._ranker_obj and ranker_conflict(served, encoder.version) is None:
            text = f"{text}; {getattr(served, 'version', 'the previous ranker')} keeps serving"
        else:
            served, text = None, f"{text}: serving retrieval order"
        if text != state.ranker_note:
            self._ranker_mismatch_seen(self._ranker_obj, self._ranker_loaded, encoder.version, *mismatch, served)
        return served, text

    def _reload_ranker(self, ranker: Any, version: str | None, catalog: Catalog, events: list[str]) -> Any:
        """`ranker` (registry `version`, else the source's reference) reloaded against a new dataset."""
        loaded, why = self._ranker_source.load(catalog.dataset, RankerSource.pinned(version))
        if loaded is None:
            self._refuse("ranker", version or str(self._ranker_source.ref), why or "not loaded")
            return ranker
        events.append(f"ranker {getattr(loaded, 'version', self._ranker_source.ref)} reloaded with the new dataset")
        return loaded

    def _ranker_mismatch_seen(self, ranker: Any, version: str | None, encoder_version: str, text: str,
                              refused: bool, served: Any = None) -> None:
        """Log a ranker/encoder mismatch; a real one is refused once per (ranker, encoder) pair."""
        key = (version or str(getattr(ranker, "version", "?")), encoder_version)
        outcome = f"{getattr(served, 'version', 'the previous ranker')} keeps serving" if served is not None \
            else "serving retrieval order"
        if not refused:
            log.info("%s; %s", text, outcome)
        elif key not in self._refused_rankers:
            self._refused_rankers.add(key)
            self._refuse("ranker", key[0], text, outcome)
        else:
            log.warning("%s; %s", text, outcome)

    def _refuse(self, what: str, version: str, reason: Any, outcome: str = "the previous one keeps serving") -> None:
        text = str(reason)
        record = {"what": what, "version": version, "reason": text, "at": _iso(time.time())}
        self._refusals.append(record)
        with self._stats_lock:
            self.stats["refusals"][what] = self.stats["refusals"].get(what, 0) + 1
        log.warning("refused %s %s: %s; %s", what, version, text, outcome)

    def _note_error(self, text: str) -> None:
        if text != self._last_error:
            log.warning(text)
        self._last_error = text

    # -------------------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """What is served, what waits, what was refused: the body of `/readyz`."""
        state = self._state
        return {
            "ready": True,
            "index_version": state.index_version,
            "index_kind": state.index.kind,
            "items": len(state.index),
            "encoder_version": state.encoder_version,
            "encoder_ref": self._encoder_source.ref,
            "tower": state.encoder.bundle.tower,
            "pending_encoder": self._pending.version if self._pending is not None else None,
            "ranker": state.ranker_version,
            "mode": state.mode,
            "ranker_note": state.ranker_note,
            "users_cached": len(state.users),
            "user_vectors_note": state.users.note,
            "dataset": state.catalog.name,
            "interactions": state.catalog.interactions,
            "loaded_at": _iso(state.loaded_at),
            "last_refresh": _iso(self._last_refresh) if self._last_refresh else None,
            "swaps": self.stats["swaps"],
            "refused": list(self._refusals),
        }

    # ------------------------------------------------------------------------------- polling
    def start_polling(self, interval: float | None = None) -> None:
        """Run `refresh` every `interval` seconds (default: the config's) in a daemon thread."""
        if self._poller is not None:
            return
        every = float(interval if interval is not None else self.config.poll_interval)
        if not every > 0:
            raise ConfigError(f"poll interval must be positive, got {interval!r}")

        def loop() -> None:
            while not self._poll_stop.wait(every):
                try:
                    self.refresh()
                except Exception:  # a poll must never kill the thread: log and try again next time
                    log.exception("hot-swap check failed")

        self._poller = threading.Thread(target=loop, name="recsys-poller", daemon=True)
        self._poller.start()

    def close(self) -> None:
        """Stop the poller and the encoder worker."""
        self._poll_stop.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
            self._poller = None
        self._batcher.close()
        self._searcher.close()

    def __enter__(self) -> Recommender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------ helpers
def _ranker_mismatch(ranker: Any, version: str | None, encoder: LoadedEncoder,
                     pending: LoadedEncoder | None) -> tuple[str, bool] | None:
    """None when `ranker` fits the served encoder, else (why, refused?).

    Not refused (False) when it was trained on the pending encoder: it waits for that encoder's index.
    """
    conflict = ranker_conflict(ranker, encoder.version)
    if conflict is None:
        return None
    if pending is not None and ranker_conflict(ranker, pending.version) is None:
        name = version or getattr(ranker, "version", "?")
        return (f"ranker {name} waits for an index built with encoder {pending.version}, whose scores it was "
                f"trained on; the service runs {encoder.version}"), False
    return conflict, True


def _catalog(data: Any, config: ServingConfig) -> Catalog:
    from recsys.data.dataset import Dataset

    if isinstance(data, Dataset):
        return Catalog(data, popular_days=config.popular_days)
    return Catalog.from_folder(data, config.popular_days)


def _check_id(value: Any, column: str, row: int | None = None) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_CHARS:
        raise DataError(f"must be a non-empty string of at most {MAX_ID_CHARS} characters", column=column, row=row)
    _check_unicode(value, column, row)
    return value


def _check_unicode(value: str, column: str, row: int | None = None) -> None:
    """Lone surrogates (possible in JSON's \\ud800 escapes) are not text: no tokenizer or log takes them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(f"holds an unpaired surrogate (U+{ord(value[exc.start]):04X}): not valid Unicode text",
                        column=column, row=row) from None


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="seconds")
