"""`ServingState`: everything one request needs, as one object that is replaced, never edited.

Hot swap is a single reference assignment (`Recommender._state = new_state`): a request reads the
reference once at its start and uses that object to the end, so a swap mid-request cannot pair the
old index with the new encoder, and an in-flight request on the old state simply finishes. What a
state holds is checked before it is built: the index's checksums (`IndexStore.load`), that it was
built with the encoder it is paired with, that the user-vector cache matches both, and that a ranker
was trained on this encoder's scores.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from recsys.embedding_store import read_user_vectors
from recsys.errors import DataError

if TYPE_CHECKING:
    from encoders.registry import LoadedEncoder
    from ranking.protocol import CandidateRanker
    from recsys.index import IndexStore, VectorIndex
    from recsys.serving.catalog import Catalog

MASK_CACHE = 256
DENSE_VECTORS_MAX_BYTES = 256 * 2**20  # a dense copy of the index vectors for the ranker, up to this size


@dataclass(frozen=True)
class UserVectors:
    """The nightly job's cached user vectors for one index version (empty when it published none).

    A vector is used only while it is fresh: its `last_ts` (the newest interaction it was encoded
    from) equals the user's newest interaction in the served log. Anything newer means the nightly
    vector misses it, and the request encodes the history itself.
    """

    row_of: dict[str, int]
    vectors: np.ndarray
    last_ts_us: np.ndarray | None
    note: str | None = None

    @classmethod
    def empty(cls, note: str) -> UserVectors:
        return cls({}, np.zeros((0, 0), dtype=np.float32), None, note)

    @classmethod
    def for_version(cls, index_root: Path, metadata: dict[str, Any], encoder_version: str, dim: int) -> UserVectors:
        """Read and verify the version's user-vector file; `DataError` when it is corrupt or mismatched."""
        if not (metadata.get("extra") or {}).get("user_vectors"):
            return cls.empty("this index version was published without user vectors")
        frame = read_user_vectors(index_root, metadata)  # verifies the SHA-256
        versions = frame["encoder_version"].unique().to_list() if frame.height else []
        if any(v != encoder_version for v in versions):
            raise DataError(
                f"user vectors were encoded with {versions}, the index with {encoder_version}", column="encoder_version"
            )
        # the ignore: np.stack takes the rows of the 2-d array to_numpy gives; numpy's stubs want a sequence
        vectors = (
            np.ascontiguousarray(np.stack(frame["vector"].to_numpy()).astype(np.float32))  # type: ignore[call-overload]
            if frame.height
            else np.zeros((0, dim), dtype=np.float32)
        )
        if frame.height and vectors.shape[1] != dim:
            raise DataError(f"user vectors are {vectors.shape[1]}-d, the index {dim}-d", column="vector")
        last = None
        if "last_ts" in frame.columns:
            last = frame.select(pl.col("last_ts").dt.epoch("us"))["last_ts"].fill_null(-1).to_numpy().astype(np.int64)
        rows = {user: row for row, user in enumerate(frame["user_id"].to_list())}
        note = None if last is not None else "user vectors carry no last_ts: every user is encoded per request"
        return cls(rows, vectors, last, note)

    def __len__(self) -> int:
        return len(self.row_of)

    def fresh(self, user_id: str, last_ts_us: int) -> np.ndarray | None:
        row = self.row_of.get(user_id)
        if row is None or self.last_ts_us is None or int(self.last_ts_us[row]) != last_ts_us:
            return None
        return self.vectors[row]


class FilterMasks:
    """Boolean masks over the index rows for normalised filters, cached (filters repeat a lot)."""

    def __init__(self, catalog: Catalog, index: VectorIndex) -> None:
        self._catalog = catalog
        self._index = index
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def mask(self, filters: dict[str, frozenset[str]]) -> np.ndarray | None:
        if not filters:
            return None
        key = tuple(sorted((column, tuple(sorted(values))) for column, values in filters.items()))
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        mask = np.zeros(len(self._index), dtype=bool)
        rows = self._index.rows_of(sorted(self._catalog.matching(filters)))
        mask[rows] = True
        with self._lock:
            self._cache[key] = mask
            while len(self._cache) > MASK_CACHE:
                self._cache.popitem(last=False)
        return mask


class ItemVectors:
    """Item ids -> the index's stored vectors, as the ranker's features ask for them (many times a request).

    `VectorIndex.reconstruct` decodes one row per FAISS call; a ranked request asks for the ~300
    candidates and the recent history items about ten times over (interest of fallback candidates,
    the similarity features per recent item, explanations), which measured ~3,000 calls and over half
    of the rank stage on ml-latest-small. So the vectors are decoded once per index version into a
    dense matrix when it is small enough (`DENSE_VECTORS_MAX_BYTES`), else once per request and row
    (`for_request`). Ids the index lacks (items newer than the last nightly run) get NaN rows, which
    the features treat as missing.
    """

    def __init__(self, index: VectorIndex, max_bytes: int = DENSE_VECTORS_MAX_BYTES) -> None:
        self.index = index
        self._dense: np.ndarray | None = None
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._aligned: tuple[Sequence[str], np.ndarray] | None = None

    def warm(self) -> ItemVectors:
        """Decode the dense copy now (off the request path: at load and on a swap) when it fits."""
        index = self.index
        if self._dense is None and len(index) * index.dim * 4 <= self._max_bytes:
            with self._lock:
                if self._dense is None:
                    dense = (
                        index.reconstruct(index.item_ids.tolist())
                        if len(index)
                        else np.zeros((0, index.dim), dtype=np.float32)
                    )
                    self._dense = np.ascontiguousarray(dense, dtype=np.float32)
        return self

    @property
    def dense(self) -> bool:
        return self._dense is not None

    def aligned(self, item_ids: Sequence[str]) -> np.ndarray | None:
        """The dense copy reordered to `item_ids` (the ranker's rows; NaN where the index lacks an item).

        Built once per (index version, ranker) and kept: the ranker then looks vectors up by its own
        row numbers, with no id conversions on the request path. None when there is no dense copy.
        """
        if self._dense is None:
            return None
        cached = self._aligned
        if cached is not None and cached[0] is item_ids:
            return cached[1]
        with self._lock:
            position = {item: row for row, item in enumerate(self.index.item_ids.tolist())}
            rows = np.fromiter((position.get(item, -1) for item in item_ids), dtype=np.int64, count=len(item_ids))
            matrix = np.full((len(item_ids), self.index.dim), np.nan, dtype=np.float32)
            known = rows >= 0
            matrix[known] = self._dense[rows[known]]
            self._aligned = (item_ids, matrix)
        return matrix

    def __call__(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of `ids` (NaN rows where the index lacks one): one lookup, nothing kept.

        What a `pooled` user tower reads (`EncoderBundle.user_vectors(item_vectors=...)`); one object
        per index version, so the encoder worker batches the requests that share it.
        """
        return self.for_request()(ids)

    def for_request(self) -> Callable[[Sequence[str]], np.ndarray]:
        """A lookup for one request: the dense copy, or rows decoded once and remembered until it ends."""
        index, dense = self.index, self._dense
        memo: dict[int, np.ndarray] = {}

        def rows_of(ids: Sequence[str]) -> np.ndarray:
            rows = index.rows_of(ids)
            if len(rows) == len(ids):
                return rows
            return np.asarray([r[0] if len(r := index.rows_of([item])) else -1 for item in ids], dtype=np.int64)

        def lookup(ids: Sequence[str]) -> np.ndarray:
            ids = list(ids)
            rows = rows_of(ids)
            out = np.full((len(ids), index.dim), np.nan, dtype=np.float32)
            known = rows >= 0
            if dense is not None:
                out[known] = dense[rows[known]]
                return out
            todo = sorted({int(r) for r in rows[known].tolist()} - memo.keys())
            if todo:
                decoded = index.reconstruct(index.item_ids[todo].tolist())
                memo.update(zip(todo, decoded, strict=True))
            for j in np.flatnonzero(known).tolist():
                out[j] = memo[int(rows[j])]
            return out

        return lookup


@dataclass(frozen=True)
class ServingState:
    """One consistent (encoder, index, user vectors, catalog, ranker) set; see the module doc."""

    encoder: LoadedEncoder
    index: VectorIndex
    index_version: str
    index_meta: dict[str, Any]
    users: UserVectors
    catalog: Catalog
    ranker: CandidateRanker | None = None
    ranker_note: str | None = None
    loaded_at: float = field(default_factory=time.time)
    item_vectors: ItemVectors | None = field(default=None, repr=False, compare=False)  # None: made here
    masks: FilterMasks = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "masks", FilterMasks(self.catalog, self.index))
        if self.item_vectors is None or self.item_vectors.index is not self.index:
            object.__setattr__(self, "item_vectors", ItemVectors(self.index))
        if self.ranker is not None:
            assert self.item_vectors is not None  # set just above
            self.item_vectors.warm()  # states are built off the request path (load, refresh), never per request

    @property
    def encoder_version(self) -> str:
        return self.encoder.version

    @property
    def ranker_version(self) -> str | None:
        return None if self.ranker is None else str(getattr(self.ranker, "version", "unknown"))

    @property
    def mode(self) -> str:
        return "ranked" if self.ranker is not None else "retrieval"

    def replace(self, **changes: Any) -> ServingState:
        values = {
            name: getattr(self, name)
            for name in ("encoder", "index", "index_version", "index_meta", "users", "catalog", "ranker", "ranker_note")
        }
        values.update(changes)
        return ServingState(**values, item_vectors=self.item_vectors)  # kept while the index is the same


def load_index(store: IndexStore, version: str, encoder: LoadedEncoder) -> tuple[VectorIndex, dict, UserVectors]:
    """Index version + user vectors, verified against their checksums and `encoder`'s version."""
    index, metadata = store.load(version, encoder_version=encoder.version)
    if index.dim != encoder.bundle.index_dim:
        raise DataError(
            f"index vectors are {index.dim}-d but encoder {encoder.version} makes {encoder.bundle.index_dim}-d ones",
            file=str(store.versions_dir / version),
        )
    users = UserVectors.for_version(store.root, metadata, encoder.version, index.dim)
    return index, metadata, users
