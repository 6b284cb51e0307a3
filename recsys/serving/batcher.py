"""Batching workers: one thread runs every model call (`EncodeBatcher`), another every FAISS search
(`SearchBatcher`); concurrent requests are encoded, and searched, together.

Why a single worker: the fast tokenizer is not safe to call from several threads at once (its
truncation settings are shared Rust state: "Already borrowed"), and `encoders.encoding` toggles the
module's train/eval mode. Funnelling all encoder work through one thread makes that safe without
a lock per call, and it batches for free: whatever requests queued up while the previous forward
pass ran go into the next one. Under no load a request waits for nothing; under load the batch
grows (up to `max_batch`) and throughput rises instead of requests contending for the cores.

Each task carries its own bundle, so a hot swap never mixes encoders: tasks are grouped by
(bundle, kind) and in-flight requests of the old state still get the old encoder. A `user` task
(`UserTask`) also carries the catalog texts and the item-vector lookup of its state; tasks that share
them are encoded together by one `EncoderBundle.user_vectors` call.

Searches batch for a different reason: one FAISS call with many queries streams the item vectors
through the cache once for all of them (an exact search over 1M vectors is memory-bound: on the
2-core box a batch of 32 queries takes 0.5 s through BLAS, 1.9 s one by one), and IVF parallelises over
queries. Queries are grouped by (index, filter mask); each keeps its own k and exclusions. The
worker applies the service's thread count to its own OpenMP setting, and for exact (flat) indexes
picks FAISS's per-query kernel for small batches and the BLAS product for larger ones.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.errors import RecsysError

if TYPE_CHECKING:
    from encoders.packaging import EncoderBundle

log = logging.getLogger("recsys.serving")

KINDS = ("query_text", "user", "search")
WAIT_S = 60.0
# From this many queries in one exact search, one BLAS product beats per-query scans. Measured on the
# 2-core box, 1M x 384 flat, one thread: a scan costs 59 ms a query; the BLAS path ~270 ms + ~7.5 ms a
# query (32 queries: 1.9 s scanned vs 0.5 s by BLAS).
BLAS_MIN_QUERIES = 5


@dataclass(frozen=True)
class UserTask:
    """The payload of a `user` task: one history for `EncoderBundle.user_vectors` (see its doc)."""

    ids: list[str]  # item ids, newest first
    seconds: list[float] | None = None  # their Unix times (None: unknown)
    texts: Mapping[str, str] | None = None  # the served catalog's item texts
    item_vectors: Callable[[Sequence[str]], np.ndarray] | None = None  # the served index's vectors

    @property
    def shared(self) -> tuple[int, int]:
        """What tasks encoded in one call must share (the call's keyword arguments)."""
        return id(self.texts), id(self.item_vectors)


@dataclass
class _Task:
    kind: str
    target: Any  # the EncoderBundle (encoding) or the VectorIndex (search)
    payload: Any
    future: Future = field(default_factory=Future)


class EncodeBatcher:
    """Queue of encoding tasks served by one daemon thread (see the module doc)."""

    kinds: tuple[str, ...] = KINDS[:-1]

    def __init__(self, max_batch: int = 64, name: str = "recsys-encoder") -> None:
        self.max_batch = max_batch
        self._queue: queue.Queue[_Task | None] = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.batches = 0
        self.tasks = 0

    def submit(self, kind: str, target: Any, payload: Any) -> Any:
        """Run one task on `target` (a bundle: see `_encode` for each kind's payload) and return its result."""
        if kind not in self.kinds:
            raise ValueError(f"unknown task kind {kind!r}")
        if self._closed.is_set():
            raise RecsysError(f"the {self._thread.name} worker is shut down")
        task = _Task(kind, target, payload)
        self._queue.put(task)
        return task.future.result(timeout=WAIT_S)

    def close(self) -> None:
        """Stop the worker; tasks still queued fail with a clear error."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._queue.put(None)
        self._thread.join(timeout=10)
        while True:
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                task.future.set_exception(RecsysError(f"the {self._thread.name} worker is shut down"))

    # ------------------------------------------------------------------------------- worker
    def _init_thread(self) -> None:
        """Per-thread setup of the worker (OpenMP settings are per thread)."""

    def _run(self) -> None:
        self._init_thread()
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    task = self._queue.get_nowait()
                except queue.Empty:
                    break
                if task is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(task)
            groups: dict[tuple, list[_Task]] = {}
            for task in batch:
                groups.setdefault(self._group(task), []).append(task)
            for tasks in groups.values():
                self._run_group(tasks)

    def _group(self, task: _Task) -> tuple:
        if isinstance(task.payload, UserTask):
            return id(task.target), task.kind, task.payload.shared
        return id(task.target), task.kind

    def _work(self, tasks: list[_Task]) -> Sequence[Any] | np.ndarray:
        return _encode(tasks[0].kind, tasks[0].target, [t.payload for t in tasks])

    def _run_group(self, tasks: list[_Task]) -> None:
        try:
            vectors = self._work(tasks)
        except BaseException as exc:  # handed to the waiting requests, never lost
            for task in tasks:
                task.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.batches += 1
        self.tasks += len(tasks)
        for task, vector in zip(tasks, vectors, strict=True):
            task.future.set_result(vector)


class SearchBatcher(EncodeBatcher):
    """FAISS searches of concurrent requests as one call per (index, filter mask); see the module doc.

    `submit("search", index, (vector, k, exclude, mask))` returns `(item ids, scores)` for that query.
    """

    kinds = ("search",)

    def __init__(
        self,
        max_batch: int = 64,
        name: str = "recsys-search",
        threads: int | None = None,
        blas_min_queries: int = BLAS_MIN_QUERIES,
    ) -> None:
        self.threads = threads
        self.blas_min_queries = blas_min_queries
        super().__init__(max_batch, name)

    def _init_thread(self) -> None:
        if self.threads:
            # local (c): faiss stays out of `import recsys.serving` (tests/test_service.py guards it)
            import faiss

            faiss.omp_set_num_threads(self.threads)  # per thread: the caller's setting does not reach us

    def _group(self, task: _Task) -> tuple:
        mask = task.payload[3]
        return id(task.target), id(mask) if mask is not None else None

    def _work(self, tasks: list[_Task]) -> Sequence[Any]:
        index = tasks[0].target
        queries = np.stack([np.asarray(t.payload[0], dtype=np.float32) for t in tasks])
        fetch = max(int(t.payload[1]) for t in tasks)
        excludes = [list(t.payload[2]) for t in tasks]
        if index.kind == "flat":
            _exact_search_path(len(tasks), index.dim, self.blas_min_queries)
        result = index.search(queries, fetch, exclude=excludes if any(excludes) else None, allowed=tasks[0].payload[3])
        out = []
        for row, task in enumerate(tasks):
            count = min(int(result.counts[row]), int(task.payload[1]))
            rows = result.rows[row, :count]
            out.append((result.item_ids[rows].tolist(), result.scores[row, :count].tolist()))
        return out


def _exact_search_path(queries: int, dim: int, blas_min_queries: int) -> None:
    """Pick FAISS's exact-search kernel for a batch: per-query scans for a few queries, one BLAS matrix
    product from `blas_min_queries` on (FAISS switches on queries x dim; its default keeps batches of up
    to 333 384-d queries on the per-query path, where each query streams all vectors again)."""
    # local (c): faiss stays out of `import recsys.serving` (tests/test_service.py guards it)
    import faiss

    faiss.cvar.distance_compute_blas_threshold = (
        max(1, blas_min_queries * dim) if queries >= blas_min_queries else 1 << 30
    )


def _encode(kind: str, bundle: EncoderBundle, payloads: Sequence[Any]) -> np.ndarray:
    """One forward pass for a group of same-kind inputs.

    - `query_text`: a free-text query -> the item tower, projected into the index space;
    - `user`: `UserTask`s sharing their texts and item-vector lookup -> the bundle's user tower.
    """
    if kind == "query_text":
        return bundle.query_vectors(list(payloads))
    first = payloads[0]
    return bundle.user_vectors(
        [task.ids for task in payloads],
        [task.seconds for task in payloads],
        texts=first.texts,
        item_vectors=first.item_vectors,
    )
