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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.errors import DataError

if TYPE_CHECKING:
    from jobs.nightly_embed import LoadedEncoder
    from ranking.protocol import CandidateRanker
    from recsys.index import IndexStore, VectorIndex
    from recsys.serving.catalog import Catalog

MASK_CACHE = 256


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
        import polars as pl

        from recsys.embedding_store import read_user_vectors

        if not (metadata.get("extra") or {}).get("user_vectors"):
            return cls.empty("this index version was published without user vectors")
        frame = read_user_vectors(index_root, metadata)  # verifies the SHA-256
        versions = frame["encoder_version"].unique().to_list() if frame.height else []
        if any(v != encoder_version for v in versions):
            raise DataError(f"user vectors were encoded with {versions}, the index with {encoder_version}",
                            column="encoder_version")
        vectors = np.ascontiguousarray(np.stack(frame["vector"].to_numpy()).astype(np.float32)) if frame.height \
            else np.zeros((0, dim), dtype=np.float32)
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
    masks: FilterMasks = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "masks", FilterMasks(self.catalog, self.index))

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
        values = {name: getattr(self, name) for name in ("encoder", "index", "index_version", "index_meta", "users",
                                                         "catalog", "ranker", "ranker_note")}
        values.update(changes)
        return ServingState(**values)


def load_index(store: IndexStore, version: str, encoder: LoadedEncoder) -> tuple[VectorIndex, dict, UserVectors]:
    """Index version + user vectors, verified against their checksums and `encoder`'s version."""
    index, metadata = store.load(version, encoder_version=encoder.version)
    if index.dim != encoder.bundle.index_dim:
        raise DataError(f"index vectors are {index.dim}-d but encoder {encoder.version} makes "
                        f"{encoder.bundle.index_dim}-d ones", file=str(store.versions_dir / version))
    users = UserVectors.for_version(store.root, metadata, encoder.version, index.dim)
    return index, metadata, users
