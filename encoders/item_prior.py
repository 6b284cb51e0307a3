"""Popularity prior of the `text` tower: score(u, i) = cos(u, i) + beta * log(1 + count_i).

Why: text vectors are unit-norm, so a cosine cannot say how often an item is consumed, and the
in-batch loss is logQ-corrected on purpose (so that it does not learn to bury popular items). On
MovieLens the result ranks popular next items too low: adding the prior lifts test NDCG@10 of the
zero-shot and of the fine-tuned encoder alike (BENCHMARKS.md). `beta` is chosen on the validation
targets from a small grid that includes 0, so the prior is switched off where it does not help.

In vector form the prior is one extra index dimension: items carry `beta * log(1 + count)`, users
carry a constant 1, so FAISS inner-product search, the nightly job and the service need no special
case. Counts are the training part's interactions per item; an item never seen in training has
count 0 and prior 0, so new items are still ranked by their text alone (cold items stay recommendable).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from recsys.errors import ConfigError

PRIOR_FILE = "item_prior.parquet"
BETAS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15)


def log_counts(item_ids_of_events: Sequence[str], row_of: dict[str, int], n_items: int) -> np.ndarray:
    """log(1 + number of events) per item row; ids outside `row_of` are ignored."""
    counts = np.zeros(n_items, dtype=np.float64)
    rows = [row_of[i] for i in item_ids_of_events if i in row_of]
    np.add.at(counts, np.asarray(rows, dtype=np.int64), 1.0)
    return np.log1p(counts)


def item_side(item_vectors: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Index vectors: the text vectors with the prior appended as the last column."""
    return np.hstack([item_vectors, np.asarray(prior, dtype=np.float32)[:, None]]).astype(np.float32)


def user_side(user_vectors: np.ndarray) -> np.ndarray:
    """User vectors with the constant 1 that multiplies the items' prior column."""
    return np.hstack([user_vectors, np.ones((len(user_vectors), 1), dtype=np.float32)]).astype(np.float32)


def select_beta(
    log_count: np.ndarray, score: Callable[[np.ndarray], float], betas: Sequence[float] = BETAS
) -> tuple[float, dict[float, float]]:
    """The beta whose prior gives the best `score(prior)` (validation NDCG@10); ties go to the smaller."""
    grid = {float(beta): float(score(beta * log_count)) for beta in betas}
    best = max(grid, key=lambda beta: (grid[beta], -beta))
    return best, grid


def save_prior(path: Path, item_ids: Sequence[str], prior: np.ndarray) -> None:
    """Write `item_id, prior` (float32) as parquet, atomically."""
    tmp = path.with_suffix(".tmp")
    pl.DataFrame({"item_id": list(item_ids), "prior": np.asarray(prior, dtype=np.float32)}).write_parquet(tmp)
    tmp.replace(path)


def load_prior(path: Path) -> dict[str, float]:
    """item id -> prior, checked."""
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for a damaged file
        raise ConfigError(f"{path}: not a readable parquet file ({exc})") from exc
    missing = {"item_id", "prior"} - set(frame.columns)
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    values = frame["prior"].to_numpy()
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ConfigError(f"{path}: row {bad + 1}: prior is not finite")
    return dict(zip(frame["item_id"].cast(str).to_list(), values.astype(np.float32).tolist(), strict=True))
