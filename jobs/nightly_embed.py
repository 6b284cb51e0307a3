"""`recsys embed`: the nightly job that turns the catalog and user histories into a served index.

Flow (docs/architecture.md, one nightly run):
1. resolve the encoder (`encoders.registry.resolve_encoder`): a registry reference
   (`models:/recsys-encoder@champion`, `champion`, ...), pinned to one version and downloaded once
   into the store's cache, or a local bundle / training run folder; its version string is
   `<model name>/<version>` or a content hash of the folder;
2. render every item's text with the dataset's template and ask the embedding store
   (`recsys.embedding_store`) which (item, text, encoder) vectors it already has;
3. encode the rest, shard by shard: each finished shard is written atomically at once, so a run
   killed half way resumes from its last finished shard (the served index is untouched until 5);
4. encode the histories of users active within `active_days` of the newest interaction with the
   encoder's user tower (`EncoderBundle.user_vectors`), and write them as the version's user-vector
   file (the service's cache);
5. build a `VectorIndex` over the items in the user tower's space (`EncoderBundle.index_vectors`)
   and publish it with `IndexStore.publish` (verify, atomic rename, CURRENT, keep N);
6. log counts, parameters and the checksum to MLflow (experiment `nightly-embed`).

Store layout (`--store DIR`): `recsys.embedding_store.StoreLayout` (embeddings/, index/, encoders/,
.lock), the one definition the service reads too.

Throughput (local engine): the one encoding loop, `encoders.encoding.encode_chunks`: background
threads tokenise, length-sort and pad the next windows of texts (pinned memory on CUDA) while the
main thread runs the model on the current one under `torch.inference_mode` (bf16 autocast on CUDA);
`--int8` swaps in the dynamic-int8 CPU encoder (`encoders.encoding.int8_encoder`).
`jobs/ray_engine.py` runs the same loop inside Ray Data actors for a cluster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

# The loop is `encoders.encoding` (shared with training evaluation and the bundle); `encode_texts` and
# `default_tokenizer_workers` stay importable from here for callers of the job's old names.
from encoders.encoding import default_batch_size, default_tokenizer_workers, encode_chunks, encode_texts  # noqa: F401
from encoders.registry import LoadedEncoder, resolve_encoder
from recsys.data.dataset import Dataset
from recsys.data.order import chronological
from recsys.embedding_store import (
    DEFAULT_SHARD_SIZE,
    EmbeddingStore,
    StoreLayout,
    encoder_key,
    exclusive_lock,
    prune_user_vectors,
    text_sha256,
    write_user_vectors,
)
from recsys.errors import ConfigError, DataError
from recsys.index import IndexStore, VectorIndex
from recsys.index.faiss_index import IDS_FILE
from recsys.registry import configure_mlflow, ensure_experiment

if TYPE_CHECKING:
    from recsys.config import Settings

EXPERIMENT = "nightly-embed"
USER_CHUNK = 1024
# Test hook: called with the number of shards written so far after each one (the crash test stops
# the child process there to SIGKILL it); None in normal use.
_on_shard: Callable[[int], None] | None = None


# ------------------------------------------------------------------------------------ config
@dataclass
class EmbedConfig:
    """Settings of one nightly run (the CLI options)."""

    active_days: float = 30.0
    int8: bool = False
    batch_size: int | None = None  # None: 128 on CPU, 512 on CUDA
    shard_size: int = DEFAULT_SHARD_SIZE
    keep: int = 3
    store_dtype: str = "float32"  # or "float16"
    index: dict[str, Any] = field(default_factory=dict)  # IndexConfig settings (kind, nlist, ...)
    device: str | None = None  # None: CUDA when available
    threads: int | None = None  # torch CPU threads
    progress: bool = True
    log: bool = True
    log_index_files: bool = False  # also log the index files themselves to MLflow
    user_batch_size: int = 64

    def check(self) -> None:
        if not self.active_days > 0:
            raise ConfigError(f"active_days must be positive, got {self.active_days!r}")
        for name in ("shard_size", "keep", "user_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {self.threads!r}")
        if self.store_dtype not in ("float32", "float16"):
            raise ConfigError(f"store dtype must be float32 or float16, got {self.store_dtype!r}")


@dataclass
class EmbedReport:
    """What a run did; `summary_line()` is the job's last line of output."""

    index_version: str
    encoder_version: str
    items: int
    encoded: int
    skipped: int
    removed: int | None
    users: int
    shards_written: int
    seconds: float
    encode_seconds: float
    engine: str
    metadata: dict[str, Any]
    mlflow_run_id: str | None = None

    @property
    def texts_per_s(self) -> float:
        return self.encoded / self.encode_seconds if self.encoded and self.encode_seconds > 0 else 0.0

    def summary_line(self) -> str:
        removed = "?" if self.removed is None else str(self.removed)
        return (
            f"embed: encoded {self.encoded}, skipped {self.skipped}, removed {removed}, users {self.users}, "
            f"{self.seconds:.1f} s, {self.texts_per_s:,.0f} texts/s, index {self.index_version} "
            f"(encoder {self.encoder_version}, {self.engine})"
        )


# ---------------------------------------------------------------------------------- encoding
class Engine(Protocol):
    """Where item encoding runs. `encode` yields `(positions, vectors)` pieces as they finish;
    positions index `texts`; each piece becomes one store shard (so at most `shard_size` rows)."""

    name: str

    def encode(
        self,
        loaded: LoadedEncoder,
        texts: Sequence[str],
        shard_size: int,
        on_batch: Callable[[int], object] | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


class LocalEngine:
    """Encode in this process (CPU or one GPU), shard after shard, in catalog order."""

    name = "local"

    def __init__(self, batch_size: int | None = None, tokenizer_workers: int | None = None) -> None:
        self.batch_size = batch_size
        self.tokenizer_workers = tokenizer_workers

    def encode(
        self,
        loaded: LoadedEncoder,
        texts: Sequence[str],
        shard_size: int,
        on_batch: Callable[[int], object] | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        encoder = loaded.text_encoder
        starts = list(range(0, len(texts), shard_size))
        chunks = (texts[start : start + shard_size] for start in starts)
        pieces = encode_chunks(
            encoder,
            chunks,
            max_length=loaded.bundle.item_max_length,
            batch_size=self.batch_size or default_batch_size(encoder),
            on_batch=on_batch,
            workers=self.tokenizer_workers,
        )
        for start, vectors in zip(starts, pieces, strict=True):
            yield np.arange(start, start + len(vectors), dtype=np.int64), vectors


# ------------------------------------------------------------------------------------- users
@dataclass
class ActiveHistories:
    """Users active in the window and their histories (catalog items only), newest first."""

    as_of: datetime
    user_ids: list[str]
    item_ids: list[list[str]]
    seconds: list[list[float]]
    last_ts: list[datetime]


def active_histories(
    interactions: pl.DataFrame, catalog: Sequence[str], active_days: float, max_items: int
) -> ActiveHistories:
    """Histories of users with an interaction within `active_days` of the newest one in the data.

    Newest first, ordered like the splits ((ts, item_id) descending), capped at `max_items`, and
    limited to items still in the catalog; a user whose history is all removed items is left out
    (the service's cold-start path serves them).
    """
    if interactions.height == 0:
        raise DataError("no interactions: cannot tell which users are active", column="ts")
    as_of = cast(datetime, interactions["ts"].max())  # a Datetime column (the data contract); not empty
    if as_of.tzinfo is None:  # the contract says UTC; be lenient with naive datetimes
        as_of = as_of.replace(tzinfo=timezone.utc)
    cutoff = as_of - timedelta(days=float(active_days))
    active = interactions.filter(pl.col("ts") >= cutoff).select("user_id").unique()
    items = pl.DataFrame({"item_id": pl.Series(list(catalog), dtype=pl.String)})
    grouped = (
        interactions.join(active, on="user_id", how="semi")
        .join(items, on="item_id", how="semi")
        .pipe(chronological, descending=True)
        .group_by("user_id", maintain_order=True)
        .agg(
            pl.col("item_id").head(max_items),
            (pl.col("ts").dt.epoch("us") / 1e6).head(max_items).alias("s"),
            pl.col("ts").first().alias("last_ts"),
        )
        .sort("user_id")
    )
    return ActiveHistories(
        as_of,
        grouped["user_id"].to_list(),
        grouped["item_id"].to_list(),
        grouped["s"].to_list(),
        grouped["last_ts"].to_list(),
    )


def user_vectors(
    loaded: LoadedEncoder,
    histories: ActiveHistories,
    row_of: dict[str, int],
    texts: Sequence[str],
    text_vectors: np.ndarray,
    batch_size: int,
    progress: bool = False,
) -> np.ndarray:
    """Vectors of the active users with the bundle's user tower (`EncoderBundle.user_vectors`).

    `pooled` reuses the stored item text vectors instead of encoding the histories' texts again.
    """
    bundle = loaded.bundle
    n = len(histories.user_ids)
    out = np.zeros((n, bundle.index_dim), dtype=np.float32)
    if n == 0:
        return out
    text_of = {item: texts[row] for item, row in row_of.items()}

    def stored(ids: Sequence[str]) -> np.ndarray:
        return text_vectors[np.asarray([row_of[i] for i in ids], dtype=np.int64)]

    bar = tqdm(total=n, desc="users", unit="user", disable=not progress, dynamic_ncols=True, leave=False)
    for start in range(0, n, USER_CHUNK):
        part = slice(start, min(n, start + USER_CHUNK))
        out[part] = bundle.user_vectors(
            histories.item_ids[part], histories.seconds[part], texts=text_of, item_vectors=stored, batch_size=batch_size
        )
        bar.update(part.stop - part.start)
    bar.close()
    return out


# --------------------------------------------------------------------------------------- job
def run_nightly(
    data: str | Path | Dataset,
    encoder: str | Path | LoadedEncoder,
    store: str | Path,
    config: EmbedConfig | None = None,
    engine: Engine | None = None,
    settings: Settings | None = None,
) -> EmbedReport:
    """Run the whole nightly job (module doc) and return its report."""
    config = config or EmbedConfig()
    config.check()
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    dataset = data if isinstance(data, Dataset) else Dataset.load(data)
    layout = StoreLayout.nightly(store)
    layout.root.mkdir(parents=True, exist_ok=True)
    engine = engine or LocalEngine(config.batch_size)
    with exclusive_lock(layout.lock, f"nightly store {layout.root}"):
        loaded = (
            encoder
            if isinstance(encoder, LoadedEncoder)
            else resolve_encoder(
                encoder, settings=settings, cache_dir=layout.encoders, device=config.device, int8=config.int8
            )
        )
        embeddings = EmbeddingStore(layout.embeddings, dtype=config.store_dtype)
        index_store = IndexStore(layout.index, keep=config.keep)
        embeddings.clean_tmp()

        catalog = dataset.item_text()
        item_ids, texts = catalog["item_id"].to_list(), catalog["text"].to_list()
        if not item_ids:
            raise DataError("the catalog is empty: nothing to index", column="item_id")
        hashes = text_sha256(texts)
        text_vectors, encoded, shards, encode_s = _encode_items(
            loaded, embeddings, engine, item_ids, texts, hashes, config
        )

        bundle = loaded.bundle
        vectors = bundle.index_vectors(item_ids, text_vectors=text_vectors)
        row_of = {item: row for row, item in enumerate(item_ids)}
        histories = active_histories(dataset.interactions, item_ids, config.active_days, bundle.history_cap)
        users = user_vectors(loaded, histories, row_of, texts, text_vectors, config.user_batch_size, config.progress)
        user_info = write_user_vectors(
            layout.index,
            histories.user_ids,
            users,
            encoder_version=loaded.version,
            as_of=histories.as_of,
            history_len=[len(h) for h in histories.item_ids],
            last_ts=histories.last_ts,
        )
        user_info["active_days"] = config.active_days

        removed = _removed_since_current(index_store, set(item_ids))

        index = VectorIndex.build(item_ids, vectors, dict(config.index), encoder_version=loaded.version)
        key = encoder_key(loaded.version, loaded.variant)
        metadata = {
            "dataset": dataset.name,
            "tower": bundle.tower,
            "encoder_ref": loaded.ref,
            "model_uri": loaded.model_uri,
            "precision": "int8" if loaded.int8 else ("bf16" if bundle.encoder.device.type == "cuda" else "fp32"),
            "embedding_key": key,
            "store_dtype": config.store_dtype,
            "engine": engine.name,
            "items": len(item_ids),
            "encoded": encoded,
            "skipped": len(item_ids) - encoded,
            "removed": removed,
            "shards_written": shards,
            "shard_size": config.shard_size,
            "users": len(histories.user_ids),
            "user_vectors": user_info,
            "encode_seconds": round(encode_s, 3),
        }
        version = index_store.publish(index, metadata, encoder_version=loaded.version)
        kept = [index_store.metadata(v) for v in index_store.versions()]
        prune_user_vectors(layout.index, [(m.get("extra") or {}).get("user_vectors", {}).get("path", "") for m in kept])
        embeddings.compact(loaded.version, item_ids, hashes, variant=loaded.variant, shard_size=config.shard_size)
        embeddings.prune_encoders({key, *((m.get("extra") or {}).get("embedding_key", "") for m in kept)} - {""})

    report = EmbedReport(
        version,
        loaded.version,
        len(item_ids),
        encoded,
        len(item_ids) - encoded,
        removed,
        len(histories.user_ids),
        shards,
        time.perf_counter() - started,
        encode_s,
        engine.name,
        index_store.metadata(version),
    )
    if config.log:
        report.mlflow_run_id = log_nightly_run(report, index_store, config, settings)
    return report


def _encode_items(
    loaded: LoadedEncoder,
    embeddings: EmbeddingStore,
    engine: Engine,
    item_ids: list[str],
    texts: list[str],
    hashes: list[str],
    config: EmbedConfig,
) -> tuple[np.ndarray, int, int, float]:
    """Fill the catalog's text vectors from the store, encoding (and storing) only what is missing."""
    plan = embeddings.plan(loaded.version, item_ids, text_hashes=hashes, variant=loaded.variant)
    out = np.zeros((len(item_ids), loaded.text_encoder.dim), dtype=np.float32)
    if len(plan.cached_rows):
        if plan.cached_vectors.shape[1] != out.shape[1]:
            raise DataError(
                f"stored vectors are {plan.cached_vectors.shape[1]}-d but the encoder makes {out.shape[1]}-d ones",
                file=str(embeddings.folder(loaded.version, loaded.variant)),
            )
        out[plan.cached_rows] = plan.cached_vectors
    todo = plan.todo_rows
    started = time.perf_counter()
    shards = 0
    if len(todo):
        bar = tqdm(
            total=len(todo),
            desc=f"encode ({engine.name})",
            unit="text",
            disable=not config.progress,
            dynamic_ncols=True,
            leave=False,
        )
        todo_texts = [texts[i] for i in todo]
        for positions, vectors in engine.encode(
            loaded, todo_texts, config.shard_size, on_batch=bar.update if engine.name == "local" else None
        ):
            rows = todo[np.asarray(positions, dtype=np.int64)]
            embeddings.write_shard(
                loaded.version, [item_ids[i] for i in rows], [hashes[i] for i in rows], vectors, variant=loaded.variant
            )
            out[rows] = embeddings.as_read(vectors)
            shards += 1
            if engine.name != "local":
                bar.update(len(rows))
            if _on_shard is not None:
                _on_shard(shards)
        bar.close()
    return out, len(todo), shards, time.perf_counter() - started


def _removed_since_current(index_store: IndexStore, catalog: set[str]) -> int | None:
    """Items the served version has that the catalog no longer has (0 before the first publish; None
    when the served version's id list cannot be read)."""
    current = index_store.current_version()
    if current is None:
        return 0
    try:
        previous = json.loads((index_store.versions_dir / current / IDS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return len(set(previous) - catalog)


# ------------------------------------------------------------------------------------ mlflow
def log_nightly_run(
    report: EmbedReport, index_store: IndexStore, config: EmbedConfig, settings: Settings | None = None
) -> str:
    """One MLflow run in experiment `nightly-embed`: params, counts, checksum; returns the run id."""
    # local (c): only a logged run needs mlflow; importing it starts MLflow telemetry (--no-log)
    import mlflow

    configure_mlflow(settings)
    experiment_id = ensure_experiment(EXPERIMENT, settings)
    meta = report.metadata
    extra = meta.get("extra") or {}
    params = {
        "encoder_version": report.encoder_version,
        "encoder_ref": extra.get("encoder_ref"),
        "model_uri": extra.get("model_uri"),
        "tower": extra.get("tower"),
        "dataset": extra.get("dataset"),
        "engine": report.engine,
        "precision": extra.get("precision"),
        "store_dtype": config.store_dtype,
        "active_days": config.active_days,
        "batch_size": config.batch_size,
        "shard_size": config.shard_size,
        "keep": config.keep,
        "index.kind": meta.get("kind"),
        **{f"index.{k}": v for k, v in (meta.get("params") or {}).items() if k != "kind"},
    }
    metrics = {
        "items": report.items,
        "encoded": report.encoded,
        "skipped": report.skipped,
        "removed": report.removed if report.removed is not None else 0,
        "users": report.users,
        "shards_written": report.shards_written,
        "seconds": report.seconds,
        "encode_seconds": report.encode_seconds,
        "texts_per_s": report.texts_per_s,
        "dim": meta.get("dim", 0),
    }
    nested = mlflow.active_run() is not None
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"embed-{report.index_version}", nested=nested) as run:
        mlflow.log_params({k: ("" if v is None else str(v))[:6000] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.set_tags(
            {
                "recsys.kind": "nightly-embed",
                "index_version": report.index_version,
                "index_checksum": str(meta.get("checksum")),
                "encoder_version": report.encoder_version,
            }
        )
        folder = index_store.versions_dir / report.index_version
        for name in ("metadata.json", "manifest.json"):
            mlflow.log_artifact(str(folder / name), artifact_path="index")
        if config.log_index_files:
            mlflow.log_artifacts(str(folder), artifact_path="index/files")
        return str(run.info.run_id)
