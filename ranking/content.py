"""Item content for the ranker: what the items' texts say, beside what users did with them.

Why the ranker reads text as well as the interest model: with the sequence tower as the retriever,
every candidate and every `interest` score comes from behaviour (the tower is trained on the next
item), and so do co-visitation and popularity. The zero-shot text encoder knows something none of
them do: which items are about the same thing, including items few users have touched yet. So the
ranker gets a second, content-based retriever (issue 13: "sequence top-200 ∪ text top-100 ∪
co-visitation ∪ popular") and two similarity features from the same vectors.

`ItemContent` holds one unit text vector per `BehaviorContext` row (the text encoder's item vectors,
as the nightly job computes them). A user's content profile is the normalised mean of the text
vectors of their `PROFILE_ITEMS` most recent items: a bag of texts, the zero-shot text tower of
DESIGN's "pooled" user, which needs no training and follows a history the moment it changes.

Exact search over the catalogue (a matrix-vector product per query): ~1 ms for 10k items x 384 at
serving, and a few seconds for the thousands of training queries. Past a few hundred thousand items
this wants the FAISS index of the text vectors; until then, one home and no second index to publish.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.errors import DataError

PROFILE_ITEMS = 20


@dataclass(frozen=True)
class ItemContent:
    """Unit text vectors [items, dim] float32, in the context's row order."""

    vectors: np.ndarray

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, items: int) -> ItemContent:
        """Check the shape against the context's `items` rows and normalise each row (zero rows stay zero)."""
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != items:
            raise DataError(f"item content vectors have shape {matrix.shape}, expected ({items}, dim)")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return cls(np.ascontiguousarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32))

    def profile(self, history: np.ndarray) -> np.ndarray | None:
        """The unit mean text vector of the newest `PROFILE_ITEMS` of `history` (rows, oldest first)."""
        recent = np.asarray(history, dtype=np.int64)[-PROFILE_ITEMS:]
        if not len(recent):
            return None
        mean = self.vectors[recent].mean(axis=0)
        norm = float(np.linalg.norm(mean))
        return mean / norm if norm > 0 else None

    def similar(self, profile: np.ndarray, banned: np.ndarray, allowed: np.ndarray | None, k: int) -> np.ndarray:
        """The `k` rows most similar to `profile` (cosine), best first, without `banned` or disallowed rows."""
        scores = self.vectors @ profile
        scores[banned] = -np.inf
        if allowed is not None:
            scores[~allowed] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        if k <= 0:
            return np.zeros(0, dtype=np.int64)
        top = np.argpartition(-scores, k - 1)[:k]
        return top[np.lexsort((top, -scores[top]))].astype(np.int64)
