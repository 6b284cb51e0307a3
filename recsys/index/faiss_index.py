"""`VectorIndex`: a FAISS inner-product index over item vectors, addressed by string item ids.

Why it exists: FAISS speaks int64 ids and float32 matrices; the rest of recsys speaks item ids,
"exclude what the user has seen" and "only this category". This class is the one place that turns
one into the other, picks the index kind for the catalog size, and writes a self-checking folder.

Kinds (all inner product, so callers L2-normalise vectors when they want cosine):

| kind       | what                                  | when `kind="auto"` picks it                  |
|------------|---------------------------------------|----------------------------------------------|
| `flat`     | exact brute force (`IndexFlatIP`)     | < `FLAT_MAX` (50,000) items; with GPUs,      |
|            |                                       | < `GPU_FLAT_MAX` (5,000,000) items           |
| `ivf_flat` | inverted lists of raw vectors         | from there up to `PQ_MIN` items              |
| `ivf_pq`   | inverted lists of product-quantised   | `PQ_MIN` (20,000,000) items and more, where  |
|            | codes (d/2 bytes a vector by default) | raw vectors stop fitting in memory           |
| `hnsw`     | graph (`IndexHNSWFlat`), no training  | never; by configuration                      |

Calibration: the right `nprobe` / `efSearch` depends on the data far more than on its size (on real
all-MiniLM-L6-v2 title vectors IVF-Flat needs a quarter of its lists probed for recall@100 0.95, on
tightly clustered vectors 1/200), so a build that is not given one measures it: it searches 200 of
the catalog's own vectors, nudged by noise (a user vector sits near items, not on one), against
exact search, and doubles `nprobe` (from 8) or `efSearch` (from 128) until recall@100 reaches
`calibrate_recall` (0.97 by default, a margin over the 0.95 goal) or stops improving. The chosen
value and the measured recall are saved in the manifest.

Why IVF-Flat over HNSW by default: once both are calibrated to the same recall, IVF-Flat built 5-9x
faster and answered as fast or faster on every set measured (real title vectors, clustered and
diffuse synthetic sets; `benchmarks/bench_ann.py`, BENCHMARKS.md), it runs on GPUs (FAISS has no GPU
HNSW) so CPU and GPU hosts share one kind, it needs no graph memory, and it can `reconstruct` items.
HNSW stays available for catalogs where its log-time search pays for its build. With GPUs exact
search stays the default up to 5M items: a GPU scans millions of vectors exactly in well under a
millisecond a query (BENCHMARKS.md). IVF-PQ caps recall (about 0.93 at recall@100 with d/2 bytes a
vector) in exchange for 8x less memory, so it is only chosen where memory leaves no choice.

Ids: item ids are stored in the order given, and FAISS ids are the row numbers 0..n-1 (every kind
here numbers rows that way by itself, so no `IndexIDMap` layer is needed). The id list is saved
beside the index file.

Search with exclusions (`exclude`: the user's seen items) and a filter (`allowed`: e.g. one
category) works by over-fetch then mask: ask FAISS for k + |excluded| (divided by the allowed
fraction), drop masked rows, and if a query still has fewer than k, double the fetch (and, for IVF,
the number of probed lists when the probed lists ran dry) until k are found or the whole catalog has
been returned. So exactly k come back whenever k items survive the masks (exact kinds guarantee it;
ANN kinds return the best k they find).

GPU: when `faiss.get_num_gpus() > 0` and the config does not say `use_gpu=False`, flat and IVF
indexes are built on one GPU and searched on all GPUs (`index_cpu_to_all_gpus`); a CPU copy is kept
for saving and for the rare over-fetch beyond the GPU's k limit. Any GPU failure falls back to the
CPU with a warning: the CPU path is the tested one.

Saved folder: `index.faiss`, `item_ids.json`, `manifest.json` (kind, params, dim, count, encoder
version, FAISS version, SHA-256 and size of each file, and one combined `checksum`). `load` checks
every hash before trusting a byte, and raises `DataError` naming the file on a mismatch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.errors import ConfigError, DataError
from recsys.fsutil import file_sha256

log = logging.getLogger(__name__)

KINDS = ("auto", "flat", "ivf_flat", "ivf_pq", "hnsw")
FLAT_MAX = 50_000
GPU_FLAT_MAX = 5_000_000
PQ_MIN = 20_000_000
FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
IDS_FILE = "item_ids.json"
MANIFEST_FILE = "manifest.json"
# FAISS GPU top-k selection is limited to 2048 (GPU_MAX_SELECTION_K); larger fetches use the CPU copy.
_GPU_MAX_K = 2048


@dataclass(frozen=True)
class IndexConfig:
    """How to build and search an index. `None` means "derive from the catalog size" (see `resolve`).

    - `nlist`: IVF lists; default 4*sqrt(n), at most n/39 so k-means has 39 points a centroid.
    - `nprobe`: IVF lists scanned a query; default: calibrated at build (see the module doc), or
      max(16, nlist/8) when calibration is off.
    - `pq_m`, `pq_nbits`: IVF-PQ sub-quantisers (must divide the dimension; default d/2, or the
      largest divisor of d not above d/2) and bits a code.
    - `hnsw_m`, `ef_construction`, `ef_search`: HNSW graph degree, build and search beam widths.
      `ef_search` defaults to calibrated (or 256 when calibration is off), and is raised to the
      fetch size when a search asks for more.
    - `calibrate_recall`: recall@100 that build-time calibration aims for; None turns it off.
    - `calibrate_queries`: how many catalog vectors calibration searches with.
    - `train_size`: vectors sampled (with `seed`) to train IVF/PQ; default max(64*nlist, 20,000).
    - `use_gpu`: `None` = use GPUs when FAISS sees any; `False` forces the CPU.
    - `threads`: FAISS OpenMP threads for this process (None leaves FAISS's default).
    """

    kind: str = "auto"
    nlist: int | None = None
    nprobe: int | None = None
    pq_m: int | None = None
    pq_nbits: int = 8
    hnsw_m: int = 32
    ef_construction: int = 128
    ef_search: int | None = None
    calibrate_recall: float | None = 0.97
    calibrate_queries: int = 200
    train_size: int | None = None
    seed: int = 0
    use_gpu: bool | None = None
    threads: int | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> IndexConfig:
        """Build from a config mapping; an unknown key is a typo worth stopping for."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown index setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def check(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"index kind must be one of {KINDS}, got {self.kind!r}")
        for name in (
            "nlist",
            "nprobe",
            "pq_m",
            "hnsw_m",
            "ef_construction",
            "ef_search",
            "train_size",
            "threads",
            "calibrate_queries",
        ):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"index setting '{name}' must be a positive integer, got {value!r}")
        if not isinstance(self.pq_nbits, int) or not 1 <= self.pq_nbits <= 16:
            raise ConfigError(f"index setting 'pq_nbits' must be an integer in 1..16, got {self.pq_nbits!r}")
        target = self.calibrate_recall
        if target is not None and (
            isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target <= 1
        ):
            raise ConfigError(f"index setting 'calibrate_recall' must be in (0, 1] or None, got {target!r}")

    def resolve(self, n: int, dim: int, gpus: int = 0) -> IndexConfig:
        """Concrete kind and parameters for n vectors of dimension `dim` (the values that get saved)."""
        self.check()
        kind = self.kind
        if kind == "auto":
            use_gpus = gpus > 0 and self.use_gpu is not False
            if n < FLAT_MAX or (use_gpus and n < GPU_FLAT_MAX):
                kind = "flat"
            elif n >= PQ_MIN:
                kind = "ivf_pq"
            else:
                kind = "ivf_flat"
        if kind == "flat":
            return replace(self, kind=kind, nlist=None, nprobe=None, pq_m=None, train_size=None)
        if kind == "hnsw":
            return replace(self, kind=kind, nlist=None, nprobe=None, pq_m=None, train_size=None)
        max_nlist = max(1, n // 39)
        nlist = self.nlist or int(min(max(1, round(4 * math.sqrt(n))), max_nlist))
        if nlist > n:
            raise ConfigError(f"index setting 'nlist' ({nlist}) exceeds the number of vectors ({n})")
        nprobe = min(self.nprobe, nlist) if self.nprobe else None  # None: calibrated by `build`
        train_size = min(n, self.train_size or max(64 * nlist, 20_000))
        pq_m = None
        if kind == "ivf_pq":
            pq_m = self.pq_m or max(m for m in range(1, max(1, dim // 2) + 1) if dim % m == 0)
            if dim % pq_m:
                raise ConfigError(f"index setting 'pq_m' ({pq_m}) must divide the vector dimension ({dim})")
            if train_size < 2**self.pq_nbits:
                raise ConfigError(
                    f"IVF-PQ with pq_nbits={self.pq_nbits} needs at least {2**self.pq_nbits} training vectors, "
                    f"have {train_size}: use kind 'flat' or 'ivf_flat' for a catalog this small"
                )
        return replace(self, kind=kind, nlist=nlist, nprobe=nprobe, pq_m=pq_m, train_size=train_size)

    def search_params(self) -> dict[str, Any]:
        """The parameters that shape the index itself (what the manifest records)."""
        keep = {
            "flat": (),
            "hnsw": ("hnsw_m", "ef_construction", "ef_search"),
            "ivf_flat": ("nlist", "nprobe", "train_size", "seed"),
            "ivf_pq": ("nlist", "nprobe", "pq_m", "pq_nbits", "train_size", "seed"),
        }[self.kind]
        return {"kind": self.kind, **{name: getattr(self, name) for name in keep}}


@dataclass
class SearchResult:
    """Top-k per query. `rows`/`scores` are [queries, k], padded with -1 / -inf where fewer than k
    items survived the masks; `counts` says how many are real. `ids` gives the item ids, trimmed."""

    rows: np.ndarray
    scores: np.ndarray
    counts: np.ndarray
    item_ids: np.ndarray = field(repr=False)

    @property
    def ids(self) -> list[list[str]]:
        return [self.item_ids[r[:c]].tolist() for r, c in zip(self.rows, self.counts, strict=True)]

    def to_frame(self, query_keys: Sequence[Any] | None = None):
        """Long table `query, rank (1-based), item_id, score` (query = position or the given keys)."""
        nq, k = self.rows.shape
        valid = self.rows >= 0
        q_index = np.repeat(np.arange(nq), k).reshape(nq, k)[valid]
        ranks = np.tile(np.arange(1, k + 1), nq).reshape(nq, k)[valid]
        query = list(np.asarray(query_keys, dtype=object)[q_index]) if query_keys is not None else q_index
        return pl.DataFrame(
            {
                "query": query,
                "rank": ranks.astype(np.int32),
                "item_id": pl.Series(self.item_ids[self.rows[valid]].tolist(), dtype=pl.String),
                "score": self.scores[valid].astype(np.float32),
            }
        )


def _faiss():
    try:
        # local (c): FAISS loads only when an index is built or loaded (`import recsys.serving` stays free of it)
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a hard dependency
        raise ConfigError("FAISS is not installed: pip install faiss-cpu (or faiss-gpu-cu12)") from exc
    return faiss


def _as_matrix(vectors: Any, what: str, dim: int | None = None) -> np.ndarray:
    """float32, C-contiguous, 2-D, finite: what FAISS needs, checked here so errors name the row."""
    try:
        x = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} are not numeric vectors: {exc}") from exc
    if x.ndim == 1 and dim is not None and x.shape[0] == dim:
        x = x[None, :]
    if x.ndim != 2:
        raise DataError(f"{what} must be a 2-D array [n, dim], got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise DataError(f"{what} have dimension {x.shape[1]}, the index has {dim}")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(f"{what} contain NaN or infinite values", row=int(bad[0]) + 1, count=int(bad.size))
    return np.ascontiguousarray(x)


def _combined_checksum(files: dict[str, dict[str, Any]]) -> str:
    """One hash naming the whole saved index: the SHA-256 of the sorted `name:sha256` lines."""
    text = "".join(f"{name}:{files[name]['sha256']}\n" for name in sorted(files))
    return hashlib.sha256(text.encode()).hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


class VectorIndex:
    """Item vectors searchable by inner product, with string ids, masks, GPU use and checked saves."""

    def __init__(
        self,
        index: Any,
        item_ids: np.ndarray,
        config: IndexConfig,
        encoder_version: str | None,
        checksum: str | None = None,
        calibration: dict[str, Any] | None = None,
    ) -> None:
        # Use `build` or `load`; this only wires already-validated parts together.
        self._cpu = index
        self.item_ids = item_ids
        self.config = config
        self.encoder_version = encoder_version
        self.checksum = checksum
        self.calibration = calibration
        self._row_of: dict[str, int] | None = None
        self._gpu = None
        if config.threads:
            _faiss().omp_set_num_threads(config.threads)
        if self._want_gpu():
            self._gpu = self._to_gpus(index)

    # ----------------------------------------------------------------- build
    @classmethod
    def build(
        cls,
        item_ids: Sequence[str],
        vectors: Any,
        config: IndexConfig | dict | None = None,
        encoder_version: str | None = None,
    ) -> VectorIndex:
        """Index `vectors[i]` under `item_ids[i]`. Ids must be unique, non-empty strings."""
        faiss = _faiss()
        cfg = config if isinstance(config, IndexConfig) else IndexConfig.from_dict(config)
        cfg.check()
        ids = np.asarray([str(i) if i is not None else None for i in item_ids], dtype=object)
        x = _as_matrix(vectors, "item vectors")
        if len(ids) != x.shape[0]:
            raise DataError(f"{len(ids)} item ids but {x.shape[0]} vectors: they must pair one to one")
        if len(ids) == 0:
            raise DataError("cannot build an index over zero items")
        _check_ids(ids)
        n, dim = x.shape
        gpus = faiss.get_num_gpus() if cfg.use_gpu is not False else 0
        cfg = cfg.resolve(n, dim, gpus)
        if cfg.threads:
            faiss.omp_set_num_threads(cfg.threads)
        index = _make_index(cfg, dim)
        if cfg.kind in ("ivf_flat", "ivf_pq"):
            rng = np.random.default_rng(cfg.seed)
            sample = x if cfg.train_size >= n else x[np.sort(rng.choice(n, size=cfg.train_size, replace=False))]
            index = _train_and_add(index, sample, x, gpus)
            index.make_direct_map()  # lets `reconstruct` fetch an item's vector (for "similar items")
        else:
            index.add(x)
        cfg, calibration = _calibrate(index, x, cfg)
        if cfg.kind == "hnsw":
            index.hnsw.efSearch = cfg.ef_search
        elif cfg.kind in ("ivf_flat", "ivf_pq"):
            index.nprobe = cfg.nprobe  # carried into GPU clones, which take no per-call parameters
        return cls(index, ids, cfg, encoder_version, calibration=calibration)

    # ---------------------------------------------------------------- basics
    def __len__(self) -> int:
        return int(self._cpu.ntotal)

    @property
    def dim(self) -> int:
        return int(self._cpu.d)

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def on_gpu(self) -> bool:
        return self._gpu is not None

    def __repr__(self) -> str:
        return (
            f"VectorIndex(kind={self.kind!r}, count={len(self)}, dim={self.dim}, "
            f"encoder_version={self.encoder_version!r}, gpu={self.on_gpu})"
        )

    def rows_of(self, ids: Sequence[str] | np.ndarray, missing: str = "skip") -> np.ndarray:
        """Row numbers of item ids. `missing="skip"` drops unknown ids, `"raise"` raises `DataError`."""
        if self._row_of is None:
            self._row_of = {item: row for row, item in enumerate(self.item_ids.tolist())}
        rows = []
        for item in ids:
            row = self._row_of.get(str(item))
            if row is None:
                if missing == "raise":
                    raise DataError(f"unknown item id {item!r}: it is not in this index", column="item_id")
                continue
            rows.append(row)
        return np.asarray(rows, dtype=np.int64)

    def reconstruct(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of items (exact for flat/hnsw/ivf_flat, decoded for ivf_pq)."""
        rows = self.rows_of(ids, missing="raise")
        return (
            np.stack([self._cpu.reconstruct(int(r)) for r in rows])
            if len(rows)
            else np.zeros((0, self.dim), dtype=np.float32)
        )

    # ---------------------------------------------------------------- search
    def search(self, queries: Any, k: int, exclude: Sequence[Any] | None = None, allowed: Any = None) -> SearchResult:
        """Top-k items by inner product for each query row.

        `exclude[i]`: item ids (str) or row numbers (int) never to return for query i (its seen items);
        unknown ids are ignored, since they cannot be returned anyway. `allowed`: one subset for all
        queries, as item ids, row numbers or a boolean mask of length `len(self)`; None = everything.
        """
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        q = _as_matrix(queries, "query vectors", self.dim)
        nq, n = q.shape[0], len(self)
        excl_codes, excl_counts = self._exclusion_codes(exclude, nq)
        allowed_mask = self._allowed_mask(allowed)
        allowed_n = n if allowed_mask is None else int(allowed_mask.sum())
        k_eff = min(int(k), n)
        rows = np.full((nq, k), -1, dtype=np.int64)
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        counts = np.zeros(nq, dtype=np.int64)
        if nq == 0 or allowed_n == 0:
            return SearchResult(rows, scores, counts, self.item_ids)
        # First fetch: enough for k after removing every excluded item and the disallowed share.
        # Rounded up to a power of two so a batch splits into few FAISS calls, not one a query.
        frac = allowed_n / n
        need = np.ceil((k_eff + excl_counts) / frac * (1.0 if frac == 1.0 else 1.2))
        fetch = np.minimum(2 ** np.ceil(np.log2(np.maximum(need, k_eff))), n).astype(np.int64)
        probe_scale = np.ones(nq, dtype=np.int64)
        pending = np.arange(nq)
        while pending.size:
            # Queries sharing a fetch size and probe scale are searched together.
            groups: dict[tuple[int, int], list[int]] = {}
            for i in pending:
                groups.setdefault((int(fetch[i]), int(probe_scale[i])), []).append(int(i))
            still: list[int] = []
            for (f, scale), members in groups.items():
                idx = np.asarray(members)
                d_block, i_block = self._raw_search(q[idx], f, scale)
                keep = i_block >= 0
                if allowed_mask is not None:
                    keep &= allowed_mask[np.where(keep, i_block, 0)]
                if excl_codes.size:
                    codes = idx[:, None].astype(np.int64) * n + np.where(keep, i_block, 0)
                    keep &= ~np.isin(codes, excl_codes)
                rank = np.cumsum(keep, axis=1)
                take = keep & (rank <= k_eff)
                got = take.sum(axis=1)
                for j, qi in enumerate(idx):
                    c = int(got[j])
                    rows[qi, :c] = i_block[j][take[j]]
                    scores[qi, :c] = d_block[j][take[j]]
                    counts[qi] = c
                    # Enough, or nothing more to see: the catalog was fetched whole and fully probed.
                    ran_dry = bool((i_block[j] < 0).any())
                    exhausted = f >= n and (not ran_dry or not self._can_probe_more(scale))
                    if c >= k_eff or exhausted:
                        continue
                    fetch[qi] = min(2 * f, n)
                    if ran_dry and self._can_probe_more(scale):
                        probe_scale[qi] = scale * 2
                    still.append(int(qi))
            pending = np.asarray(sorted(still), dtype=np.int64)
        return SearchResult(rows, scores, counts, self.item_ids)

    def _exclusion_codes(self, exclude: Sequence[Any] | None, nq: int) -> tuple[np.ndarray, np.ndarray]:
        """Excluded (query, row) pairs as sorted int64 codes query*n + row, and the count per query."""
        counts = np.zeros(nq, dtype=np.int64)
        if exclude is None:
            return np.zeros(0, dtype=np.int64), counts
        if len(exclude) != nq:
            raise DataError(f"exclude has {len(exclude)} entries but there are {nq} queries: one list a query")
        n = len(self)
        parts = []
        for i, items in enumerate(exclude):
            rows = self._as_rows(items, "exclude")
            rows = np.unique(rows)
            counts[i] = rows.size
            parts.append(i * n + rows)
        codes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return np.sort(codes), counts

    def _allowed_mask(self, allowed: Any) -> np.ndarray | None:
        if allowed is None:
            return None
        arr = np.asarray(allowed)
        n = len(self)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise DataError(f"allowed mask has shape {arr.shape}, the index holds {n} items")
            return arr
        mask = np.zeros(n, dtype=bool)
        mask[self._as_rows(allowed, "allowed")] = True
        return mask

    def _as_rows(self, items: Any, what: str) -> np.ndarray:
        if items is None:
            return np.zeros(0, dtype=np.int64)
        arr = np.asarray(items)
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if arr.dtype.kind in "iu":
            rows = arr.astype(np.int64).ravel()
            if rows.min() < 0 or rows.max() >= len(self):
                raise DataError(f"{what} holds row numbers outside 0..{len(self) - 1}")
            return rows
        return self.rows_of(arr.ravel().tolist())

    def _can_probe_more(self, scale: int) -> bool:
        if self.kind not in ("ivf_flat", "ivf_pq"):
            return False
        assert self.config.nprobe is not None and self.config.nlist is not None  # set by resolve + calibration
        return self.config.nprobe * scale < self.config.nlist

    def _raw_search(self, q: np.ndarray, fetch: int, probe_scale: int) -> tuple[np.ndarray, np.ndarray]:
        """One FAISS call: the GPU copy for the default settings, else the CPU index with parameters."""
        faiss = _faiss()
        cfg = self.config
        if self._gpu is not None and probe_scale == 1 and fetch <= _GPU_MAX_K:
            try:
                return self._gpu.search(q, fetch)
            except RuntimeError as exc:  # pragma: no cover - needs a GPU
                log.warning("GPU search failed (%s); using the CPU index from now on", exc)
                self._gpu = None
        params = None
        if cfg.kind == "hnsw":
            assert cfg.ef_search is not None  # set by calibration at build
            params = faiss.SearchParametersHNSW(efSearch=max(cfg.ef_search, fetch))
        elif cfg.kind in ("ivf_flat", "ivf_pq"):
            assert cfg.nprobe is not None and cfg.nlist is not None  # set by resolve + calibration
            params = faiss.SearchParametersIVF(nprobe=min(cfg.nprobe * probe_scale, cfg.nlist))
        if params is None:
            return self._cpu.search(q, fetch)
        return self._cpu.search(q, fetch, params=params)

    # ------------------------------------------------------------------- GPU
    def _want_gpu(self) -> bool:
        if self.config.use_gpu is False or self.kind == "hnsw":
            return False
        if (self.config.nprobe or 0) > _GPU_MAX_K:  # FAISS GPU IVF probes at most 2048 lists
            return False
        return _faiss().get_num_gpus() > 0

    @staticmethod
    def _to_gpus(index: Any) -> Any:  # pragma: no cover - needs a GPU
        try:
            return _faiss().index_cpu_to_all_gpus(index)
        except (RuntimeError, AttributeError) as exc:
            log.warning("could not move the index to the GPUs (%s); searching on the CPU", exc)
            return None

    # ------------------------------------------------------------ save / load
    def save(self, folder: str | Path, encoder_version: str | None = None) -> str:
        """Write index, ids and a checksum manifest into `folder` (created if needed); returns the checksum.

        `encoder_version` (else the one given at build) names the encoder whose vectors these are, so
        a server can refuse an index built by a different encoder.
        """
        faiss = _faiss()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        version = encoder_version if encoder_version is not None else self.encoder_version
        faiss.write_index(self._cpu, str(folder / INDEX_FILE))
        with open(folder / IDS_FILE, "w", encoding="utf-8") as handle:
            json.dump(self.item_ids.tolist(), handle, ensure_ascii=False)
        files = {}
        for name in (INDEX_FILE, IDS_FILE):
            _fsync_file(folder / name)
            files[name] = {"sha256": file_sha256(folder / name), "bytes": (folder / name).stat().st_size}
        checksum = _combined_checksum(files)
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "metric": "inner_product",
            "dim": self.dim,
            "count": len(self),
            "params": self.config.search_params(),
            "config": asdict(self.config),
            "encoder_version": version,
            "faiss_version": getattr(faiss, "__version__", "unknown"),
            "files": files,
            "checksum": checksum,
            "calibration": self.calibration,
        }
        tmp = folder / (MANIFEST_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / MANIFEST_FILE)
        self.encoder_version = version
        self.checksum = checksum
        return checksum

    @classmethod
    def load(
        cls,
        folder: str | Path,
        *,
        verify: bool = True,
        encoder_version: str | None = None,
        config: IndexConfig | dict | None = None,
    ) -> VectorIndex:
        """Read a folder written by `save`, checking every file's SHA-256 against the manifest first.

        `encoder_version`, when given, must equal the recorded one (`ConfigError` otherwise): the
        vectors of a different encoder live in a different space. `config` may override search-time
        settings (`nprobe`, `ef_search`, `use_gpu`, `threads`); build-time ones come from the manifest.
        """
        faiss = _faiss()
        folder = Path(folder)
        manifest = read_manifest(folder)
        if verify:
            verify_files(folder, manifest)
        if encoder_version is not None and manifest.get("encoder_version") != encoder_version:
            raise ConfigError(
                f"index in {folder} was built with encoder version {manifest.get('encoder_version')!r}, "
                f"not {encoder_version!r}: rebuild the index for this encoder"
            )
        saved = IndexConfig(
            **{k: v for k, v in manifest["config"].items() if k in {f.name for f in fields(IndexConfig)}}
        )
        if config is not None:
            override = config if isinstance(config, IndexConfig) else IndexConfig.from_dict(config)
            saved = replace(
                saved,
                **{
                    name: getattr(override, name)
                    for name in ("nprobe", "ef_search", "use_gpu", "threads")
                    if getattr(override, name) is not None
                },
            )
        try:
            index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError as exc:
            raise DataError(f"FAISS cannot read the index: {exc}", file=str(folder / INDEX_FILE)) from exc
        try:
            with open(folder / IDS_FILE, encoding="utf-8") as handle:
                ids = np.asarray(json.load(handle), dtype=object)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the item id list: {exc}", file=str(folder / IDS_FILE)) from exc
        if index.ntotal != manifest["count"] or len(ids) != manifest["count"] or index.d != manifest["dim"]:
            raise DataError(
                f"index holds {index.ntotal} vectors of dim {index.d} and {len(ids)} ids; the manifest says "
                f"{manifest['count']} of dim {manifest['dim']}",
                file=str(folder / MANIFEST_FILE),
            )
        return cls(
            index, ids, saved, manifest.get("encoder_version"), manifest.get("checksum"), manifest.get("calibration")
        )


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST_FILE
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError as exc:
        raise DataError("no index manifest: not a saved index folder, or an unfinished one", file=str(path)) from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable index manifest: {exc}", file=str(path)) from exc
    required = ("format_version", "dim", "count", "config", "files", "checksum")
    missing = [key for key in required if key not in manifest]
    if missing:
        raise DataError(f"index manifest lacks {missing}", file=str(path))
    if manifest["format_version"] != FORMAT_VERSION:
        raise DataError(f"index format version {manifest['format_version']} is not {FORMAT_VERSION}", file=str(path))
    return manifest


def verify_files(folder: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists exists with the recorded size and SHA-256, and the combined checksum
    matches; raises `DataError` naming the first file that does not."""
    folder = Path(folder)
    files = manifest["files"]
    for name in (INDEX_FILE, IDS_FILE):
        if name not in files:
            raise DataError(f"index manifest does not list {name}", file=str(folder / MANIFEST_FILE))
    for name, entry in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            raise DataError("index file is missing", file=str(path))
        if path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
            raise DataError("checksum mismatch: the file changed or was truncated after it was saved", file=str(path))
    if _combined_checksum(files) != manifest["checksum"]:
        raise DataError("combined checksum does not match the file hashes", file=str(folder / MANIFEST_FILE))


def _check_ids(ids: np.ndarray) -> None:
    bad = np.asarray([i is None or i == "" for i in ids])
    if bad.any():
        raise DataError(
            "null or empty item id", column="item_id", row=int(np.flatnonzero(bad)[0]) + 1, count=int(bad.sum())
        )
    _, first, counts = np.unique(ids.astype(str), return_index=True, return_counts=True)
    if (counts > 1).any():
        dup_rows = np.sort(first[counts > 1])
        raise DataError(
            "duplicate item id: each item must be indexed once",
            column="item_id",
            row=int(dup_rows[0]) + 1,
            count=int((counts > 1).sum()),
        )


def _calibrate(index: Any, x: np.ndarray, cfg: IndexConfig) -> tuple[IndexConfig, dict[str, Any] | None]:
    """Pick the search-time knob (IVF `nprobe`, HNSW `efSearch`) the config left open; see the module doc."""
    faiss = _faiss()
    if cfg.kind == "hnsw" and cfg.ef_search is None:
        name, fallback, ladder = "ef_search", 256, _doubling(128, max(128, len(x)), cap=4096)
    elif cfg.kind in ("ivf_flat", "ivf_pq") and cfg.nprobe is None:
        assert cfg.nlist is not None  # set by IndexConfig.resolve
        name, fallback, ladder = "nprobe", min(cfg.nlist, max(16, cfg.nlist // 8)), _doubling(8, cfg.nlist)
    else:
        return cfg, None
    if cfg.calibrate_recall is None:
        knob: dict[str, Any] = {name: fallback}  # one of the int knobs
        return replace(cfg, **knob), None
    n, dim = x.shape
    k = min(100, n)
    rng = np.random.default_rng(cfg.seed + 1)
    base = x[np.sort(rng.choice(n, size=min(cfg.calibrate_queries, n), replace=False))]
    scale = np.linalg.norm(base, axis=1, keepdims=True) / math.sqrt(dim)
    queries = np.ascontiguousarray(base + 0.1 * scale * rng.standard_normal(base.shape).astype(np.float32))
    _, truth = faiss.knn(queries, x, k, metric=faiss.METRIC_INNER_PRODUCT)
    chosen, recall = ladder[-1], 0.0
    tried: list[tuple[int, float]] = []
    for value in ladder:
        if name == "ef_search":
            params = faiss.SearchParametersHNSW(efSearch=value)
        else:
            params = faiss.SearchParametersIVF(nprobe=value)
        _, got = index.search(queries, k, params=params)
        value_recall = float(np.mean([np.isin(g, t).sum() / k for g, t in zip(got, truth, strict=True)]))
        if tried and value_recall - tried[-1][1] < 0.002 and value_recall < cfg.calibrate_recall:
            chosen, recall = tried[-1]  # no longer improving (PQ's quantisation caps recall): stop
            break
        tried.append((value, value_recall))
        chosen, recall = value, value_recall
        if value_recall >= cfg.calibrate_recall:
            break
    if recall < cfg.calibrate_recall:
        log.warning(
            "index calibration: %s=%d reaches recall@%d %.3f, below the %.2f aimed for",
            name,
            chosen,
            k,
            recall,
            cfg.calibrate_recall,
        )
    info = {
        "param": name,
        "value": int(chosen),
        "recall_at_100": round(recall, 4),
        "queries": len(queries),
        "target": cfg.calibrate_recall,
        "tried": [[int(v), round(r, 4)] for v, r in tried],
    }
    knob = {name: int(chosen)}
    return replace(cfg, **knob), info


def _doubling(start: int, stop: int, cap: int | None = None) -> list[int]:
    """start, 2*start, ... up to and including `stop` (or `cap`): the values calibration tries."""
    stop = min(stop, cap) if cap else stop
    values, value = [], max(1, min(start, stop))
    while value < stop:
        values.append(value)
        value *= 2
    return [*values, stop]


def _make_index(cfg: IndexConfig, dim: int) -> Any:
    faiss = _faiss()
    ip = faiss.METRIC_INNER_PRODUCT
    if cfg.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if cfg.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, ip)
        index.hnsw.efConstruction = cfg.ef_construction
        return index
    quantizer = faiss.IndexFlatIP(dim)
    if cfg.kind == "ivf_flat":
        index = faiss.IndexIVFFlat(quantizer, dim, cfg.nlist, ip)
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, cfg.nlist, cfg.pq_m, cfg.pq_nbits, ip)
        index.pq.cp.seed = cfg.seed
    index.cp.seed = cfg.seed
    return index


def _train_and_add(index: Any, sample: np.ndarray, x: np.ndarray, gpus: int) -> Any:
    """Train IVF(-PQ) on the sample and add all vectors: on one GPU when there is one, else the CPU.

    Training on one GPU (not all) keeps k-means single-sourced, and the result comes back as a CPU
    index, which is what gets saved and then cloned to every GPU for search.
    """
    faiss = _faiss()
    if gpus > 0:  # pragma: no cover - needs a GPU
        try:
            gpu_index = faiss.index_cpu_to_all_gpus(index, ngpu=1)
            gpu_index.train(sample)
            gpu_index.add(x)
            return faiss.index_gpu_to_cpu(gpu_index)
        except (RuntimeError, AttributeError) as exc:
            log.warning("GPU build failed (%s); building on the CPU", exc)
    index.train(sample)
    index.add(x)
    return index
