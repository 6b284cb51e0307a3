"""Incremental item-embedding store and the user-vector files that travel with an index version.

Why a store: re-encoding a whole catalog every night wastes hours of GPU (or days of CPU) on text
that did not change. The nightly job (`jobs/nightly_embed.py`) asks the store which items already
have a vector for *this* text under *this* encoder, encodes only the rest, and writes them back.

Key: `(item_id, sha256 of the item text, encoder key)`. The encoder key is the encoder version
(`recsys-encoder/3`, or a content hash for a local folder) plus a variant such as `int8`, so vectors
of different encoders, or of the same encoder at a different precision, are never mixed:
- an unchanged item (same id, same text) is found and not re-encoded;
- an edited item has a new text hash and is encoded again;
- a new encoder version has an empty folder of its own, so everything is re-encoded;
- a removed item is simply not asked for: it leaves the index, and compaction drops its rows.

Layout under `root`:

    root/items/<key>/encoder.json          encoder version, variant, dim, dtype (first shard writes it)
    root/items/<key>/part-<stamp>-<pid>-<n>.parquet
                                            item_id, text_sha256, vector (fixed-size list, fp32 or fp16)
    root/.lock                              flock held by one writer (a nightly run) at a time

Crash safety: each shard is written to a `.tmp` name, fsynced and renamed into place, so a shard
exists whole or not at all. A run killed half way leaves its finished shards; the rerun finds their
items and encodes only what is missing. Compaction writes the surviving rows as new shards first and
deletes the old ones afterwards; the duplicates a crash in between may leave are harmless (lookup
keeps one row per key).

User vectors (for the service's known-user cache) are one parquet file per index version, written
under the index store's root (`user_vectors/users-<sha256 prefix>.parquet`) before the version is
published and referenced from the version's metadata (`extra.user_vectors`: path, sha256, count,
as_of), so a reader loads exactly the file that version was built with and can verify it.

Ground floor: numpy, polars and the standard library only; no encoder imports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl

from recsys.errors import ConfigError, DataError
from recsys.fsutil import file_sha256, fsync_dir, write_atomically

STORE_FORMAT = 1
DEFAULT_SHARD_SIZE = 4096
DTYPES = ("float32", "float16")
ITEMS_DIR = "items"
ENCODER_FILE = "encoder.json"
ENCODER_META = "encoder.json"  # encoders.peft_methods writes it into a bundle's encoder/
USER_VECTORS_DIR = "user_vectors"
# Folders of a training-run folder that never change what the encoder computes (resume state).
_UNHASHED_DIRS = ("checkpoint", "__pycache__")
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


# ----------------------------------------------------------------------------------- hashing
def text_sha256(texts: Iterable[str]) -> list[str]:
    """Hex SHA-256 of each text (UTF-8): the part of the key that says "this exact text"."""
    return [hashlib.sha256(text.encode("utf-8")).hexdigest() for text in texts]


def folder_sha256(folder: str | Path, skip_dirs: Sequence[str] = _UNHASHED_DIRS) -> str:
    """Hex SHA-256 over every file's relative path and bytes under `folder` (sorted, so stable).

    Top-level folders named in `skip_dirs` (a training run's `checkpoint/`) are left out: they hold
    resume state, not the model. Hidden files are left out too (editor and OS litter).
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder")
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.relative_to(root).parts[0] not in skip_dirs
    )
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            for block in iter(partial(handle.read, 1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def local_encoder_version(folder: str | Path) -> str:
    """Version string of an encoder given as a local folder: `sha256-<16 hex>` of its content.

    A bundle or training run whose base model is a local folder *outside* it (a run trained from
    `--base-model /models/x`) depends on that folder's weights too, so they are hashed with it; a
    base named by model name or hub id is part of the hashed metadata already. The service calls
    this on the folder it serves, so it can refuse an index made by a different encoder.
    """
    root = Path(folder).resolve()
    digest = hashlib.sha256(folder_sha256(root).encode("ascii"))
    for extra in outside_base_folders(root):
        digest.update(folder_sha256(extra).encode("ascii"))
    return f"sha256-{digest.hexdigest()[:16]}"


def outside_base_folders(folder: str | Path) -> list[Path]:
    """The local base-model folder outside `folder` its metadata refers to (`bundle.json` "base",
    else `encoder/encoder.json` "base_model"), if there is one."""
    root = Path(folder).resolve()
    base = ""
    for name, key in (("bundle.json", "base"), (f"encoder/{ENCODER_META}", "base_model")):
        meta_file = root / name
        if meta_file.is_file():
            try:
                base = str(json.loads(meta_file.read_text(encoding="utf-8")).get(key) or "")
            except (ValueError, UnicodeDecodeError):
                base = ""
            break
    if not base:
        return []
    candidate = Path(base).expanduser()
    candidate = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not candidate.is_dir() or candidate == root or root in candidate.parents:
        return []
    return [candidate]


def registry_encoder_version(name: str, version: int | str) -> str:
    """Version string of a registered encoder: `<model name>/<version>` (e.g. `recsys-encoder/3`)."""
    return f"{name}/{version}"


def encoder_key(encoder_version: str, variant: str | None = None) -> str:
    """Folder name for an encoder version (+ variant): readable slug plus a hash, so it is unique."""
    if not encoder_version or not str(encoder_version).strip():
        raise ConfigError("the embedding store needs an encoder version")
    full = f"{encoder_version}+{variant}" if variant else str(encoder_version)
    slug = _SLUG.sub("_", full).strip("._-")[:60] or "encoder"
    return f"{slug}-{hashlib.sha256(full.encode('utf-8')).hexdigest()[:8]}"


# ------------------------------------------------------------------------------ store layout
@dataclass(frozen=True)
class StoreLayout:
    """Where the parts of a nightly store live: the nightly job writes them, the service reads them.

        root/embeddings/   EmbeddingStore: item vectors by (item id, text hash, encoder key)
        root/index/        IndexStore: CURRENT, versions/<v>/, and user_vectors/ files
        root/encoders/     registry encoders downloaded once per (model, version)
        root/rankers/      registry rankers downloaded once per (model, version) (the service)
        root/.lock         one nightly run at a time
        root/events/       the service's real-time event log (events.sqlite; `recsys.serving.events`)

    The service also serves a bare `IndexStore` root (`served`): its registry models then go to a
    temporary cache (`encoders` and `rankers` are None).
    """

    root: Path
    index: Path
    encoders: Path | None
    rankers: Path | None

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def events(self) -> Path:
        """The default event log of a service serving this store."""
        return self.root / "events" / "events.sqlite"

    @classmethod
    def nightly(cls, store: str | Path) -> StoreLayout:
        """The layout of the nightly store at `store`."""
        root = Path(store)
        return cls(root, root / "index", root / "encoders", root / "rankers")

    @classmethod
    def served(cls, store: str | Path) -> StoreLayout:
        """What the service reads at `store`: a nightly store, or an `IndexStore` root itself (CURRENT,
        versions/) when it has no `index/` folder."""
        root = Path(store)
        if (root / "index").is_dir() or not ((root / "CURRENT").exists() or (root / "versions").is_dir()):
            return cls.nightly(root)
        return cls(root, root, None, None)


# ------------------------------------------------------------------------------------ files


def _atomic_parquet(frame: pl.DataFrame, target: Path) -> None:
    """Write `frame` to `target` so that `target` exists whole or not at all."""
    write_atomically(target, frame.write_parquet)


def _atomic_json(data: dict[str, Any], target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold an flock on `path` (the kernel drops it if the holder dies, even by SIGKILL).

    `wait_s=0` fails at once with a `ConfigError` naming `what` when another process holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # local (c): fcntl is POSIX-only and this module must import without it
        import fcntl
    except ImportError:  # pragma: no cover - Windows: single writer by convention
        yield
        return
    with open(path, "a+") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ConfigError(f"{what} is in use by another process (lock {path})") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------ store
@dataclass
class EmbeddingPlan:
    """What a run must do for one catalog: which rows are cached and which must be encoded.

    Rows are positions in the catalog as given (`item_ids[i]`, `text_hashes[i]`).
    """

    item_ids: list[str]
    text_hashes: list[str]
    cached_rows: np.ndarray  # int64 positions found in the store
    cached_vectors: np.ndarray  # float32 [len(cached_rows), dim] (empty [0, 0] when nothing is cached)
    todo_rows: np.ndarray  # int64 positions to encode, in catalog order
    stored_rows: int  # rows the store holds for this encoder (duplicates and stale ones included)

    @property
    def dim(self) -> int | None:
        return int(self.cached_vectors.shape[1]) if len(self.cached_rows) else None


class EmbeddingStore:
    """Item vectors keyed by (item id, text hash, encoder key), as atomically written parquet shards."""

    def __init__(self, root: str | Path, dtype: str = "float32") -> None:
        if dtype not in DTYPES:
            raise ConfigError(f"embedding store dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.root = Path(root)
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.root)!r}, dtype={self.dtype!r})"

    # ------------------------------------------------------------------------------- layout
    def folder(self, encoder_version: str, variant: str | None = None) -> Path:
        return self.root / ITEMS_DIR / encoder_key(encoder_version, variant)

    def shards(self, encoder_version: str, variant: str | None = None) -> list[Path]:
        """Finished shards of one encoder key, oldest first (names sort by write time)."""
        folder = self.folder(encoder_version, variant)
        return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []

    def encoders(self) -> list[dict[str, Any]]:
        """`encoder.json` of every encoder key with vectors (version, variant, dim, dtype, key)."""
        base = self.root / ITEMS_DIR
        out = []
        for folder in sorted(base.iterdir()) if base.is_dir() else []:
            info = folder / ENCODER_FILE
            if info.is_file():
                out.append({**json.loads(info.read_text(encoding="utf-8")), "key": folder.name})
        return out

    def lock(self, wait_s: float = 0.0) -> contextlib.AbstractContextManager[None]:
        """One writer at a time (a nightly run holds it from plan to compaction)."""
        return exclusive_lock(self.root / ".lock", f"embedding store {self.root}", wait_s)

    # --------------------------------------------------------------------------------- read
    def _read(self, encoder_version: str, variant: str | None) -> pl.DataFrame:
        """All rows of one encoder key, one per (item_id, text_sha256): the newest shard wins."""
        shards = self.shards(encoder_version, variant)
        if not shards:
            return pl.DataFrame(schema={"item_id": pl.String, "text_sha256": pl.String, "vector": pl.Float32})
        frames = []
        for path in shards:
            try:
                frame = pl.read_parquet(path, columns=["item_id", "text_sha256", "vector"])
            except Exception as exc:  # polars raises several types for a damaged file
                raise DataError(
                    f"unreadable embedding shard ({exc}); delete it to re-encode its items", file=str(path)
                ) from exc
            width = cast("pl.Array", frame["vector"].dtype).size  # shards are written as fixed-size arrays
            frames.append(frame.with_columns(pl.col("vector").cast(pl.Array(pl.Float32, width))))
        widths = {cast("pl.Array", f["vector"].dtype).size for f in frames}
        if len(widths) != 1:
            raise DataError(
                f"embedding shards disagree on the vector size ({sorted(widths)})",
                file=str(self.folder(encoder_version, variant)),
            )
        return pl.concat(frames).unique(["item_id", "text_sha256"], keep="last", maintain_order=True)

    def plan(
        self,
        encoder_version: str,
        item_ids: Sequence[str],
        texts: Sequence[str] | None = None,
        *,
        text_hashes: Sequence[str] | None = None,
        variant: str | None = None,
    ) -> EmbeddingPlan:
        """Split a catalog into cached rows (with their vectors) and rows to encode."""
        ids = [str(i) for i in item_ids]
        hashes = list(text_hashes) if text_hashes is not None else text_sha256(_strings(texts, "text"))
        if len(hashes) != len(ids):
            raise DataError(f"{len(ids)} item ids but {len(hashes)} texts", column="text")
        stored = self._read(encoder_version, variant)
        catalog = pl.DataFrame({"item_id": ids, "text_sha256": hashes, "row": np.arange(len(ids), dtype=np.int64)})
        found = catalog.join(stored, on=["item_id", "text_sha256"], how="inner").sort("row")
        cached_rows = found["row"].to_numpy().astype(np.int64)
        cached = (
            found["vector"].to_numpy().astype(np.float32, copy=False)
            if found.height
            else np.zeros((0, 0), dtype=np.float32)
        )
        todo = np.setdiff1d(np.arange(len(ids), dtype=np.int64), cached_rows, assume_unique=True)
        return EmbeddingPlan(ids, hashes, cached_rows, cached, todo, stored.height)

    def vectors(
        self,
        encoder_version: str,
        item_ids: Sequence[str],
        texts: Sequence[str] | None = None,
        *,
        text_hashes: Sequence[str] | None = None,
        variant: str | None = None,
    ) -> np.ndarray:
        """float32 vectors of exactly these (item, text) pairs; `DataError` naming any that is missing."""
        plan = self.plan(encoder_version, item_ids, texts, text_hashes=text_hashes, variant=variant)
        if len(plan.todo_rows):
            missing = ", ".join(plan.item_ids[i] for i in plan.todo_rows[:5])
            raise DataError(
                f"{len(plan.todo_rows)} items have no stored vector for this text and encoder (first: {missing})",
                column="item_id",
            )
        return plan.cached_vectors

    # -------------------------------------------------------------------------------- write
    def write_shard(
        self,
        encoder_version: str,
        item_ids: Sequence[str],
        text_hashes: Sequence[str],
        vectors: np.ndarray,
        *,
        variant: str | None = None,
    ) -> Path:
        """Store one finished piece of work atomically; returns the shard's path.

        Vectors are stored in the store's dtype; `as_stored` gives what a later read returns.
        """
        x = np.asarray(vectors)
        if x.ndim != 2 or x.shape[0] != len(item_ids) or len(text_hashes) != len(item_ids):
            raise DataError(f"shard of {len(item_ids)} ids, {len(text_hashes)} hashes and vectors {x.shape}")
        if not np.isfinite(x).all():
            raise DataError("refusing to store non-finite vectors (NaN or inf)")
        folder = self.folder(encoder_version, variant)
        folder.mkdir(parents=True, exist_ok=True)
        info = folder / ENCODER_FILE
        dim = int(x.shape[1])
        if info.is_file():
            known = json.loads(info.read_text(encoding="utf-8"))
            if int(known["dim"]) != dim:
                raise DataError(
                    f"encoder {encoder_version!r} wrote {known['dim']}-d vectors before, now {dim}-d", file=str(info)
                )
        else:
            _atomic_json(
                {
                    "format_version": STORE_FORMAT,
                    "encoder_version": encoder_version,
                    "variant": variant,
                    "dim": dim,
                    "dtype": self.dtype,
                    "created_at": datetime.now(timezone.utc).isoformat(),
                },
                info,
            )
        inner = pl.Float16 if self.dtype == "float16" else pl.Float32
        frame = pl.DataFrame(
            {
                "item_id": [str(i) for i in item_ids],
                "text_sha256": list(text_hashes),
                "vector": pl.Series("vector", self.as_stored(x), dtype=pl.Array(inner, dim)),
            }
        )
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        target = folder / f"part-{stamp}-{os.getpid()}-{_next_serial():06d}.parquet"
        _atomic_parquet(frame, target)
        return target

    def as_stored(self, vectors: np.ndarray) -> np.ndarray:
        """`vectors` in the dtype the store keeps (fp16 or fp32)."""
        x = np.asarray(vectors, dtype=np.float32)
        return x.astype(np.float16) if self.dtype == "float16" else x

    def as_read(self, vectors: np.ndarray) -> np.ndarray:
        """What a later `plan`/`vectors` returns for freshly encoded `vectors` (float32)."""
        return self.as_stored(vectors).astype(np.float32)

    def compact(
        self,
        encoder_version: str,
        item_ids: Sequence[str],
        text_hashes: Sequence[str],
        *,
        variant: str | None = None,
        shard_size: int = DEFAULT_SHARD_SIZE,
        min_waste: float = 0.25,
    ) -> int:
        """Rewrite the live rows (this catalog's) into fresh shards when dead rows (edited or removed
        items, duplicates) reach `min_waste` of the stored rows or the shards are many and small.

        Returns the number of rows dropped (0 when nothing was rewritten).
        """
        shards = self.shards(encoder_version, variant)
        if not shards:
            return 0
        stored_rows = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in shards)
        live = pl.DataFrame({"item_id": [str(i) for i in item_ids], "text_sha256": list(text_hashes)})
        kept = live.join(
            self._read(encoder_version, variant), on=["item_id", "text_sha256"], how="inner", maintain_order="left"
        )
        dead = stored_rows - kept.height
        wanted_shards = max(1, -(-kept.height // shard_size))
        if dead < min_waste * max(stored_rows, 1) and len(shards) <= 4 * wanted_shards:
            return 0
        if kept.height:
            vectors = kept["vector"].to_numpy()
            ids, hashes = kept["item_id"].to_list(), kept["text_sha256"].to_list()
            for start in range(0, kept.height, shard_size):
                self.write_shard(
                    encoder_version,
                    ids[start : start + shard_size],
                    hashes[start : start + shard_size],
                    vectors[start : start + shard_size],
                    variant=variant,
                )
        for path in shards:  # only after the survivors are safely written
            path.unlink(missing_ok=True)
        fsync_dir(self.folder(encoder_version, variant))
        return dead

    def prune_encoders(self, keep: Collection[str]) -> list[str]:
        """Delete the vectors of every encoder key not in `keep` (keys from `encoder_key`); returns them."""
        base = self.root / ITEMS_DIR
        removed = []
        for folder in sorted(base.iterdir()) if base.is_dir() else []:
            if folder.is_dir() and folder.name not in set(keep):
                trash = base / f".{folder.name}.deleting"
                os.rename(folder, trash)  # never a half-deleted key folder under its real name
                shutil.rmtree(trash, ignore_errors=True)
                removed.append(folder.name)
        return removed

    def clean_tmp(self) -> int:
        """Remove `.tmp` files and `.deleting` folders a killed run left behind; returns how many."""
        base = self.root / ITEMS_DIR
        count = 0
        if base.is_dir():
            for path in list(base.glob(".*.deleting")):
                shutil.rmtree(path, ignore_errors=True)
                count += 1
            for path in base.glob("*/.*.tmp"):
                path.unlink(missing_ok=True)
                count += 1
        return count


_serial = 0


def _next_serial() -> int:
    global _serial
    _serial += 1
    return _serial


def _strings(values: Sequence[str] | None, column: str) -> list[str]:
    if values is None:
        raise ConfigError("pass the item texts or their hashes")
    out = list(values)
    for i, value in enumerate(out):
        if not isinstance(value, str):
            raise DataError(f"expected a string, got {type(value).__name__}", column=column, row=i + 1)
    return out


# ------------------------------------------------------------------------------ user vectors
def write_user_vectors(
    index_root: str | Path,
    user_ids: Sequence[str],
    vectors: np.ndarray,
    *,
    encoder_version: str,
    as_of: datetime,
    history_len: Sequence[int] | None = None,
    last_ts: Sequence[datetime] | None = None,
) -> dict[str, Any]:
    """Write the active users' vectors under `index_root/user_vectors/`; returns the metadata record.

    Columns: `user_id`, `vector` (fixed-size float32), `as_of` (the data's reference time, UTC),
    `encoder_version`, and optionally `history_len`, `last_ts`. The file name carries the content
    hash, so rewriting the same vectors is idempotent. The returned dict goes into the index
    version's metadata (`extra.user_vectors`); `read_user_vectors` resolves and verifies it.
    """
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != len(user_ids):
        raise DataError(f"{len(user_ids)} users but vectors of shape {x.shape}")
    if as_of.tzinfo is None:
        raise ConfigError("as_of must be timezone-aware (UTC)")
    columns: dict[str, Any] = {
        "user_id": pl.Series("user_id", [str(u) for u in user_ids], dtype=pl.String),
        "vector": pl.Series("vector", x, dtype=pl.Array(pl.Float32, int(x.shape[1]))),
        "as_of": pl.Series("as_of", [as_of] * len(user_ids), dtype=pl.Datetime("us", "UTC")),
        "encoder_version": pl.Series("encoder_version", [encoder_version] * len(user_ids), dtype=pl.String),
    }
    if history_len is not None:
        columns["history_len"] = pl.Series("history_len", list(history_len), dtype=pl.Int32)
    if last_ts is not None:
        columns["last_ts"] = pl.Series("last_ts", list(last_ts), dtype=pl.Datetime("us", "UTC"))
    frame = pl.DataFrame(columns)
    folder = Path(index_root) / USER_VECTORS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".users.{os.getpid()}.tmp"
    frame.write_parquet(tmp)
    digest = file_sha256(tmp)
    target = folder / f"users-{digest[:16]}.parquet"
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    fsync_dir(folder)
    return {
        "path": f"{USER_VECTORS_DIR}/{target.name}",
        "sha256": digest,
        "count": len(user_ids),
        "dim": int(x.shape[1]),
        "as_of": as_of.isoformat(),
        "encoder_version": encoder_version,
    }


def read_user_vectors(index_root: str | Path, metadata: dict[str, Any], verify: bool = True) -> pl.DataFrame:
    """The user-vector table an index version was published with (from `IndexStore.metadata`).

    `DataError` when the version has none, the file is missing, or its SHA-256 differs.
    """
    info = (metadata.get("extra") or {}).get("user_vectors") if "extra" in metadata else metadata.get("user_vectors")
    if not info:
        raise DataError(f"index version {metadata.get('version')!r} has no user vectors")
    path = Path(index_root) / str(info["path"])
    if not path.is_file():
        raise DataError("user-vector file of this index version is missing", file=str(path))
    if verify and file_sha256(path) != info["sha256"]:
        raise DataError("user-vector file checksum mismatch", file=str(path))
    return pl.read_parquet(path)


def prune_user_vectors(index_root: str | Path, referenced: Iterable[str]) -> list[str]:
    """Delete user-vector files that no kept index version references; returns their names.

    Call it while holding the job's lock, after a publish (whose pruning removed old versions).
    """
    folder = Path(index_root) / USER_VECTORS_DIR
    keep = {Path(p).name for p in referenced}
    removed = []
    for path in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
        if path.name not in keep:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    for path in folder.glob(".users.*.tmp") if folder.is_dir() else []:
        path.unlink(missing_ok=True)
    return removed
