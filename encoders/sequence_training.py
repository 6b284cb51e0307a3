"""Training and inference for the `sequence` user tower (SASRec recipe over cached item vectors).

Objective: next-item prediction at every position of every training window, with a softmax over
the *whole* catalog (exact up to `full_softmax_max` items; beyond, a popularity-sampled softmax
with the logQ correction). Full-catalog cross-entropy is what lifts SASRec from its original
binary loss to the reference figures, and it needs no negative sampler.

Data: each user's history is cut into windows of `max_len + 1` items, tiled back from the newest
item, so every interaction of a long history is a target once per epoch (not only its newest
200); windows of similar length are batched together to keep padding low.

Early stopping watches NDCG@10 (history excluded, full catalog) on every target the run has not
trained on: the validation targets and, with `holdout_tail`, each user's held-out tail items, each
scored from the history before it (`heldout_targets`). On ml-latest-small that is 5,490 targets
instead of 610: the validation score alone moves by ±0.004 from epoch to epoch, enough to pick an
epoch by noise. The validation targets' own NDCG@10 is still what the report calls
`best_valid_ndcg10` (the towers are compared on it).
With `refit` the tower is then trained again from scratch on train + validation for the chosen
number of epochs: the model that scores test and serves has seen the newest interactions, as a
deployed model retrained nightly would; the epoch count is the only thing validation chose.

Stacking (`holdout_tail`): the ranker learns how far to trust the tower's scores from queries at
each user's last few training targets. A tower trained on those targets scores them far more
confidently than it will score tomorrow's (on ml-latest-small the target is among the top 200 for
82% of such queries but 61% of test queries), so the ranker over-trusts it. With `refit`, the
early-stopped run therefore leaves each user's last `holdout_tail` training items out of its
training windows (`without_tail`): it scores those targets, and the validation targets, out of
sample, and is kept beside the served model as the ranker's training view of the tower.

Cold items (those without a training interaction) are scored by their text part alone. The
cold-item mode (`text_loss` > 0; off by default, see below) trains that part to carry a score on its own:
- the training softmax runs over the items seen in training only. An item nobody has interacted
  with yet is no evidence of disinterest; as an ever-present negative its text direction would be
  pushed down, which is how a new item would look on the day it is added;
- with `text_loss` > 0, a second softmax scores the same states (detached; a random
  `text_loss_targets` of them a step) against the text parts alone, so the projection learns to
  rank by text, while the id embeddings keep the residual that behaviour adds for warm items.
  Detached, it leaves the user tower's objective as it was.
On a 20% cold split of ml-latest-small the mode takes cold targets' HR@50 from 0 to 0.064 at the
same validation NDCG@10; on the full split the stacked system's validation NDCG@10 fell from 0.0957
to 0.081 with it (one run each, not yet attributed), so it is opt-in: for catalogs where new items
matter more than the last point of warm accuracy.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl
import torch
from torch.nn import functional as F

from encoders.catalog_softmax import catalog_cross_entropy
from encoders.sequence import (
    SequenceConfig,
    SequenceHistories,
    SequenceTower,
    build_model,
    cosine_warmup,
    gaps_of,
    item_matrix,
    right_aligned,
    user_vectors,
)
from recsys.data.order import chronological
from recsys.errors import ConfigError


@dataclass
class SequenceTrainConfig:
    """Optimisation budget; the defaults fit ml-latest-small in a few CPU minutes."""

    epochs: int = 40
    tokens_per_batch: int = 2048
    lr: float = 2e-3
    weight_decay: float = 0.0
    patience: int = 8
    eval_every: int = 1
    seed: int = 0
    refit: bool = True
    full_softmax_max: int = 100_000
    sampled_negatives: int = 8192
    threads: int | None = None
    max_seconds: float | None = None
    holdout_tail: int = 8
    # Cold-item mode (module doc): > 0 limits the softmax to items seen in training and adds a
    # text-only softmax of this weight (1.0 measured). Off by default: chosen on validation.
    text_loss: float = 0.0
    # ... scored on this many random targets a step: it trains only the text projection, which needs
    # far fewer than the tower; the whole batch cost +60% a step, 256 costs ~nothing (ml-latest-small).
    text_loss_targets: int = 256
    # Exponential moving average of the weights, per step (0 = off, chosen on validation: decay 0.99
    # smoothed the curve but did not raise it, BENCHMARKS "Tried since"): what validation scores, what
    # early stopping keeps and what a refit serves. Validation NDCG@10 at 610 users moves by
    # ±0.004 epoch to epoch; the average keeps the noise of the last steps out of the served model.
    ema_decay: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> None:
        if self.holdout_tail < 0:
            raise ConfigError(f"holdout_tail must be >= 0, got {self.holdout_tail}")
        if self.text_loss < 0:
            raise ConfigError(f"text_loss must be >= 0, got {self.text_loss}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.text_loss_targets < 1:
            raise ConfigError(f"text_loss_targets must be >= 1, got {self.text_loss_targets}")

    @property
    def stacking_tail(self) -> int:
        """Items per user the early-stopped run leaves out: only with a refit to serve instead."""
        return self.holdout_tail if self.refit else 0


@dataclass
class TrainReport:
    best_epoch: int
    best_valid_ndcg10: float
    epochs_run: int
    seconds: float
    examples_per_second: float
    refit_epochs: int = 0
    refit_seconds: float = 0.0
    curve: list[tuple[float, ...]] = field(default_factory=list)
    # (epoch, NDCG@10 over the validation and held-out tail targets): what chose `best_epoch`
    heldout_curve: list[tuple[float, float]] = field(default_factory=list)
    heldout_targets: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def histories(interactions: pl.DataFrame, index: dict[str, int]) -> SequenceHistories:
    """Per-user sequences of model rows in the split's order (`recsys.data.order.chronological`)."""
    unknown = interactions.filter(~pl.col("item_id").is_in(list(index)))
    if unknown.height:
        raise ConfigError(
            f"{unknown.height} interactions refer to items outside the model's item list, "
            f"e.g. {unknown['item_id'][0]!r}"
        )
    grouped = (
        chronological(interactions)
        .with_columns(
            pl.col("item_id").replace_strict(index, return_dtype=pl.Int64).alias("row"),
            pl.col("ts").dt.epoch("s").alias("sec"),
        )
        .group_by("user_id", maintain_order=True)
        .agg("row", "sec")
    )
    items = [np.asarray(v, dtype=np.int64) for v in grouped["row"].to_list()]
    gaps = [gaps_of(np.asarray(s, dtype=np.int64)) for s in grouped["sec"].to_list()]
    return SequenceHistories(grouped["user_id"].to_list(), items, gaps)


def without_tail(hist: SequenceHistories, tail: int) -> SequenceHistories:
    """Each history without its newest `tail` items, keeping at least its first two (module doc).

    The ranker only queries positions >= 2 (`jobs.train_ranker.build_queries`), so a kept first
    pair never overlaps its queries.
    """
    if tail <= 0:
        return hist
    keep = [max(len(seq) - tail, min(len(seq), 2)) for seq in hist.items]
    return SequenceHistories(
        list(hist.user_ids),
        [seq[:k] for seq, k in zip(hist.items, keep, strict=True)],
        [gap[:k] for gap, k in zip(hist.gaps, keep, strict=True)],
    )


def heldout_key(user: str, position: int) -> str:
    """Id of the held-out target at `position` of `user`'s history (the validation target: its length)."""
    return f"{user}#{position}"


def heldout_targets(
    hist: SequenceHistories, fit_hist: SequenceHistories, valid_targets: dict[str, int]
) -> tuple[SequenceHistories, dict[str, int]]:
    """Every target a run fitted on `fit_hist` never trained on, each with the history before it.

    The validation target of each user (history: the whole of `hist`) and every item of `hist`
    that `fit_hist` leaves out (history: the items before it). Keys are `user#position`.
    """
    ids, items, gaps, targets = [], [], [], {}
    for row, user in enumerate(hist.user_ids):
        seq, gap = hist.items[row], hist.gaps[row]
        for position in range(len(fit_hist.items[row]), len(seq)):
            key = heldout_key(user, position)
            ids.append(key)
            items.append(seq[:position])
            gaps.append(gap[:position])
            targets[key] = int(seq[position])
        if user in valid_targets:
            key = heldout_key(user, len(seq))
            ids.append(key)
            items.append(seq)
            gaps.append(gap)
            targets[key] = valid_targets[user]
    return SequenceHistories(ids, items, gaps), targets


def training_windows(hist: SequenceHistories, max_len: int) -> list[tuple[int, int, int]]:
    """(user row, start, end) windows of at most `max_len + 1` items covering every history.

    Tiled back from the newest item, each window's first item being the previous window's last
    input, so every item but a user's first is a target exactly once per epoch, and the newest
    window (the one serving resembles most) always ends at the newest item.
    """
    out = []
    for row, seq in enumerate(hist.items):
        end = len(seq)
        while end >= 2:
            out.append((row, max(0, end - max_len - 1), end))
            end -= max_len
    return out


Window = tuple[int, int, int]


def _batches(windows: list[Window], tokens: int, rng: np.random.Generator) -> list[list[Window]]:
    """Windows of similar length grouped into batches of about `tokens` targets, in random order.

    Grouping by length keeps padding (wasted attention and feed-forward work) low: a batch is
    padded only to its longest window, and most histories are far shorter than `max_len`.
    """
    lengths = np.asarray([e - s - 1 for _, s, e in windows])
    order = np.lexsort((rng.random(len(windows)), lengths))
    batches: list[list[Window]] = []
    current: list[Window] = []
    longest = 0
    for i in order:
        longest_if_added = max(longest, int(lengths[i]))
        if current and longest_if_added * (len(current) + 1) > tokens:
            batches.append(current)
            current, longest_if_added = [], int(lengths[i])
        current.append(windows[i])
        longest = longest_if_added
    if current:
        batches.append(current)
    return [batches[i] for i in rng.permutation(len(batches))]


def _window_tensors(hist: SequenceHistories, batch: list[tuple[int, int, int]]):
    inputs = [hist.items[r][s : e - 1] for r, s, e in batch]
    gaps = [hist.gaps[r][s : e - 1] for r, s, e in batch]
    targets = [hist.items[r][s + 1 : e] for r, s, e in batch]
    width = max(len(a) for a in inputs)
    return (torch.as_tensor(right_aligned(a, width)) for a in (inputs, gaps, targets))


def next_item_loss(
    states: torch.Tensor,
    targets: torch.Tensor,
    matrix: torch.Tensor,
    config: SequenceTrainConfig,
    sampler: torch.Tensor | None,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of each target row over the catalog rows 1.. (exact, or sampled with logQ).

    The exact one is `catalog_cross_entropy`: the same value and gradients as autograd's
    cross-entropy over the full logit matrix, at half the step time on CPU (BENCHMARKS.md).

    `seen` (bool over rows 1..) limits the exact softmax to the items seen in training (module
    doc); the sampled one draws only those already (`_sampler`).
    """
    catalog = matrix[1:]
    if sampler is None:
        return catalog_cross_entropy(states, catalog, targets - 1, seen)
    negatives = torch.multinomial(sampler, config.sampled_negatives, replacement=True)
    positive = (states * catalog[targets - 1]).sum(-1, keepdim=True) - torch.log(sampler[targets - 1]).unsqueeze(1)
    sampled = states @ catalog[negatives].T - torch.log(sampler[negatives]).unsqueeze(0)
    sampled = sampled.masked_fill(negatives.unsqueeze(0) == (targets - 1).unsqueeze(1), float("-inf"))
    logits = torch.cat([positive, sampled], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long))


def _text_only_loss(
    model: SequenceTower,
    states: torch.Tensor,
    targets: torch.Tensor,
    tc: SequenceTrainConfig,
    sampler: torch.Tensor | None,
    seen: torch.Tensor | None,
) -> torch.Tensor:
    """The text-only softmax on a random `text_loss_targets` of the step's targets (module doc).

    The states are detached: this loss trains the text projection, not the user tower.
    """
    pick = torch.randperm(len(targets))[: tc.text_loss_targets]
    return next_item_loss(states[pick].detach(), targets[pick], model.text_matrix(), tc, sampler, seen)


def _sampler(hist: SequenceHistories, n_items: int, seen_only: bool) -> torch.Tensor:
    """Sampling distribution for the sampled softmax: counts^0.75, every item at least once unless
    `seen_only` (the cold-item mode: items seen in training only)."""
    counts = np.zeros(n_items, dtype=np.float64) if seen_only else np.ones(n_items, dtype=np.float64)
    for seq in hist.items:
        np.add.at(counts, seq - 1, 1.0)
    weights = counts**0.75
    return torch.as_tensor(weights / weights.sum(), dtype=torch.float32)


def _seen_rows(hist: SequenceHistories, n_items: int) -> np.ndarray:
    """Bool over rows 1..n_items: the items some training history holds (every target is one)."""
    seen = np.zeros(n_items, dtype=bool)
    for seq in hist.items:
        seen[seq - 1] = True
    return seen


def ndcg10_of_targets(
    user_vecs: np.ndarray, matrix: np.ndarray, hist: SequenceHistories, targets: dict[str, int], allowed: np.ndarray
) -> float:
    """Mean NDCG@10 of one target row per user, history excluded, ranking over `allowed` rows."""
    scores = ndcg10_by_target(user_vecs, matrix, hist, targets, allowed)
    return float(np.mean(list(scores.values()))) if scores else 0.0


def ndcg10_by_target(
    user_vecs: np.ndarray, matrix: np.ndarray, hist: SequenceHistories, targets: dict[str, int], allowed: np.ndarray
) -> dict[str, float]:
    """NDCG@10 of each history's target (keyed by its id in `hist`), history excluded, over `allowed` rows."""
    out: dict[str, float] = {}
    for row, user in enumerate(hist.user_ids):
        target = targets.get(user)
        if target is None:
            continue
        scores = np.where(allowed, matrix @ user_vecs[row], -np.inf)
        scores[hist.items[row]] = -np.inf
        rank = int((scores > scores[target]).sum())
        out[user] = 1.0 / np.log2(rank + 2) if rank < 10 else 0.0
    return out


def train_sequence_tower(
    train_hist: SequenceHistories,
    valid_targets: dict[str, int],
    text_vectors: np.ndarray,
    warm: np.ndarray,
    allowed: np.ndarray,
    config: SequenceConfig | None = None,
    train_config: SequenceTrainConfig | None = None,
    progress: bool = True,
    fit_hist: SequenceHistories | None = None,
) -> tuple[SequenceTower, TrainReport]:
    """Fit and keep the epoch with the best validation NDCG@10.

    `text_vectors` has a zero row 0 (padding); `warm` marks rows that get an id embedding;
    `allowed` marks rows in the ranking catalog; `valid_targets` maps user -> target row.
    Training windows come from `fit_hist` (default `train_hist`; `without_tail` of it for
    stacking), validation user vectors from the whole `train_hist`.
    """
    config = config or SequenceConfig()
    tc = train_config or SequenceTrainConfig()
    tc.check()
    if tc.threads:
        torch.set_num_threads(tc.threads)
    started = time.perf_counter()
    heldout = heldout_targets(train_hist, fit_hist or train_hist, valid_targets)
    model, curve, best_epoch, _, epochs_run, examples = _fit(
        fit_hist or train_hist,
        text_vectors,
        warm,
        config,
        tc,
        tc.epochs,
        progress,
        valid=(train_hist, valid_targets, allowed, heldout),
        label="",
    )
    seconds = time.perf_counter() - started
    valid_at_best = next((p[2] for p in curve if p[0] == best_epoch), -1.0)
    report = TrainReport(
        best_epoch,
        valid_at_best,
        epochs_run,
        round(seconds, 1),
        examples / max(seconds, 1e-9),
        curve=[p[:3] + p[4:] for p in curve],
        heldout_curve=[(p[0], p[3]) for p in curve],
        heldout_targets=len(heldout[1]),
    )
    return model, report


def refit_sequence_tower(
    hist: SequenceHistories,
    text_vectors: np.ndarray,
    warm: np.ndarray,
    config: SequenceConfig,
    train_config: SequenceTrainConfig,
    report: TrainReport,
    progress: bool = True,
) -> tuple[SequenceTower, TrainReport]:
    """A fresh tower trained on `hist` (train + validation) for the epochs validation chose.

    Same seed, settings and schedule as the early-stopped run; `report` gains the refit's epochs
    and time (a copy is returned).
    """
    if train_config.threads:
        torch.set_num_threads(train_config.threads)
    epochs = max(1, report.best_epoch)
    started = time.perf_counter()
    model, *_ = _fit(
        hist, text_vectors, warm, config, train_config, epochs, progress, valid=None, label=" (refit on train+valid)"
    )
    refit = copy.copy(report)
    refit.refit_epochs, refit.refit_seconds = epochs, round(time.perf_counter() - started, 1)
    return model, refit


def _fit(
    hist: SequenceHistories,
    text_vectors: np.ndarray,
    warm: np.ndarray,
    config: SequenceConfig,
    tc: SequenceTrainConfig,
    epochs: int,
    progress: bool,
    valid: tuple[SequenceHistories, dict[str, int], np.ndarray, tuple[SequenceHistories, dict[str, int]]] | None,
    label: str,
) -> tuple[SequenceTower, list[tuple[float, ...]], int, float, int, int]:
    """One training run; with `valid`, early-stopped and rolled back to the best evaluation.

    `valid` = (validation histories, validation targets, allowed rows, held-out targets): the
    held-out NDCG@10 decides; curve points are (epoch, loss, validation NDCG@10, held-out NDCG@10
    [, the raw weights' validation NDCG@10 when averaging]).
    """
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    model = build_model(text_vectors, warm, config)
    n_items = text_vectors.shape[0] - 1
    text_loss = tc.text_loss if model.text_proj is not None and model.item_id is not None else 0.0
    cold_mode = tc.text_loss > 0
    sampler = _sampler(hist, n_items, seen_only=cold_mode) if n_items > tc.full_softmax_max else None
    if not any(len(s) >= 2 for s in hist.items):
        raise ConfigError("no user has two or more training interactions; nothing to learn from")
    seen = torch.as_tensor(_seen_rows(hist, n_items), dtype=torch.bool) if cold_mode and sampler is None else None
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    windows = training_windows(hist, config.max_len)
    steps_per_epoch = len(_batches(windows, tc.tokens_per_batch, np.random.default_rng(0)))
    total = steps_per_epoch * tc.epochs  # a refit stops early on the same schedule as the run it repeats
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_warmup(s, total, max(1, total // 50)))
    average = WeightAverage(model, tc.ema_decay) if tc.ema_decay > 0 else None
    best_state, best_ndcg, best_epoch, bad = None, -1.0, 0, 0
    valid_keys = (
        []
        if valid is None
        else [heldout_key(u, len(s)) for u, s in zip(valid[0].user_ids, valid[0].items, strict=True) if u in valid[1]]
    )
    curve: list[tuple[float, ...]] = []
    started, examples, epoch = time.perf_counter(), 0, 0
    bar = _progress_bar(epochs, progress, label)
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum, loss_count = 0.0, 0
        for batch in _batches(windows, tc.tokens_per_batch, rng):
            inputs, gaps, targets = _window_tensors(hist, batch)
            matrix = model.item_matrix()
            states = model.states(inputs, gaps, matrix)
            keep = targets > 0
            loss = next_item_loss(states[keep], targets[keep], matrix, tc, sampler, seen)
            if text_loss:
                loss = loss + text_loss * _text_only_loss(model, states[keep], targets[keep], tc, sampler, seen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
            if average is not None:
                average.update(model)
            n = int(keep.sum())
            loss_sum, loss_count = loss_sum + float(loss.detach()) * n, loss_count + n
        examples += loss_count
        kept = average.model if average is not None else model
        if valid is not None and (epoch % tc.eval_every == 0 or epoch == epochs):
            valid_hist, targets_of, allowed, (heldout_hist, heldout_of) = valid
            # one pass over the held-out targets; the validation targets are among them (`heldout_targets`)
            by_target = _ndcg_by_target(kept, heldout_hist, heldout_of, allowed)
            ndcg = float(np.mean(list(by_target.values())))
            valid_ndcg = float(np.mean([by_target[k] for k in valid_keys])) if valid_keys else 0.0
            point: tuple[float, ...] = (epoch, loss_sum / max(1, loss_count), valid_ndcg, ndcg)
            if average is not None:  # the raw weights' score beside it: what the average buys
                point += (_valid_ndcg(model, valid_hist, targets_of, allowed),)
            curve.append(point)
            if ndcg > best_ndcg:
                best_ndcg, best_epoch, bad = ndcg, epoch, 0
                best_state = copy.deepcopy(kept.state_dict())
            else:
                bad += 1
            if bar is not None:
                bar.set_postfix(
                    loss=f"{curve[-1][1]:.3f}",
                    valid_ndcg10=f"{valid_ndcg:.4f}",
                    heldout=f"{ndcg:.4f}",
                    best=f"{best_ndcg:.4f}",
                )
        elif bar is not None:
            bar.set_postfix(loss=f"{loss_sum / max(1, loss_count):.3f}")
        if bar is not None:
            bar.update(1)
        if valid is not None and bad >= tc.patience:
            break
        if tc.max_seconds and time.perf_counter() - started > tc.max_seconds:
            break
    if bar is not None:
        bar.close()
    if average is not None:
        model = average.model
    if best_state is not None:
        model.load_state_dict(best_state)
    if valid is None:
        best_epoch = epoch
    model.eval()
    return model, curve, best_epoch, best_ndcg, epoch, examples


def _valid_ndcg(model: SequenceTower, hist: SequenceHistories, targets: dict[str, int], allowed: np.ndarray) -> float:
    scores = _ndcg_by_target(model, hist, targets, allowed)
    return float(np.mean(list(scores.values()))) if scores else 0.0


def _ndcg_by_target(
    model: SequenceTower, hist: SequenceHistories, targets: dict[str, int], allowed: np.ndarray
) -> dict[str, float]:
    was_training = model.training
    model.eval()
    try:
        return ndcg10_by_target(
            user_vectors(model, hist, model.config.max_len), item_matrix(model), hist, targets, allowed
        )
    finally:
        model.train(was_training)


class WeightAverage:
    """An exponential moving average of a model's weights (`SequenceTrainConfig.ema_decay`).

    The decay ramps up over the first steps ((1 + step) / (10 + step), as TensorFlow's
    ExponentialMovingAverage does), so the average does not remember the random initialisation.
    Buffers (text vectors, warm rows) are copied, not averaged.
    """

    def __init__(self, model: SequenceTower, decay: float) -> None:
        self.model = copy.deepcopy(model)
        self.model.eval()
        self.decay = decay
        self.steps = 0

    @torch.no_grad()
    def update(self, model: SequenceTower) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        averaged: list[torch.Tensor] = list(self.model.parameters())
        current: list[torch.Tensor] = list(model.parameters())
        torch._foreach_mul_(averaged, decay)
        torch._foreach_add_(averaged, current, alpha=1 - decay)


def _progress_bar(total: int, enabled: bool, label: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"sequence tower{label}", unit="epoch", dynamic_ncols=True)
