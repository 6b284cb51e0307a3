"""Exact top-K by inner product with per-user exclusions: the evaluation reference for every tower.

Offline evaluation ranks the full catalog exactly (no ANN error in quality figures); FAISS indexes
are measured against this. Scores come in user batches so memory stays bounded for large catalogs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl


def dense_topk(
    user_ids: Sequence[str],
    user_vectors: np.ndarray,
    item_ids: Sequence[str],
    item_vectors: np.ndarray,
    k: int,
    exclude: Sequence[np.ndarray] | None = None,
    allowed: np.ndarray | None = None,
    batch_size: int = 1024,
) -> pl.DataFrame:
    """`user_id, item_id, rank, score` of each user's top-k items by `user · item`.

    `exclude[u]` holds item row indices user u must not get (their history); `allowed` is a boolean
    mask over item rows (the ranking catalog). Ties are broken by item row order, deterministically.
    """
    n_items = len(item_ids)
    k = min(k, n_items)
    out_users: list[str] = []
    out_items: list[str] = []
    out_ranks: list[int] = []
    out_scores: list[float] = []
    items = np.asarray(item_vectors, dtype=np.float32)
    item_array = np.asarray(item_ids, dtype=object)
    for start in range(0, len(user_ids), batch_size):
        scores = np.asarray(user_vectors[start : start + batch_size], dtype=np.float32) @ items.T
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        if exclude is not None:
            for row, seen in enumerate(exclude[start : start + batch_size]):
                if len(seen):
                    scores[row, seen] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -top_scores), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        top_scores = np.take_along_axis(top_scores, order, axis=1)
        for row in range(top.shape[0]):
            finite = np.isfinite(top_scores[row])
            count = int(finite.sum())
            out_users.extend([user_ids[start + row]] * count)
            out_items.extend(item_array[top[row][finite]].tolist())
            out_ranks.extend(range(1, count + 1))
            out_scores.extend(top_scores[row][finite].tolist())
    return pl.DataFrame(
        {"user_id": out_users, "item_id": out_items, "rank": out_ranks, "score": out_scores},
        schema={"user_id": pl.String, "item_id": pl.String, "rank": pl.Int32, "score": pl.Float64},
    )
