"""`recsys train-encoder`: fine-tune the text encoder, train the chosen user tower, evaluate, save.

Flow (docs/architecture.md):
1. text stage — PEFT (LoRA by default) two-tower fine-tuning, history text -> next item text,
   early-stopped on validation NDCG@10 (`frozen` skips it: the zero-shot baseline);
2. item vectors — every item of the catalog encoded once with the tuned encoder (cached);
3. user tower — `text` (history text through the same encoder), `pooled` (recency-weighted mean),
   `sequence` (SASRec over the cached item vectors, trained here in minutes), or `auto` (text and
   sequence both, the one with the higher validation NDCG@10 kept, the choice in run.json);
4. evaluation on the test targets (leave-last-out, history excluded, full catalog), top-50 lists
   written as parquet for outside rescoring, and every artefact saved under `out`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from encoders.encoding import encode_rows
from encoders.item_prior import PRIOR_FILE, item_side, log_counts, save_prior, select_beta, user_side
from encoders.peft_methods import save_adapter
from encoders.query_check import catalog_probe, choose_query_prior, genre_sets, relevance
from encoders.sequence import HOLDOUT_MATRIX, HOLDOUT_WEIGHTS, SequenceConfig, SequenceTower, item_matrix, user_vectors
from encoders.sequence_training import (
    SequenceTrainConfig,
    histories,
    refit_sequence_tower,
    train_sequence_tower,
    without_tail,
)
from encoders.text_encoder import TextEncoder
from encoders.text_training import Sequences, TextTowerTrainer, TextTrainConfig
from encoders.towers import AUTO, AUTO_TOWERS, TOWERS, pooled_user_vectors
from recsys.data.dataset import Dataset
from recsys.data.order import chronological
from recsys.errors import ConfigError
from recsys.metrics import evaluate_topk
from recsys.scoring import dense_topk
from recsys.splits import Split


@dataclass
class EncoderRun:
    """What a training run produced: metrics, timings and where the artefacts are."""

    out: Path
    tower: str
    method: str
    valid: dict[str, float]
    test: dict[str, float]
    timings: dict[str, float]
    text_report: dict[str, Any] = field(default_factory=dict)
    sequence_report: dict[str, Any] = field(default_factory=dict)
    prior_report: dict[str, Any] = field(default_factory=dict)
    tower_choice: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "tower": self.tower,
            "method": self.method,
            "valid": self.valid,
            "test": self.test,
            "timings": self.timings,
            "text_report": self.text_report,
            "sequence_report": self.sequence_report,
            "popularity_prior": self.prior_report,
            "tower_choice": self.tower_choice,
        }


@dataclass
class TowerVectors:
    """One user tower's output on a split: user vectors and the item matrix each stage scores against."""

    valid_users: np.ndarray
    valid_items: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)
    valid_metrics: dict[str, float] = field(default_factory=dict)
    # Rows the tower can place at all (None: every row); an id-only tower has nothing for unseen items.
    valid_rankable: np.ndarray | None = None
    test_rankable: np.ndarray | None = None
    model: SequenceTower | None = None  # the sequence tower that made the test vectors


@dataclass
class CatalogView:
    """Item rows shared by all towers: ids, texts, the ranking mask and each user's sequences."""

    item_ids: list[str]
    texts: list[str]
    allowed: np.ndarray
    row_of: dict[str, int]

    @classmethod
    def build(cls, dataset: Dataset, split: Split) -> CatalogView:
        text = dataset.item_text()
        item_ids = text["item_id"].to_list()
        row_of = {item: i for i, item in enumerate(item_ids)}
        allowed = np.zeros(len(item_ids), dtype=bool)
        allowed[[row_of[i] for i in split.catalog().to_list()]] = True
        return cls(item_ids, text["text"].to_list(), allowed, row_of)

    def sequences(self, interactions: pl.DataFrame) -> tuple[list[str], list[np.ndarray]]:
        """Users and their item rows, oldest first, ordered by (ts, item_id) like the split."""
        grouped = (
            chronological(interactions)
            .with_columns(pl.col("item_id").replace_strict(self.row_of, return_dtype=pl.Int64).alias("row"))
            .group_by("user_id", maintain_order=True)
            .agg("row")
        )
        return grouped["user_id"].to_list(), [np.asarray(r, dtype=np.int64) for r in grouped["row"].to_list()]


def _targets(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("user_id", "item_id")


def _evaluate_vectors(
    view: CatalogView,
    users: list[str],
    histories: list[np.ndarray],
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    targets: pl.DataFrame,
    item_counts: pl.DataFrame | None,
    k: int = 50,
    rankable: np.ndarray | None = None,
) -> tuple[dict[str, float], pl.DataFrame]:
    """Metrics and top-k lists; `rankable` (rows the tower can place at all) narrows the catalog."""
    wanted = set(targets["user_id"].to_list())
    keep = [i for i, u in enumerate(users) if u in wanted]
    topk = dense_topk(
        [users[i] for i in keep],
        user_vectors[keep],
        view.item_ids,
        item_vectors,
        k,
        exclude=[histories[i] for i in keep],
        allowed=view.allowed if rankable is None else view.allowed & rankable,
    )
    catalog = pl.Series("item_id", [i for i, a in zip(view.item_ids, view.allowed, strict=True) if a])
    metrics = evaluate_topk(topk, targets, ks=(10, 50), catalog=catalog, item_counts=item_counts)
    return metrics, topk


def train_encoder(
    dataset: Dataset,
    split: Split,
    out: Path,
    tower: str = "text",
    base_model: str | None = None,
    text_config: TextTrainConfig | None = None,
    sequence_config: SequenceConfig | None = None,
    sequence_train_config: SequenceTrainConfig | None = None,
    progress: bool = True,
) -> EncoderRun:
    """Run the whole encoder training flow and save artefacts to `out` (resumable text stage)."""
    if tower not in (*TOWERS, AUTO):
        raise ConfigError(f"unknown user tower {tower!r}; choose one of {', '.join((*TOWERS, AUTO))}")
    text_config = text_config or TextTrainConfig()
    if text_config.train_prior_beta > 0 and not (tower in ("text", AUTO) and text_config.popularity_prior):
        # The prior only exists in the text tower's index; training with it for a tower that is
        # served without it would optimise a score nobody computes (run.json records the 0).
        text_config = replace(text_config, train_prior_beta=0.0)
    if text_config.threads:
        torch.set_num_threads(text_config.threads)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    view = CatalogView.build(dataset, split)
    valid_users, valid_hist = view.sequences(split.history("valid"))
    test_users, test_hist = view.sequences(split.history("test"))
    valid_targets, test_targets = _targets(split.targets("valid")), _targets(split.targets("test"))
    valid_counts = split.history("valid").group_by("item_id").agg(pl.len().alias("count"))
    test_counts = split.history("test").group_by("item_id").agg(pl.len().alias("count"))

    started = time.perf_counter()
    encoder = TextEncoder.from_pretrained(
        base_model, max_length=max(text_config.history_tokens, text_config.item_tokens + 2), device="cpu"
    )
    trainer = TextTowerTrainer(encoder, view.texts, text_config)

    def evaluate_text(current: TextTowerTrainer) -> float:
        items = current.item_vectors(progress=progress)
        users = current.user_vectors(valid_hist, progress=progress)
        if current.train_prior is not None:  # early stopping sees what training optimises
            items, users = item_side(items, current.train_prior), user_side(users)
        metrics, _ = _evaluate_vectors(view, valid_users, valid_hist, users, items, valid_targets, None, k=10)
        return metrics["ndcg@10"]

    def evaluate_pooled(current: TextTowerTrainer) -> float:
        items = current.item_vectors(progress=progress)
        users = pooled_user_vectors(valid_hist, items)
        metrics, _ = _evaluate_vectors(view, valid_users, valid_hist, users, items, valid_targets, None, k=10)
        return metrics["ndcg@10"]

    # The sequence tower is trained afterwards on the tuned item vectors; the text stage is
    # early-stopped on the text tower's own validation score, the signal it optimises.
    # auto: the text tower, the one it may serve; a frozen encoder under the sequence tower is only
    # scored for the record, and the pooled score needs no pass of the histories through MiniLM.
    cheap = tower == "pooled" or (tower == "sequence" and text_config.method == "frozen")
    evaluate = evaluate_pooled if cheap else evaluate_text
    seqs = Sequences(valid_users, valid_hist)
    pool = None
    if text_config.hard_negatives and text_config.method != "frozen":
        # Mined once from the model as it starts (LoRA starts as the frozen model), over training items.
        trained_items = np.unique(np.concatenate(valid_hist)) if valid_hist else None
        pool = trainer.mine_hard_negatives(candidates=trained_items, progress=progress)
    text_report = trainer.fit(
        seqs, evaluate, checkpoint=out / "checkpoint" / "text_stage.pt", progress=progress, hard_negative_pool=pool
    )
    timings["text_stage_s"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    item_vectors = trainer.item_vectors(progress=progress)
    np.save(out / "item_vectors.npy", item_vectors)
    pl.DataFrame({"item_id": view.item_ids, "text": view.texts}).write_parquet(out / "items.parquet")
    timings["encode_items_s"] = round(time.perf_counter() - started, 1)
    save_adapter(encoder, out / "encoder")

    (out / PRIOR_FILE).unlink(missing_ok=True)  # only a text run of this call may leave one
    candidates = AUTO_TOWERS if tower == AUTO else (tower,)
    towers: dict[str, TowerVectors] = {}
    for name in candidates:
        started = time.perf_counter()
        if name == "sequence":
            towers[name] = _train_sequence(
                view,
                item_vectors,
                split,
                valid_users,
                test_users,
                sequence_config or SequenceConfig(),
                sequence_train_config or SequenceTrainConfig(),
                out,
                progress,
            )
        elif name == "text":
            towers[name] = _text_tower(
                trainer,
                view,
                split,
                item_vectors,
                valid_users,
                valid_hist,
                test_hist,
                valid_targets,
                out,
                text_config.popularity_prior,
                progress,
            )
        else:
            towers[name] = TowerVectors(
                pooled_user_vectors(valid_hist, item_vectors),
                item_vectors,
                pooled_user_vectors(test_hist, item_vectors),
                item_vectors,
            )
        vectors = towers[name]
        vectors.valid_metrics, _ = _evaluate_vectors(
            view,
            valid_users,
            valid_hist,
            vectors.valid_users,
            vectors.valid_items,
            valid_targets,
            valid_counts,
            rankable=vectors.valid_rankable,
        )
        timings[f"{name}_tower_s"] = round(time.perf_counter() - started, 1)
    tower_choice: dict[str, Any] = {}
    if tower == AUTO:
        scores = {name: round(float(t.valid_metrics["ndcg@10"]), 5) for name, t in towers.items()}
        tower = max(scores, key=lambda name: scores[name])
        tower_choice = {
            "valid_ndcg10": scores,
            "chosen": tower,
            "rule": "the user tower with the higher validation NDCG@10",
        }
        if tower != "text":
            (out / PRIOR_FILE).unlink(missing_ok=True)  # the prior belongs to the text tower's index
    chosen = towers[tower]
    chosen.report["query_check"] = _query_check(dataset, view, encoder, text_config.item_tokens, tower, chosen)
    valid_metrics = chosen.valid_metrics
    test_metrics, topk = _evaluate_vectors(
        view,
        test_users,
        test_hist,
        chosen.test_users,
        chosen.test_items,
        test_targets,
        test_counts,
        rankable=chosen.test_rankable,
    )
    topk.select("user_id", "item_id", "rank").write_parquet(out / "topk_test.parquet")
    run = EncoderRun(
        out,
        tower,
        text_config.method,
        valid_metrics,
        test_metrics,
        timings,
        text_report=text_report.__dict__,
        sequence_report=towers["sequence"].report if "sequence" in towers else {},
        prior_report=towers["text"].report if "text" in towers else {},
        tower_choice=tower_choice,
    )
    (out / "run.json").write_text(
        json.dumps(
            {**run.summary(), "text_config": text_config.to_dict(), "base_model": encoder.base_model},
            indent=2,
            default=str,
        )
    )
    return run


def _text_tower(
    trainer: TextTowerTrainer,
    view: CatalogView,
    split: Split,
    item_vectors: np.ndarray,
    valid_users: list[str],
    valid_hist: list[np.ndarray],
    test_hist: list[np.ndarray],
    valid_targets: pl.DataFrame,
    out: Path,
    popularity_prior: bool,
    progress: bool,
) -> TowerVectors:
    """The text user tower's vectors, with the popularity prior chosen on validation when enabled."""
    valid_users_vec = trainer.user_vectors(valid_hist, progress=progress)
    test_users_vec = trainer.user_vectors(test_hist, progress=progress)
    if not popularity_prior:
        return TowerVectors(valid_users_vec, item_vectors, test_users_vec, item_vectors)
    prior, report = _popularity_prior(
        view, split, item_vectors, valid_users, valid_hist, valid_users_vec, valid_targets, out
    )
    if prior is None:
        return TowerVectors(valid_users_vec, item_vectors, test_users_vec, item_vectors, report)

    items = item_side(item_vectors, prior)
    return TowerVectors(user_side(valid_users_vec), items, user_side(test_users_vec), items, report)


def _query_check(
    dataset: Dataset, view: CatalogView, encoder: TextEncoder, item_tokens: int, tower: str, vectors: TowerVectors
) -> dict[str, Any]:
    """Free-text queries on the served tower (`encoders.query_check`); sets the text tower's query prior.

    Queries are 100 catalog titles; with a popularity prior the weight queries give it is chosen
    here (`query_prior`), since users' weight 1 let popularity outweigh what a query says.
    """
    if tower == "sequence" and vectors.model is not None and not vectors.model.config.uses_text:
        return {"skipped": "id-only items cannot place free text"}
    probe = catalog_probe(dataset.items, view.row_of)
    if not probe.queries:
        return {"skipped": "no item has a title to query with"}
    query_text = encode_rows(encoder, encoder.token_ids(probe.queries, max_length=item_tokens + 2))
    items = vectors.test_items
    prior = None
    if tower == "sequence" and vectors.model is not None:
        with torch.inference_mode():
            query_text = vectors.model.item_vectors(
                torch.as_tensor(query_text), torch.zeros(len(query_text), dtype=torch.long)
            ).numpy()
    elif tower == "text" and vectors.report.get("beta", 0) > 0:  # the prior is the items' last column
        items, prior = items[:, :-1], items[:, -1]
    genres = genre_sets(dataset.items)
    item_genres = None
    if genres is not None:
        by_id = dict(zip(dataset.items["item_id"].to_list(), genres, strict=True))
        item_genres = [by_id.get(item, frozenset()) for item in view.item_ids]
    report = relevance(query_text, items, prior, probe, item_genres, view.allowed)
    weight = choose_query_prior(report) if prior is not None else None
    return {
        "queries": len(probe.queries),
        "by_query_prior": {str(w): r for w, r in report.items()},
        "query_prior": weight,
    }


def _popularity_prior(
    view: CatalogView,
    split: Split,
    item_vectors: np.ndarray,
    valid_users: list[str],
    valid_hist: list[np.ndarray],
    valid_users_vec: np.ndarray,
    valid_targets: pl.DataFrame,
    out: Path,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Choose the text tower's popularity prior on the validation targets (`encoders.item_prior`).

    Returns (per-row prior, or None when beta 0 wins; report). A winning prior is written to
    `item_prior.parquet`, which the caller has already cleared of any earlier run's.
    """

    log_count = log_counts(split.history("valid")["item_id"].to_list(), view.row_of, len(view.item_ids))
    users = user_side(valid_users_vec)

    def valid_ndcg(prior: np.ndarray) -> float:
        metrics, _ = _evaluate_vectors(
            view, valid_users, valid_hist, users, item_side(item_vectors, prior), valid_targets, None, k=10
        )
        return metrics["ndcg@10"]

    beta, grid = select_beta(log_count, valid_ndcg)
    report = {"beta": beta, "valid_ndcg10_by_beta": grid}
    if beta <= 0:
        return None, report
    save_prior(out / PRIOR_FILE, view.item_ids, beta * log_count)
    return beta * log_count, report


def _train_sequence(
    view: CatalogView,
    item_vectors: np.ndarray,
    split: Split,
    valid_users: list[str],
    test_users: list[str],
    config: SequenceConfig,
    train_config: SequenceTrainConfig,
    out: Path,
    progress: bool,
) -> TowerVectors:
    """Train the sequence tower on cached item vectors (saved under `out/sequence`).

    Validation vectors come from the model early-stopped on the validation targets (trained on the
    train part); test vectors, the saved model and its item matrix from the refit on train +
    validation when `train_config.refit` is on (`encoders.sequence_training`). With a refit the
    early-stopped model, trained without each user's last `holdout_tail` items, is saved too
    (`holdout.pt`): the ranker's out-of-sample view of the tower (`EncoderBundle.ranker_training_view`).
    """
    index = {item: row + 1 for item, row in view.row_of.items()}
    text = np.vstack([np.zeros((1, item_vectors.shape[1]), np.float32), item_vectors])
    allowed = np.concatenate([[False], view.allowed])
    train_hist = histories(split.history("valid"), index)
    test_seq = histories(split.history("test"), index)
    tail = train_config.stacking_tail
    fit_hist = without_tail(train_hist, tail)
    warm = test_warm = _warm_rows(fit_hist, len(text))
    valid_target_rows = {u: index[i] for u, i in zip(split.valid["user_id"], split.valid["item_id"], strict=True)}
    model, report = train_sequence_tower(
        train_hist, valid_target_rows, text, warm, allowed, config, train_config, progress=progress, fit_hist=fit_hist
    )
    by_user_valid = dict(zip(train_hist.user_ids, range(len(train_hist.user_ids)), strict=True))
    valid_vec = user_vectors(model, train_hist, config.max_len)[[by_user_valid[u] for u in valid_users]]
    valid_matrix = item_matrix(model)[1:]
    folder = out / "sequence"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (HOLDOUT_WEIGHTS, HOLDOUT_MATRIX):
        (folder / stale).unlink(missing_ok=True)
    stacking: dict[str, Any] = {"holdout_tail": 0}
    if train_config.refit and report.best_epoch > 0:
        if tail:
            torch.save(model.state_dict(), folder / HOLDOUT_WEIGHTS)
            np.save(folder / HOLDOUT_MATRIX, valid_matrix)
            stacking = {"holdout_tail": tail, "weights": HOLDOUT_WEIGHTS}
        test_warm = _warm_rows(test_seq, len(text))
        model, report = refit_sequence_tower(test_seq, text, test_warm, config, train_config, report, progress=progress)
    by_user_test = dict(zip(test_seq.user_ids, range(len(test_seq.user_ids)), strict=True))
    test_vec = user_vectors(model, test_seq, config.max_len)[[by_user_test[u] for u in test_users]]
    test_items = item_matrix(model)[1:]
    np.save(folder / "item_matrix.npy", test_items)
    torch.save(model.state_dict(), folder / "model.pt")
    (folder / "config.json").write_text(
        json.dumps({"model": config.to_dict(), "train": train_config.to_dict(), "stacking": stacking}, indent=2)
    )
    vectors = TowerVectors(
        valid_vec, valid_matrix, test_vec, test_items, {**report.to_dict(), "stacking": stacking}, model=model
    )
    if not config.uses_text:  # id-only: an item without an id embedding has no vector to rank
        vectors.valid_rankable, vectors.test_rankable = warm[1:], test_warm[1:]
    return vectors


def _warm_rows(hist: Any, n_rows: int) -> np.ndarray:
    """Rows of items that occur in `hist`: the ones that get an id embedding."""
    warm = np.zeros(n_rows, dtype=bool)
    seen = [s for s in hist.items if len(s)]
    if seen:
        warm[np.unique(np.concatenate(seen))] = True
    warm[0] = False
    return warm
