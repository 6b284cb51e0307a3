"""Training and inference for the `sequence` user tower over cached item text vectors.

Objective: next-item prediction at every position of each training history, with a softmax over
the *whole* catalog (cheap here because item vectors are a projection of cached text vectors, not
a transformer pass). Full-catalog cross-entropy beats sampled negatives on ranking metrics and
needs no negative sampler. Early stopping watches validation NDCG@10 under the DESIGN §2 protocol.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from encoders.sequence import SequenceConfig, build_model, cosine_warmup, gap_buckets, right_aligned
from recsys.errors import ConfigError

if TYPE_CHECKING:
    import polars as pl
    import torch


@dataclass
class SequenceTrainConfig:
    """Optimisation budget; defaults fit ml-latest-small in a few CPU minutes."""

    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    eval_every: int = 5
    patience: int = 4
    seed: int = 0
    crop_probability: float = 0.5
    loss_positions: int = 50
    crop_min_fraction: float = 0.5
    threads: int | None = None
    max_seconds: float | None = None


@dataclass
class SequenceHistories:
    """Users' histories as item-index arrays (1-based; 0 is padding) with gap buckets."""

    user_ids: list[str]
    items: list[np.ndarray]
    gaps: list[np.ndarray]


@dataclass
class TrainReport:
    best_epoch: int
    best_valid_ndcg10: float
    epochs_run: int
    seconds: float
    examples_per_second: float
    curve: list[tuple[int, float, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def item_index(item_ids: list[str]) -> dict[str, int]:
    """Map item ids to 1-based rows of the item matrix (row 0 is padding)."""
    return {item: i + 1 for i, item in enumerate(item_ids)}


def histories(interactions: pl.DataFrame, index: dict[str, int]) -> SequenceHistories:
    """Group interactions into per-user sequences ordered by (ts, item_id), the split's order."""
    import polars as pl

    unknown = interactions.filter(~pl.col("item_id").is_in(list(index)))
    if unknown.height:
        raise ConfigError(
            f"{unknown.height} interactions refer to items outside the model's item list, "
            f"e.g. {unknown['item_id'][0]!r}"
        )
    grouped = (
        interactions.sort(["user_id", "ts", "item_id"])
        .with_columns(
            pl.col("item_id").replace_strict(index, return_dtype=pl.Int64).alias("idx"),
            pl.col("ts").dt.epoch("s").alias("sec"),
        )
        .group_by("user_id", maintain_order=True)
        .agg("idx", "sec")
    )
    items = [np.asarray(v, dtype=np.int64) for v in grouped["idx"].to_list()]
    gaps = []
    for secs in grouped["sec"].to_list():
        arr = np.asarray(secs, dtype=np.int64)
        gaps.append(gap_buckets(np.diff(arr, prepend=arr[0] if len(arr) else 0)))
    return SequenceHistories(grouped["user_id"].to_list(), items, gaps)


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _training_batch(
    hist: SequenceHistories, rows: np.ndarray, max_len: int, rng: np.random.Generator, crop_p: float,
    crop_min_fraction: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, gap buckets and next-item targets for a batch.

    With probability `crop_p` a history is cut at a random point in its second half, so positions
    early in long histories also become recent ones (augmentation, and it lets the loss look only
    at the last `loss_positions` states, which bounds the catalog-softmax cost per step).
    """
    inputs, gaps, targets = [], [], []
    for row in rows:
        seq, gap = hist.items[row], hist.gaps[row]
        end = len(seq)
        if end > 4 and rng.random() < crop_p:
            end = int(rng.integers(max(3, int(end * crop_min_fraction)), end + 1))
        start = max(0, end - max_len - 1)
        inputs.append(seq[start : end - 1])
        gaps.append(gap[start : end - 1])
        targets.append(seq[start + 1 : end])
    return right_aligned(inputs, max_len), right_aligned(gaps, max_len), right_aligned(targets, max_len)


def score_users(model: torch.nn.Module, hist: SequenceHistories, max_len: int, batch_size: int = 256) -> np.ndarray:
    """Scores of every item row (column 0 = padding) for each user's next item: [users, items+1]."""
    import torch

    with torch.inference_mode():
        matrix = model.eval().item_matrix().numpy()
    return user_vectors(model, hist, max_len, batch_size) @ matrix.T


def user_vectors(model: torch.nn.Module, hist: SequenceHistories, max_len: int, batch_size: int = 256) -> np.ndarray:
    """The user tower's output (one vector per user) for retrieval by inner product."""
    import torch

    model.eval()
    out = [np.zeros((0, model.config.dim), dtype=np.float32)]
    with torch.inference_mode():
        matrix = model.item_matrix()
        for start in range(0, len(hist.items), batch_size):
            items = torch.as_tensor(right_aligned(hist.items[start : start + batch_size], max_len))
            gaps = torch.as_tensor(right_aligned(hist.gaps[start : start + batch_size], max_len))
            out.append(model.user_states(items, gaps, matrix)[:, -1].numpy())
    return np.concatenate(out)


def ndcg10_of_targets(
    scores: np.ndarray, hist: SequenceHistories, targets: dict[str, int], allowed: np.ndarray
) -> float:
    """Mean NDCG@10 of one target per user, history excluded, ranking over `allowed` item rows."""
    total, count = 0.0, 0
    for row, user in enumerate(hist.user_ids):
        target = targets.get(user)
        if target is None:
            continue
        s = np.where(allowed, scores[row], -np.inf)
        s[hist.items[row]] = -np.inf
        rank = int((s > s[target]).sum())
        total += 1.0 / np.log2(rank + 2) if rank < 10 else 0.0
        count += 1
    return total / max(1, count)


def train_sequence_tower(
    train_hist: SequenceHistories,
    valid_targets: dict[str, int],
    text_vectors: np.ndarray,
    warm: np.ndarray,
    allowed: np.ndarray,
    config: SequenceConfig | None = None,
    train_config: SequenceTrainConfig | None = None,
    progress: bool = True,
) -> tuple[torch.nn.Module, TrainReport]:
    """Fit the tower on `train_hist`; keep the weights with the best validation NDCG@10.

    `text_vectors` has a zero row 0 (padding); `warm` marks rows that get an id embedding;
    `allowed` marks rows in the ranking catalog; `valid_targets` maps user -> target row.
    """
    import torch

    config = config or SequenceConfig()
    tc = train_config or SequenceTrainConfig()
    _set_threads(tc.threads)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    model = build_model(text_vectors, warm, config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    trainable_rows = np.array([i for i, s in enumerate(train_hist.items) if len(s) >= 2])
    if len(trainable_rows) == 0:
        raise ConfigError("no user has two or more training interactions; nothing to learn from")
    steps_per_epoch = math_ceil(len(trainable_rows), tc.batch_size)
    total_steps = steps_per_epoch * tc.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_warmup(step, total_steps, max(1, total_steps // 50))
    )
    best_state, best_ndcg, best_epoch, bad_evals = None, -1.0, 0, 0
    curve: list[tuple[int, float, float]] = []
    started, examples = time.perf_counter(), 0
    bar = _progress_bar(tc.epochs, progress)
    epoch = 0
    for epoch in range(1, tc.epochs + 1):
        model.train()
        order = rng.permutation(trainable_rows)
        epoch_loss, epoch_examples = 0.0, 0
        for start in range(0, len(order), tc.batch_size):
            inputs, gaps, targets = _training_batch(
                train_hist, order[start : start + tc.batch_size], config.max_len, rng, tc.crop_probability
            )
            inputs_t, gaps_t, targets_t = (torch.as_tensor(a) for a in (inputs, gaps, targets))
            matrix = model.item_matrix()
            states = model.user_states(inputs_t, gaps_t, matrix)
            keep = targets_t > 0
            keep[:, : max(0, config.max_len - tc.loss_positions)] = False
            logits = states[keep] @ matrix[1:].T
            loss = torch.nn.functional.cross_entropy(logits, targets_t[keep] - 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            epoch_loss += float(loss.detach()) * int(keep.sum())
            examples += int(keep.sum())
            epoch_examples += int(keep.sum())
        if epoch % tc.eval_every == 0 or epoch == tc.epochs:
            ndcg = ndcg10_of_targets(score_users(model, train_hist, config.max_len), train_hist, valid_targets, allowed)
            curve.append((epoch, epoch_loss / max(1, epoch_examples), ndcg))
            if ndcg > best_ndcg:
                best_ndcg, best_epoch, bad_evals = ndcg, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_evals += 1
            if bar is not None:
                bar.set_postfix(loss=f"{curve[-1][1]:.3f}", valid_ndcg10=f"{ndcg:.4f}", best=f"{best_ndcg:.4f}")
        if bar is not None:
            bar.update(1)
        if bad_evals >= tc.patience:
            break
        if tc.max_seconds and time.perf_counter() - started > tc.max_seconds:
            break
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    seconds = time.perf_counter() - started
    report = TrainReport(best_epoch, best_ndcg, epoch, seconds, examples / max(seconds, 1e-9), curve)
    return model, report


def math_ceil(n: int, d: int) -> int:
    return -(-n // d)


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sequence tower", unit="epoch", dynamic_ncols=True)
