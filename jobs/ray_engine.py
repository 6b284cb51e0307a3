"""`--engine ray`: item encoding as Ray Data `map_batches` over a pool of encoder actors, for a cluster.

Why actors: loading the encoder (tokenizer, transformer, adapter) costs seconds; an actor loads the
bundle once and then encodes batch after batch. Each actor runs the same loop as the local engine,
`encoders.encoding` (length-sorted batches, tokenisation overlapped with compute, bf16 on CUDA,
optional int8 on CPU), so both engines give the same vectors, and the driver writes each finished batch as
one embedding-store shard at once, so a cluster run resumes like a local one.

Placement: with GPUs in the cluster each actor takes `num_gpus=1` (default concurrency: one actor a
GPU); on CPUs each takes `cpus_per_actor` cores and that many torch threads (default concurrency:
the cluster's CPUs divided by that). The driver (this process) keeps the store and the index.

Getting the bundle to the workers: an actor loads it from the driver's path when that path exists
on its node (a local Ray instance, or a shared filesystem); otherwise, when `ship_bundle` is on
(default "auto": on when the cluster has more than one node), the bundle's files go through the
object store once and each actor unpacks them into a temporary folder.

Ray is an optional dependency: `pip install 'recsys[distributed]'` (Ray Data >= 2.30).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from encoders.encoding import default_batch_size, encode_texts, int8_encoder
from encoders.packaging import EncoderBundle
from encoders.registry import LoadedEncoder
from recsys.errors import ConfigError

INSTALL_HINT = (
    "--engine ray needs Ray Data: install the distributed extra, pip install 'recsys[distributed]' "
    "(or pip install 'ray[data]>=2.30')"
)
MAX_SHIPPED_BYTES = 2 << 30


def import_ray() -> Any:
    """`ray` with Ray Data, or a `ConfigError` that says how to install it."""
    try:
        # local (c): Ray is optional (recsys[distributed]); this module imports without it
        import ray
        import ray.data  # Ray core alone is not enough
    except ImportError as exc:
        raise ConfigError(f"{INSTALL_HINT} ({exc})") from None
    return ray


def _bundle_files(folder: Path) -> dict[str, bytes]:
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    total = sum(p.stat().st_size for p in files.values())
    if total > MAX_SHIPPED_BYTES:
        raise ConfigError(
            f"encoder bundle {folder} is {total / 2**30:.1f} GiB; put it on a filesystem the "
            "workers share instead of shipping it through the object store"
        )
    return {name: path.read_bytes() for name, path in files.items()}


class EncodeActor:
    """A Ray Data actor: loads the bundle once, then turns `{"pos", "text"}` batches into vectors."""

    def __init__(
        self, bundle_dir: str, shipped: list[Any] | None, int8: bool, batch_size: int | None, threads: int | None
    ) -> None:
        if threads:
            torch.set_num_threads(int(threads))
        folder = Path(bundle_dir)
        if not folder.is_dir():
            if not shipped:
                raise ConfigError(
                    f"encoder bundle {bundle_dir} does not exist on this Ray node; use a shared "
                    "filesystem or ship_bundle=True"
                )
            folder = self._unpack(shipped[0])
        bundle = EncoderBundle.load(folder)
        encoder = bundle.encoder
        if int8:
            encoder = int8_encoder(encoder)
        self.encoder = encoder
        self.max_length = bundle.item_max_length
        self.batch_size = batch_size or default_batch_size(encoder)

    @staticmethod
    def _unpack(ref: Any) -> Path:
        # local (c): Ray is optional (recsys[distributed]); this module imports without it
        import ray

        files: dict[str, bytes] = ray.get(ref)
        folder = Path(tempfile.mkdtemp(prefix="recsys-bundle-"))
        for name, data in files.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return folder

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"].tolist()]
        vectors = encode_texts(self.encoder, texts, max_length=self.max_length, batch_size=self.batch_size)
        return {"pos": np.asarray(batch["pos"], dtype=np.int64), "vector": vectors}


class RayEngine:
    """Encode on a Ray cluster (or a local Ray instance) with `map_batches` and an actor pool."""

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        concurrency: int | None = None,
        batch_size: int | None = None,
        num_gpus: float | None = None,
        cpus_per_actor: float = 1.0,
        ship_bundle: bool | str = "auto",
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        import_ray()  # fail before any encoder is loaded
        if concurrency is not None and concurrency < 1:
            raise ConfigError(f"--concurrency must be a positive integer, got {concurrency}")
        if cpus_per_actor <= 0:
            raise ConfigError(f"cpus_per_actor must be positive, got {cpus_per_actor}")
        self.address = address
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.num_gpus = num_gpus
        self.cpus_per_actor = cpus_per_actor
        self.ship_bundle = ship_bundle
        self.init_kwargs = dict(init_kwargs or {})

    def _connect(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS")
            ray.init(address=address, include_dashboard=False, **self.init_kwargs)
        return ray

    def placement(self, ray: Any) -> dict[str, Any]:
        """Actor resources and pool size for the connected cluster."""
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0))
        num_gpus = self.num_gpus if self.num_gpus is not None else (1.0 if gpus > 0 else 0.0)
        if num_gpus > 0:
            concurrency = self.concurrency or max(1, int(gpus // num_gpus))
            return {"num_gpus": num_gpus, "num_cpus": 1.0, "concurrency": concurrency, "threads": None}
        cpus = float(resources.get("CPU", 1))
        concurrency = self.concurrency or max(1, int(cpus // self.cpus_per_actor))
        return {
            "num_gpus": 0.0,
            "num_cpus": self.cpus_per_actor,
            "concurrency": concurrency,
            "threads": max(1, int(self.cpus_per_actor)),
        }

    def encode(
        self,
        loaded: LoadedEncoder,
        texts: Sequence[str],
        shard_size: int,
        on_batch: Callable[[int], object] | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield `(positions, vectors)` per finished actor batch (at most `shard_size` rows each)."""
        ray = self._connect()
        if not len(texts):
            return
        place = self.placement(ray)
        ship = self.ship_bundle
        if ship == "auto":
            ship = len([n for n in ray.nodes() if n.get("Alive")]) > 1
        shipped = [ray.put(_bundle_files(loaded.folder))] if ship else None
        # One block per shard: the actor pool gets work in shard-sized pieces, and each result block
        # comes back (and is stored) as soon as its actor finishes it.
        table = pa.table(
            {
                "pos": pa.array(np.arange(len(texts), dtype=np.int64)),
                "text": pa.array(list(texts), type=pa.large_string()),
            }
        )
        blocks = [table.slice(start, shard_size) for start in range(0, len(texts), shard_size)]
        dataset = ray.data.from_arrow(blocks).map_batches(
            EncodeActor,
            fn_constructor_kwargs={
                "bundle_dir": str(loaded.folder),
                "shipped": shipped,
                "int8": loaded.int8,
                "batch_size": self.batch_size,
                "threads": place["threads"],
            },
            batch_size=shard_size,
            batch_format="numpy",
            # A fixed pool (`concurrency=N` before Ray 2.51 deprecated it in favour of `compute`).
            compute=ray.data.ActorPoolStrategy(size=place["concurrency"]),
            num_gpus=place["num_gpus"],
            num_cpus=place["num_cpus"],
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            positions = np.asarray(batch["pos"], dtype=np.int64)
            vectors = np.asarray(
                np.stack(batch["vector"]) if batch["vector"].dtype == object else batch["vector"], dtype=np.float32
            )
            for start in range(0, len(positions), shard_size):  # blocks may be merged; keep shards bounded
                yield positions[start : start + shard_size], vectors[start : start + shard_size]
