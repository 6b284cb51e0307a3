"""Two-tower fine-tuning of the text encoder: user history text -> next item text (InfoNCE).

One shared transformer (with a PEFT adapter, or fully trained, or frozen) encodes both towers.
Loss: in-batch softmax over the batch's target items (plus optional hard negatives mined with the
frozen model) at a temperature; rows whose target repeats in the batch do not count each other as
negatives. With `catalog_negatives` (default) a second term scores the user vectors against every
item of the catalog, taken from a detached bank refreshed at each validation pass (the ranking the
metric measures, for the cost of one matrix product); with `train_prior_beta` both terms add the
popularity prior of `encoders.item_prior`, so the encoder spends its capacity on what popularity does
not explain. BENCHMARKS.md has the ablation. Budgeted for CPUs: item texts are tokenized once,
histories are assembled from those ids (`history_text`), the step count and token budgets are
explicit, and training stops early on the validation NDCG@10 over the full catalog. A checkpoint
after every `checkpoint_every` steps lets a killed run resume where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from encoders.encoding import encode_rows
from encoders.history_text import ItemTokens, prefix_ids
from encoders.peft_methods import apply_peft, peft_regularization, peft_step
from recsys.errors import ConfigError

if TYPE_CHECKING:
    from encoders.text_encoder import TextEncoder


@dataclass
class TextTrainConfig:
    """Budget and optimisation settings of the text two-tower fine-tuning."""

    method: str = "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] | None = None
    history_tokens: int = 128
    item_tokens: int = 32
    history_items: int = 20
    prompt: str | None = None
    batch_size: int = 32
    grad_accum: int = 1
    lr: float | None = None  # None: 1e-3 for adapters (best on MovieLens, BENCHMARKS.md), 3e-5 for full fine-tuning
    weight_decay: float = 0.01
    temperature: float = 0.05
    warmup_ratio: float = 0.1
    max_steps: int = 200
    max_seconds: float | None = None
    eval_every: int = 100
    patience: int = 3
    clip_norm: float = 1.0
    crop_probability: float = 0.3
    hard_negatives: int = 0
    random_negatives: int = 64
    catalog_negatives: bool = True  # + full-catalog softmax of the user side against a detached item bank
    popularity_prior: bool = True  # text tower: beta * log(1 + count) chosen on validation (encoders.item_prior)
    train_prior_beta: float = 0.05  # > 0: the prior is in the training logits too, so the encoder learns the rest
    logq_correction: bool = True
    seed: int = 0
    threads: int | None = None
    checkpoint_every: int = 50

    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 3e-5 if self.method == "full" else 1e-3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TextTrainReport:
    steps: int
    best_step: int
    best_valid_ndcg10: float
    seconds: float
    examples_per_second: float
    resumed_from: int = 0
    curve: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Sequences:
    """Per-user item-index sequences (oldest first), the unit both towers are trained from."""

    user_ids: list[str]
    items: list[np.ndarray]


def _sample_batch(
    seqs: Sequences, rows: np.ndarray, rng: np.random.Generator, crop_p: float, history_items: int
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """(histories, targets, seen) for a batch: a random cut point per user; sometimes a shorter window.

    `seen` is everything before the cut (the window may be shorter): what the full-catalog loss
    masks, as the evaluation excludes the whole history.
    """
    histories, targets, seen = [], [], []
    for row in rows:
        seq = seqs.items[row]
        cut = int(rng.integers(1, len(seq)))
        start = max(0, cut - history_items)
        if rng.random() < crop_p and cut - start > 2:
            start = int(rng.integers(start, cut - 1))
        histories.append(seq[start:cut])
        targets.append(int(seq[cut]))
        seen.append(seq[:cut])
    return histories, np.asarray(targets, dtype=np.int64), seen


def info_nce(
    users: torch.Tensor,
    items: torch.Tensor,
    target_ids: torch.Tensor,
    item_ids: torch.Tensor,
    temperature: float,
    log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax: row i's positive is `items[i]`; every other column is a negative.

    Columns past `len(users)` are extra negatives (uniform or hard). A column holding a row's own
    target item is masked for that row unless it is the positive. `log_q` (log of each column's
    expected count among the sampled candidates) is subtracted from the logits: the logQ correction
    that stops in-batch sampling from teaching the model to push popular items down.
    """
    logits = users @ items.T / temperature
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    same = target_ids.unsqueeze(1) == item_ids.unsqueeze(0)
    positive = torch.zeros_like(same)
    positive[torch.arange(len(users)), torch.arange(len(users))] = True
    logits = logits.masked_fill(same & ~positive, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(users), device=users.device))


def catalog_info_nce(
    users: torch.Tensor,
    target_ids: torch.Tensor,
    bank: torch.Tensor,
    seen: list[np.ndarray],
    temperature: float,
) -> torch.Tensor:
    """Full-catalog softmax of the user vectors against a detached bank of every item's vector.

    Positive and negatives all come from the bank, so the gradient reaches only the user tower and
    the loss cannot be lowered by moving fresh item vectors away from stale ones (mixing a fresh
    positive with stale negatives collapses training: measured, validation NDCG@10 fell to 0.0006).
    A row's own history (`seen`) is masked, as the evaluation excludes it: the loss is the full
    ranking that NDCG@10 is measured on. The item tower still learns from the sampled loss.
    """
    logits = users @ bank.T / temperature
    blocked = torch.zeros_like(logits, dtype=torch.bool)
    for row, history in enumerate(seen):
        blocked[row, torch.as_tensor(history, dtype=torch.long)] = True
    blocked[torch.arange(len(users)), target_ids] = False
    logits = logits.masked_fill(blocked, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, target_ids)


def target_probabilities(seqs: Sequences, n_items: int) -> np.ndarray:
    """P(item is a batch's target) under `_sample_batch`: a uniform user, then a uniform cut point."""
    prob = np.zeros(n_items, dtype=np.float64)
    users = [s for s in seqs.items if len(s) >= 2]
    for seq in users:
        np.add.at(prob, seq[1:], 1.0 / (len(seq) - 1))
    return prob / max(1, len(users))


def _lr_lambda(total: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))

    return factor


def _trainable_state(model: torch.nn.Module) -> dict[str, Any]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a kill mid-write leaves the previous checkpoint intact


class TextTowerTrainer:
    """Fine-tunes `encoder` in place; evaluation callbacks score the full catalog."""

    def __init__(self, encoder: TextEncoder, item_texts: list[str], config: TextTrainConfig) -> None:
        self.config = config
        if config.method not in ("frozen",):
            apply_peft(
                encoder,
                config.method,
                r=config.lora_r,
                alpha=config.lora_alpha,
                dropout=config.lora_dropout,
                target_modules=config.target_modules,
                total_steps=config.max_steps,
            )
        else:
            apply_peft(encoder, "frozen")
        self.encoder = encoder
        self.tokens = ItemTokens.build(encoder, item_texts, config.item_tokens)
        self.prefix = prefix_ids(encoder, config.prompt)
        self.train_prior: np.ndarray | None = None  # set by `fit` when the prior is in the training logits
        self._weights_version = 0  # bumped by every optimiser step; keys the item-vector cache
        self._item_cache: tuple[int, np.ndarray] | None = None
        self._user_cache: tuple[tuple[int, int, int], np.ndarray] | None = None

    # -------------------------------------------------------------------------------- towers
    def history_rows(self, histories: list[np.ndarray]) -> list[list[int]]:
        budget, cap = self.config.history_tokens, self.config.history_items
        return [self.tokens.history(h[-cap:].tolist(), budget, self.prefix) for h in histories]

    def item_vectors(self, progress: bool = False) -> np.ndarray:
        """Every item's vector; cached until the next optimiser step (catalog encoding is the dear part)."""
        if self._item_cache is not None and self._item_cache[0] == self._weights_version:
            return self._item_cache[1]
        rows = [self.tokens.item(i) for i in range(len(self.tokens.ids))]
        vectors = encode_rows(self.encoder, rows, progress=progress, description="encode items")
        self._item_cache = (self._weights_version, vectors)
        return vectors

    def mine_hard_negatives(
        self, pool_size: int = 50, candidates: np.ndarray | None = None, progress: bool = False
    ) -> np.ndarray:
        """[items, pool_size] nearest other items under the current (before training: frozen) model.

        Training draws `hard_negatives` of a target's pool per example: items the zero-shot model
        confuses with the target, which the in-batch and uniform negatives rarely provide. Only
        `candidates` rows (default: all) are eligible; computed in blocks so memory stays
        O(block x items) instead of items x items.
        """
        vectors = self.item_vectors(progress=progress)
        n = len(vectors)
        eligible = np.arange(n) if candidates is None else np.asarray(candidates, dtype=np.int64)
        size = max(1, min(pool_size, len(eligible) - 1))
        pool = np.zeros((n, size), dtype=np.int64)
        matrix = vectors[eligible]
        position = {int(row): j for j, row in enumerate(eligible.tolist())}
        for start in range(0, n, 1024):
            block = vectors[start : start + 1024] @ matrix.T
            own = np.arange(start, min(n, start + 1024))
            for i, row in enumerate(own.tolist()):
                j = position.get(row)
                if j is not None:
                    block[i, j] = -np.inf  # an item is never its own negative
            top = np.argpartition(-block, size - 1, axis=1)[:, :size]
            pool[start : start + len(own)] = eligible[top]
        return pool

    def user_vectors(self, histories: list[np.ndarray], progress: bool = False) -> np.ndarray:
        return encode_rows(
            self.encoder, self.history_rows(histories), batch_size=64, progress=progress, description="encode histories"
        )

    # ------------------------------------------------------------------------------ training
    def fit(
        self,
        seqs: Sequences,
        evaluate,
        checkpoint: Path | None = None,
        progress: bool = True,
        hard_negative_pool: np.ndarray | None = None,
    ) -> TextTrainReport:
        """Train; `evaluate(trainer) -> float` returns validation NDCG@10 and drives early stopping."""
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        trainable_rows = np.array([i for i, s in enumerate(seqs.items) if len(s) >= 2])
        if len(trainable_rows) == 0:
            raise ConfigError("no user has two or more training interactions; nothing to fine-tune on")
        if cfg.method == "frozen" or cfg.max_steps <= 0:
            score = evaluate(self)
            return TextTrainReport(0, 0, score, 0.0, 0.0, curve=[{"step": 0, "valid_ndcg10": score}])
        params = [p for p in self.encoder.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate(), weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_lambda(cfg.max_steps, int(cfg.warmup_ratio * cfg.max_steps))
        )
        step, best, best_step, bad, curve, resumed = 0, -1.0, 0, 0, [], 0
        best_state = None
        target_prob = target_probabilities(seqs, len(self.tokens.ids))
        counts = np.bincount(np.concatenate(seqs.items), minlength=len(target_prob))
        negative_pool = np.flatnonzero(counts)
        self.train_prior = cfg.train_prior_beta * np.log1p(counts) if cfg.train_prior_beta > 0 else None
        prior = None if self.train_prior is None else torch.as_tensor(self.train_prior, dtype=torch.float32)
        n_random = cfg.random_negatives
        bank = None
        if checkpoint is not None and checkpoint.exists():
            state = torch.load(checkpoint, weights_only=False)
            self.encoder.load_state_dict(state["trainable"], strict=False)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            step, best, best_step, bad, curve = (
                state["step"],
                state["best"],
                state["best_step"],
                state["bad"],
                state["curve"],
            )
            best_state = state.get("best_state")
            resumed = step
        bar = None
        if progress:
            bar = tqdm(
                total=cfg.max_steps, initial=step, desc=f"fine-tune ({cfg.method})", unit="step", dynamic_ncols=True
            )
        started, examples = time.perf_counter(), 0
        if cfg.catalog_negatives and step < cfg.max_steps:  # a finished run resumed: nothing to train
            bank = torch.tensor(self.item_vectors(progress=progress))
        self.encoder.train()
        while step < cfg.max_steps:
            optimizer.zero_grad(set_to_none=True)
            loss_value = 0.0
            for _ in range(cfg.grad_accum):
                rows = rng.choice(trainable_rows, size=cfg.batch_size, replace=len(trainable_rows) < cfg.batch_size)
                histories, targets, seen = _sample_batch(seqs, rows, rng, cfg.crop_probability, cfg.history_items)
                item_ids = targets
                if cfg.hard_negatives and hard_negative_pool is not None:
                    picks = hard_negative_pool[
                        np.asarray(targets)[:, None],
                        rng.integers(0, hard_negative_pool.shape[1], size=(len(targets), cfg.hard_negatives)),
                    ]
                    item_ids = np.concatenate([targets, picks.reshape(-1)])
                if n_random:
                    item_ids = np.concatenate([item_ids, rng.choice(negative_pool, size=n_random)])
                log_q = None
                if cfg.logq_correction:
                    expected = cfg.batch_size * target_prob[item_ids] + n_random / len(negative_pool)
                    log_q = torch.as_tensor(np.log(np.maximum(expected, 1e-12)), dtype=torch.float32)
                users = self._embed(self.history_rows(histories))
                items = self._embed([self.tokens.item(i) for i in item_ids])
                scored_users, scored_items, scored_bank = users, items, bank
                if prior is not None:  # score = cos + prior: the index-vector form of encoders.item_prior
                    scored_users = torch.cat([users, torch.ones(len(users), 1)], dim=1)
                    scored_items = torch.cat([items, prior[torch.as_tensor(item_ids)].unsqueeze(1)], dim=1)
                    if bank is not None:
                        scored_bank = torch.cat([bank, prior.unsqueeze(1)], dim=1)
                loss = info_nce(
                    scored_users,
                    scored_items,
                    torch.as_tensor(targets),
                    torch.as_tensor(item_ids),
                    cfg.temperature,
                    log_q,
                )
                if bank is not None:
                    assert scored_bank is not None  # bank, or bank with the prior column
                    loss = loss + catalog_info_nce(
                        scored_users, torch.as_tensor(targets), scored_bank, seen, cfg.temperature
                    )
                loss = (loss + peft_regularization(self.encoder)) / cfg.grad_accum
                loss.backward()
                if bank is not None:  # the batch's items, fresh: the bank drifts less between refreshes
                    bank[torch.as_tensor(item_ids)] = items.detach()
                loss_value += float(loss.detach())
                examples += len(targets)
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
            optimizer.step()
            self._weights_version += 1
            peft_step(self.encoder, step)
            scheduler.step()
            step += 1
            elapsed = time.perf_counter() - started
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    loss=f"{loss_value:.3f}", ex_s=f"{examples / max(elapsed, 1e-9):.1f}", best=f"{max(best, 0):.4f}"
                )
            out_of_time = cfg.max_seconds is not None and elapsed > cfg.max_seconds
            if step % cfg.eval_every == 0 or step == cfg.max_steps or out_of_time:
                score = evaluate(self)
                if bank is not None:  # the evaluation just encoded the catalog with current weights
                    bank = torch.tensor(self.item_vectors())
                self.encoder.train()
                curve.append({"step": step, "loss": loss_value, "valid_ndcg10": score})
                if score > best:
                    best, best_step, bad = score, step, 0
                    best_state = _trainable_state(self.encoder)
                else:
                    bad += 1
            if checkpoint is not None and (step % cfg.checkpoint_every == 0 or step == cfg.max_steps):
                _save_checkpoint(
                    checkpoint,
                    {
                        "trainable": _trainable_state(self.encoder),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": rng.bit_generator.state,
                        "torch_rng": torch.get_rng_state(),
                        "step": step,
                        "best": best,
                        "best_step": best_step,
                        "bad": bad,
                        "curve": curve,
                        "best_state": best_state,
                        "config": cfg.to_dict(),
                    },
                )
            if bad >= cfg.patience or out_of_time:
                break
        if bar is not None:
            bar.close()
        if best_state is not None:
            self.encoder.load_state_dict(best_state, strict=False)
            self._weights_version += 1
        self.encoder.eval()
        seconds = time.perf_counter() - started
        return TextTrainReport(step, best_step, best, seconds, examples / max(seconds, 1e-9), resumed, curve)

    def _embed(self, rows: list[list[int]]) -> torch.Tensor:
        batch = self.encoder.pad(rows)
        return self.encoder(**{k: v.to(self.encoder.device) for k, v in batch.items()})


def write_report(path: Path, report: TextTrainReport) -> None:
    path.write_text(json.dumps(asdict(report), indent=2))
