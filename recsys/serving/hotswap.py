"""`HotSwap`: the served `ServingState` and everything that replaces it while the service runs.

It holds the current state (one reference: a request reads it once and keeps that object to its
end, see `state.py`) and the bookkeeping around it: the encoder a registry alias moved to (pending
until an index built with it is CURRENT), the ranker loaded from its alias and the version last
tried, what was refused, and the poller thread that runs `refresh` every few seconds.

Rules (`Recommender.load` starts with them, `refresh` keeps them):
- an index serves only with the encoder it was built with. At load, an encoder alias that already
  moved past the CURRENT index's encoder serves the index's own pinned encoder and the new one waits;
- a new CURRENT index is loaded in the background with full checksum checks and paired with the
  encoder it was built with; a registry alias that moved to a new encoder loads that encoder but
  only swaps once an index built with it is CURRENT;
- a moved ranker alias loads the new ranker (pinned to the version the alias named), which serves
  only with the encoder it was trained on: one trained on the pending encoder waits for that
  encoder's index, one trained on any other is refused while the previous ranker keeps serving;
- a rewritten dataset folder is reloaded (and rankers loaded by reference with it).
Anything that fails validation is refused, logged and listed in `refusals()` (`status()["refused"]`),
and the previous state keeps serving. At load there is no previous state: when the version CURRENT
names fails its checks (or CURRENT is empty), the newest older version that passes them is served,
the failure is refused like any other, and `index_note` (`status()["index_note"]`) says so until
CURRENT names a version that loads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from recsys.errors import ConfigError, DataError, RecsysError
from recsys.index.store import CURRENT_FILE
from recsys.serving.catalog import Catalog, folder_signature
from recsys.serving.models import EncoderSource, RankerSource, ranker_conflict, with_content
from recsys.serving.state import ServingState, load_index

if TYPE_CHECKING:
    from encoders.registry import LoadedEncoder
    from recsys.index import IndexStore, VectorIndex
    from recsys.serving.config import ServingConfig
    from recsys.serving.state import UserVectors

log = logging.getLogger("recsys.serving")
REFUSALS_KEPT = 20


class HotSwap:
    """The served state and its replacement (see the module doc). Build it with `HotSwap.load`."""

    def __init__(
        self,
        state: ServingState,
        *,
        index_store: IndexStore,
        encoder_source: EncoderSource,
        ranker_source: RankerSource,
        config: ServingConfig,
        stats: dict[str, Any],
        stats_lock: threading.Lock,
        ranker_obj: Any = None,
        ranker_loaded: str | None = None,
        ranker_tried: str | None = None,
        pending: LoadedEncoder | None = None,
    ) -> None:
        self.state = state  # replaced whole by `refresh`, never edited
        self.index_store = index_store
        self.encoder_source = encoder_source
        self.ranker_source = ranker_source
        self.config = config
        self._stats = stats  # the facade's counters: "swaps" and "refusals" are kept here
        self._stats_lock = stats_lock
        self._ranker_obj = ranker_obj  # loaded ranker, served only while compatible
        self._ranker_loaded = ranker_loaded  # registry version it came from
        self._ranker_tried = ranker_tried or ranker_loaded  # last registry version tried (never retried)
        self._pending = pending  # encoder an alias moved to, waiting for its index
        self._refresh_lock = threading.Lock()
        self._refusals: deque[dict[str, Any]] = deque(maxlen=REFUSALS_KEPT)
        self._refused_index: dict[str, frozenset[str]] = {}
        self._refused_encoders: set[str] = set()
        self._refused_rankers: set[tuple[str, str]] = set()  # (ranker version, encoder version)
        self._refused_dataset: tuple | None = None
        self.last_refresh: float | None = None
        self.index_note: str | None = None  # why the served index is not the one CURRENT names, if it is not
        self._last_error: str | None = None
        self._poll_stop = threading.Event()
        self._poller: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ load
    @classmethod
    def load(
        cls,
        index_store: IndexStore,
        current: str | None,
        catalog: Catalog,
        encoder_source: EncoderSource,
        ranker_source: RankerSource,
        config: ServingConfig,
        stats: dict[str, Any],
        stats_lock: threading.Lock,
    ) -> HotSwap:
        """The first state: index `current` with the encoder it was built with and the ranker that fits it.

        An encoder alias that already moved past `current`'s encoder serves the index's own pinned
        encoder and leaves the new one pending; any other encoder that did not build `current` is a
        `ConfigError`. A `current` that fails its checks (corrupt, unreadable, missing), or None for an
        empty CURRENT file, falls back to the newest older version that passes them (the module doc);
        with none, the first failure is raised. A ranker that does not fit the encoder is not served
        (refused, unless it waits for the pending encoder).
        """
        wanted = encoder_source.load()
        failures: list[tuple[str, Exception]] = []
        for version in _newest_first(index_store, current):
            try:
                loaded, pending, index, metadata, users = _first_pair(index_store, version, wanted, encoder_source)
                break
            except (DataError, OSError) as exc:  # this version's files: try the next older one
                failures.append((version, exc))
            except RecsysError as exc:
                if version == current:
                    raise  # CURRENT built by another encoder: a configuration to fix, not damage to route around
                failures.append((version, exc))
        else:
            if failures:
                raise failures[0][1]
            raise DataError(
                f"CURRENT in {index_store.root} is empty and no index version is published",
                file=str(index_store.root / CURRENT_FILE),
            )
        served_version = version
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
            else:
                with_content(ranker_obj, loaded, catalog, ranker_source.embeddings)
        if note and ranker_source.wanted and mismatch is None:
            log.info("serving retrieval order: %s", note)
        state = ServingState(loaded, index, served_version, metadata, users, catalog, served, note)
        log.info(
            "serving index %s (%d items, %s) with encoder %s, ranker %s",
            served_version,
            len(index),
            index.kind,
            loaded.version,
            state.ranker_version,
        )
        swap = cls(
            state,
            index_store=index_store,
            encoder_source=encoder_source,
            ranker_source=ranker_source,
            config=config,
            stats=stats,
            stats_lock=stats_lock,
            ranker_obj=ranker_obj,
            pending=pending,
            ranker_tried=ranker_loaded,
            ranker_loaded=ranker_loaded if ranker_obj is not None else None,
        )
        if mismatch is not None:
            swap._ranker_mismatch_seen(ranker_obj, ranker_loaded, loaded.version, *mismatch)
        if served_version != current:
            swap._fell_back(current, served_version, failures, frozenset(e.version for e in (pending, loaded) if e))
        return swap

    def _fell_back(
        self, current: str | None, served: str, failures: list[tuple[str, Exception]], encoders: frozenset[str]
    ) -> None:
        """Record a start on an older version than CURRENT names: the refusals, and the note `/readyz` shows."""
        outcome = f"serving {served}, the newest version that passes its checks"
        for version, exc in failures:
            self._refuse("index", version, exc, outcome)
        if current is None:
            self.index_note = f"CURRENT is empty; {outcome}"
            return
        self._refused_index[current] = encoders  # not retried by every poll; a new CURRENT is
        self.index_note = f"CURRENT names {current}, which failed its checks (see refused); {outcome}"

    # ---------------------------------------------------------------------------------- facts
    @property
    def pending_version(self) -> str | None:
        """The encoder version an alias moved to that waits for an index built with it."""
        return self._pending.version if self._pending is not None else None

    def refusals(self) -> list[dict[str, Any]]:
        """The last `REFUSALS_KEPT` refusals (what, version, reason, at), oldest first."""
        return list(self._refusals)

    # ------------------------------------------------------------------------------- refresh
    def refresh(self) -> list[str]:
        """Pick up a new CURRENT index, moved aliases and a rewritten dataset; returns what happened.

        Everything new is loaded and validated while the old state keeps serving; the swap is one
        assignment. Failures are refused (logged, listed in `refusals()`), never raised.
        """
        with self._refresh_lock:
            events: list[str] = []
            state = self.state
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
                self.state = state.replace(**changes)  # the swap: one reference assignment
                with self._stats_lock:
                    self._stats["swaps"] += 1
                new = self.state
                log.info(
                    "swapped: index %s, encoder %s, ranker %s, dataset %s",
                    new.index_version,
                    new.encoder_version,
                    new.ranker_version,
                    new.catalog.name,
                )
            self.last_refresh = time.time()
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
        if not self.encoder_source.movable:
            return
        try:
            wanted = self.encoder_source.wanted_version()
        except RecsysError as exc:
            self._note_error(f"encoder {self.encoder_source.ref!r}: {exc}")
            return
        if wanted == state.encoder_version:
            if self._pending is not None:
                events.append(f"encoder alias is back on {wanted}; dropped pending {self._pending.version}")
            self._pending = None
            return
        if wanted is None or wanted in self._refused_encoders or (self._pending and self._pending.version == wanted):
            return
        try:
            loaded = self.encoder_source.load()
        except (RecsysError, OSError) as exc:
            self._refused_encoders.add(wanted)
            self._refuse("encoder", wanted, exc)
            return
        self._pending = loaded
        events.append(f"encoder {loaded.version} loaded; waiting for an index built with it")
        log.info("encoder %s loaded; it is served once an index built with it is CURRENT", loaded.version)

    def _refresh_index(self, state: ServingState, events: list[str]) -> dict[str, Any]:
        current = self.index_store.current_version()
        if current is None:
            if (self.index_store.root / CURRENT_FILE).is_file():
                self.index_note = f"CURRENT is empty; serving {state.index_version}"
                self._note_error(
                    f"CURRENT in {self.index_store.root} is empty (a hand edit or a cut-short write?); "
                    f"serving {state.index_version} until it names a version"
                )
            return {}
        if current == state.index_version:
            self.index_note = None
            return {}
        candidates = [e for e in (self._pending, state.encoder) if e is not None]
        key = frozenset(e.version for e in candidates)
        if self._refused_index.get(current) == key:
            return {}
        try:
            built_with = str(self.index_store.metadata(current).get("encoder_version"))
            chosen = next((e for e in candidates if e.version == built_with), None)
            if chosen is None:
                raise ConfigError(
                    f"built with encoder {built_with}, but the service runs {state.encoder_version}"
                    + (f" (pending {self._pending.version})" if self._pending else "")
                )
            index, metadata, users = load_index(self.index_store, current, chosen)
        except (RecsysError, OSError) as exc:
            self._refused_index[current] = key
            self._refuse("index", current, exc)
            self.index_note = f"CURRENT names {current}, which was refused (see refused); serving {state.index_version}"
            return {}
        if chosen is self._pending:
            self._pending = None
        self.index_note = None
        events.append(f"index {current} loaded (encoder {chosen.version})")
        return {"encoder": chosen, "index": index, "index_version": current, "index_meta": metadata, "users": users}

    def _refresh_ranker(
        self, state: ServingState, catalog: Catalog, encoder: LoadedEncoder, events: list[str]
    ) -> tuple[Any, str | None]:
        """(ranker to serve, note) after checking the ranker alias, the dataset and the encoder pairing.

        A ranker loaded from a reference reads the behaviour log at load, so a reloaded dataset reloads
        it. A new alias version trained on another encoder's scores is refused like a broken index: the
        ranker serving now keeps serving (when it fits the encoder), and the refusal is listed. One
        trained on the pending encoder waits for that encoder's index instead of being refused.
        """
        source = self.ranker_source
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
            with_content(self._ranker_obj, encoder, catalog, source.embeddings)  # once per loaded ranker
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
        loaded, why = self.ranker_source.load(catalog.dataset, RankerSource.pinned(version))
        if loaded is None:
            self._refuse("ranker", version or str(self.ranker_source.ref), why or "not loaded")
            return ranker
        events.append(f"ranker {getattr(loaded, 'version', self.ranker_source.ref)} reloaded with the new dataset")
        return loaded

    def _ranker_mismatch_seen(
        self, ranker: Any, version: str | None, encoder_version: str, text: str, refused: bool, served: Any = None
    ) -> None:
        """Log a ranker/encoder mismatch; a real one is refused once per (ranker, encoder) pair."""
        key = (version or str(getattr(ranker, "version", "?")), encoder_version)
        outcome = (
            f"{getattr(served, 'version', 'the previous ranker')} keeps serving"
            if served is not None
            else "serving retrieval order"
        )
        if not refused:
            log.info("%s; %s", text, outcome)
        elif key not in self._refused_rankers:
            self._refused_rankers.add(key)
            self._refuse("ranker", key[0], text, outcome)
        else:
            log.warning("%s; %s", text, outcome)

    def _refuse(self, what: str, version: str, reason: Any, outcome: str = "the previous one keeps serving") -> None:
        text = str(reason)
        record = {"what": what, "version": version, "reason": text, "at": iso(time.time())}
        self._refusals.append(record)
        with self._stats_lock:
            self._stats["refusals"][what] = self._stats["refusals"].get(what, 0) + 1
        log.warning("refused %s %s: %s; %s", what, version, text, outcome)

    def _note_error(self, text: str) -> None:
        if text != self._last_error:
            log.warning(text)
        self._last_error = text

    # ------------------------------------------------------------------------------- polling
    def start_polling(self, interval: float | None = None, also: Callable[[], object] | None = None) -> None:
        """Run `refresh` (then `also`, e.g. the event log's tail) every `interval` seconds (default: the
        config's) in a daemon thread."""
        if self._poller is not None:
            return
        every = float(interval if interval is not None else self.config.poll_interval)
        if not every > 0:
            raise ConfigError(f"poll interval must be positive, got {interval!r}")

        def loop() -> None:
            while not self._poll_stop.wait(every):
                try:
                    self.refresh()
                    if also is not None:
                        also()
                except Exception:  # a poll must never kill the thread: log and try again next time
                    log.exception("hot-swap check failed")

        self._poller = threading.Thread(target=loop, name="recsys-poller", daemon=True)
        self._poller.start()

    def stop_polling(self) -> None:
        self._poll_stop.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
            self._poller = None


def _newest_first(index_store: IndexStore, current: str | None) -> list[str]:
    """The versions a service may start on, in order: CURRENT's, then the published ones newest first."""
    older = [version for version in reversed(index_store.versions()) if version != current]
    return [current, *older] if current is not None else older


def _first_pair(
    index_store: IndexStore, version: str, wanted: LoadedEncoder, encoder_source: EncoderSource
) -> tuple[LoadedEncoder, LoadedEncoder | None, VectorIndex, dict, UserVectors]:
    """(encoder to serve, pending encoder, index, metadata, user vectors) for starting on `version`.

    The encoder is `wanted` when it built `version`; else, for an alias that moved on, the encoder the
    index pins (and `wanted` waits as pending); else a `ConfigError`. The index is fully verified.
    """
    built_with = str(index_store.metadata(version).get("encoder_version"))
    loaded, pending = wanted, None
    if loaded.version != built_with:
        pinned = (index_store.metadata(version).get("extra") or {}).get("model_uri")
        if encoder_source.movable and pinned:
            pending, loaded = loaded, encoder_source.load(str(pinned))
            log.info(
                "encoder %s waits for an index built with it; serving %s with index %s",
                pending.version,
                loaded.version,
                version,
            )
        if loaded.version != built_with:
            raise ConfigError(
                f"the CURRENT index {version} was built with encoder {built_with}, but encoder "
                f"{encoder_source.ref} is {loaded.version}: run `recsys embed` with this encoder "
                "or serve the one the index was built with"
            )
    index, metadata, users = load_index(index_store, version, loaded)
    return loaded, pending, index, metadata, users


def _ranker_mismatch(
    ranker: Any, version: str | None, encoder: LoadedEncoder, pending: LoadedEncoder | None
) -> tuple[str, bool] | None:
    """None when `ranker` fits the served encoder, else (why, refused?).

    Not refused (False) when it was trained on the pending encoder: it waits for that encoder's index.
    """
    conflict = ranker_conflict(ranker, encoder.version)
    if conflict is None:
        return None
    if pending is not None and ranker_conflict(ranker, pending.version) is None:
        name = version or getattr(ranker, "version", "?")
        return (
            f"ranker {name} waits for an index built with encoder {pending.version}, whose scores it was "
            f"trained on; the service runs {encoder.version}"
        ), False
    return conflict, True


def iso(seconds: float) -> str:
    """UTC ISO-8601 time of a Unix timestamp, to the second (the status' times)."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="seconds")
