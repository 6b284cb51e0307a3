"""Vector retrieval: a FAISS index over item vectors (`VectorIndex`) and a versioned store with atomic
publish (`IndexStore`). Ground floor: imports nothing from `encoders`, `ranking` or `jobs`, and FAISS
itself only when an index is built or loaded."""

from recsys.index.faiss_index import (
    FLAT_MAX,
    GPU_FLAT_MAX,
    KINDS,
    PQ_MIN,
    IndexConfig,
    SearchResult,
    VectorIndex,
)
from recsys.index.store import IndexStore

__all__ = ["FLAT_MAX", "GPU_FLAT_MAX", "KINDS", "PQ_MIN", "IndexConfig", "IndexStore", "SearchResult", "VectorIndex"]
