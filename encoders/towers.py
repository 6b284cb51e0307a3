"""User towers that need no training of their own, and the shared item-index bookkeeping.

`pooled`: a recency-weighted mean of the user's item vectors, newest weighted most. It is the
cheapest tower and the baseline the `text` and `sequence` towers must beat in the A/B scripts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TOWERS = ("sequence", "text", "pooled")
# `auto`: train the towers worth serving and keep the one with the higher validation NDCG@10.
AUTO = "auto"
AUTO_TOWERS = ("text", "sequence")


def pooled_user_vectors(
    histories: Sequence[np.ndarray], item_vectors: np.ndarray, half_life: float = 10.0, max_items: int = 50
) -> np.ndarray:
    """Mean of the last `max_items` item vectors, weight halving every `half_life` items back in time."""
    out = np.zeros((len(histories), item_vectors.shape[1]), dtype=np.float32)
    for row, history in enumerate(histories):
        recent = np.asarray(history[-max_items:])
        if len(recent) == 0:
            continue
        age = np.arange(len(recent))[::-1]
        weights = 0.5 ** (age / half_life)
        vector = (weights[:, None] * item_vectors[recent]).sum(axis=0)
        norm = np.linalg.norm(vector)
        out[row] = vector / norm if norm > 0 else vector
    return out
