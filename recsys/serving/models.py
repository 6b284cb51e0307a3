"""Where the served encoder and ranker come from, and how the poller learns that a newer one exists.

The facade sits above `encoders` and `ranking` (never `jobs`); this is the one module that loads
their models, always inside functions, so importing `recsys.serving` stays cheap.

- Encoder: a registry reference (`champion`, `models:/recsys-encoder@champion`, ...) whose alias
  may move, a local bundle/run folder (fixed: its version is a content hash), or an already loaded
  `encoders.registry.LoadedEncoder` from a host application. Loading is `encoders.registry.resolve_encoder`,
  as in the nightly job, so the service and the job agree on version strings and on the download cache.
- Ranker: a registry reference resolved by `ranking.load_ranker`, or any object satisfying
  `ranking.protocol.CandidateRanker` (a host application's own), or None. A missing
  `ranking.load_ranker` or a registry without that model is not an error: the service serves
  retrieval order and says why.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.embedding_store import EmbeddingStore, registry_encoder_version
from recsys.errors import ConfigError, DataError
from recsys.registry import resolve

if TYPE_CHECKING:
    from encoders.registry import LoadedEncoder
    from ranking.protocol import CandidateRanker
    from recsys.config import Settings
    from recsys.data.dataset import Dataset
    from recsys.serving.catalog import Catalog

log = logging.getLogger("recsys.serving")
NO_RANKER = ("", "none", "off", "false")


class EncoderSource:
    """The encoder reference the service was started with (see the module doc)."""

    def __init__(
        self, ref: Any, *, settings: Settings | None = None, cache_dir: Path | None = None, device: str | None = None
    ) -> None:
        self.settings = settings
        self.cache_dir = cache_dir
        self.device = device
        self.fixed: LoadedEncoder | None = None
        if hasattr(ref, "bundle") and hasattr(ref, "version"):
            self.fixed, self.ref = ref, str(getattr(ref, "ref", ref.version))
            self.is_folder = False
        else:
            self.ref = str(ref).strip()
            if not self.ref:
                raise ConfigError("encoder reference is empty; give an alias (champion), models:/... or a folder")
            self.is_folder = Path(self.ref).expanduser().is_dir()

    @property
    def movable(self) -> bool:
        """True for registry references, whose alias can point elsewhere tomorrow."""
        return self.fixed is None and not self.is_folder

    def wanted_version(self) -> str | None:
        """The version the reference names right now (registry only; a cheap lookup), else None."""
        if not self.movable:
            return None

        resolved = resolve(self.ref, kind="encoder", settings=self.settings)
        return registry_encoder_version(resolved.name, resolved.version)

    def load(self, ref: str | None = None) -> LoadedEncoder:
        """Load the reference (or `ref`, e.g. the pinned `models:/<name>/<v>` an index was built with)."""
        if self.fixed is not None and ref is None:
            return self.fixed
        # local (c): encoders brings torch; `import recsys.serving` must not (tests/test_service.py)
        from encoders.registry import resolve_encoder

        loaded = resolve_encoder(ref or self.ref, settings=self.settings, cache_dir=self.cache_dir, device=self.device)
        loaded.bundle.encoder.eval()
        return loaded


class RankerSource:
    """The ranker reference: registry alias, local folder, a ranker object, or None (retrieval only)."""

    def __init__(
        self,
        ref: Any,
        *,
        settings: Settings | None = None,
        cache_dir: Path | None = None,
        embeddings: Path | None = None,
    ) -> None:
        self.settings = settings
        self.cache_dir = cache_dir
        self.embeddings = embeddings  # the nightly store's item text vectors (`with_content`)
        self.fixed: CandidateRanker | None = None
        self.ref: str | None = None
        if ref is None or (isinstance(ref, str) and ref.strip().lower() in NO_RANKER):
            return
        if isinstance(ref, str | Path):
            self.ref = str(ref).strip()
        else:
            self.fixed = ref

    @property
    def wanted(self) -> bool:
        return self.ref is not None or self.fixed is not None

    @property
    def movable(self) -> bool:
        return self.ref is not None and not Path(self.ref).expanduser().is_dir()

    def loader(self) -> tuple[Any, str | None]:
        """`ranking.load_ranker`, or None and why it is unavailable."""
        try:
            # local (c): `ranking.load_ranker` brings LightGBM and may be missing (then retrieval order)
            import ranking

            return ranking.load_ranker, None
        except (ImportError, AttributeError) as exc:
            return None, f"ranking.load_ranker is not available ({type(exc).__name__}: {exc})"

    def wanted_version(self) -> str | None:
        """The registry version the reference names now (`<name>/<n>`), None for folders/objects."""
        if not self.movable:
            return None

        resolved = resolve(str(self.ref), kind="ranker", settings=self.settings)
        return f"{resolved.name}/{resolved.version}"

    @staticmethod
    def pinned(version: str | None) -> str | None:
        """`models:/<name>/<n>` for a registry version `<name>/<n>` (None stays None).

        The service loads what `wanted_version` saw, not the alias again: an alias that moves between
        the two lookups would otherwise pair one version's label with another version's model.
        """
        return f"models:/{version}" if version else None

    def load(self, dataset: Dataset, ref: str | None = None) -> tuple[CandidateRanker | None, str | None]:
        """The ranker (`ref`, e.g. a pinned `models:/<name>/<n>`, else the reference), or None and why not."""
        if self.fixed is not None:
            return self.fixed, None
        if self.ref is None:
            return None, "no ranker configured"
        load_ranker, why = self.loader()
        if load_ranker is None:
            return None, why

        target = ref or self.ref
        extra = {"cache_dir": self.cache_dir} if "cache_dir" in inspect.signature(load_ranker).parameters else {}
        try:
            ranker = load_ranker(target, dataset=dataset, settings=self.settings, **extra)
        except (ConfigError, DataError) as exc:
            return None, f"ranker {target!r} not loaded: {exc}"
        return ranker, None


def with_content(ranker: Any, encoder: LoadedEncoder, catalog: Catalog, embeddings: Path | None) -> None:
    """Give a ranker trained with item content (`ranking.content`) the text vectors of its catalogue.

    Training attached the encoder's text vectors of every item (`jobs.train_ranker`); without them
    the served ranker would see NaN where it learned similarities, and no text candidates: a silent
    train/serve skew. The vectors come from the nightly store, which holds exactly these (same
    encoder, same texts); items it lacks are encoded here. Done once per loaded ranker (a reloaded
    one gets a fresh context), before it serves; a ranker without item content is left alone.
    """
    context = getattr(ranker, "context", None)  # a host application's own ranker has none: left alone
    if context is None or not getattr(ranker, "item_content", False) or context.content is not None:
        return
    ids = list(context.item_ids)
    texts = [catalog.text_of.get(item, "") for item in ids]
    vectors = np.zeros((len(ids), encoder.text_encoder.dim), dtype=np.float32)
    todo = np.arange(len(ids))
    if embeddings is not None and embeddings.is_dir():
        plan = EmbeddingStore(embeddings).plan(encoder.version, ids, texts, variant=encoder.variant)
        if len(plan.cached_rows):
            vectors[plan.cached_rows] = plan.cached_vectors
        todo = plan.todo_rows
    if len(todo):
        vectors[todo] = encoder.bundle.encode_items([texts[i] for i in todo.tolist()])
    context.with_content(vectors)
    log.info(
        "ranker %s: item content for %d items (%d encoded now)", getattr(ranker, "version", "?"), len(ids), len(todo)
    )


def ranker_conflict(ranker: Any, encoder_version: str) -> str | None:
    """Why `ranker` cannot serve with this encoder (its interest scores come from another), else None."""
    trained_with = getattr(ranker, "encoder_version", None)
    if trained_with is not None and str(trained_with) != encoder_version:
        return (
            f"ranker {getattr(ranker, 'version', '?')} was trained on interest scores of encoder "
            f"{trained_with}, the service runs {encoder_version}"
        )
    return None
