"""`recsys train-ranker`: candidates from the encoder + fallbacks, point-in-time features, LambdaRank.

Flow on a leave-last-out split (module doc of `ranking.training` says why the queries look so):
1. load the encoder (registry reference or local folder) and put every item into its retrieval space
   (cached in the output folder per encoder version, so a rerun skips it);
2. index the whole interaction log in a `BehaviorContext` (every lookup is bounded by the query's
   time, so using the whole log leaks nothing);
3. build three query sets, each user's history being everything before the target:
   train = the last `extra_cuts` targets of the training part; valid = the validation target;
   test = the test target (history = train + valid, as the protocol says);
4. encode each query's history with the encoder's user tower and retrieve its top `retrieval_k`
   from the catalog (seen items excluded);
5. candidates + features (`ranking.features`), LambdaRank early-stopped on valid;
6. score the test queries: top-50 lists of the ranker and of the encoder alone (its retrieval
   order), both written as parquet (`user_id, item_id, rank`) and evaluated over every test user.

Output folder: `ranker/` (model.txt + ranker.json), `run.json` (metrics, timings, report),
`topk_test.parquet`, `topk_test_encoder.parquet`, `importance.png`, the retrieval vectors the
queries saw (`item_vectors.npy`, and `item_vectors_holdout.npy` when stacking), and the items' text
vectors (`item_text_vectors.npy`: a cache per encoder version, and the ranker's item content).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from recsys.data.order import chronological
from recsys.errors import DataError

if TYPE_CHECKING:
    import polars as pl

    from encoders.registry import LoadedEncoder
    from ranking.candidates import ItemVectors
    from ranking.context import BehaviorContext
    from ranking.training import LabeledQueries, RankerConfig
    from recsys.data.dataset import Dataset
    from recsys.splits import Split, Stage

TOP_K = 50
USER_BATCH = 512


@dataclass
class RankerRun:
    folder: Path
    test: dict[str, float]
    test_encoder: dict[str, float]
    valid: dict[str, float]
    report: dict[str, Any]
    timings: dict[str, float]

    def summary_line(self) -> str:
        return (
            f"ranker test NDCG@10 {self.test['ndcg@10']:.4f} (encoder alone {self.test_encoder['ndcg@10']:.4f}), "
            f"HR@10 {self.test['hr@10']:.4f}, HR@50 {self.test['hr@50']:.4f}; "
            f"{self.report['train_queries']} training queries, best iteration {self.report['best_iteration']}, "
            f"{sum(self.timings.values()):.0f} s"
        )


def catalog_texts(dataset: Dataset, item_ids: list[str]) -> list[str]:
    """Each item's rendered text, in `item_ids` order (the context's rows)."""
    text = dataset.item_text()
    text_of = dict(zip(text["item_id"].to_list(), text["text"].to_list(), strict=True))
    return [text_of[i] for i in item_ids]


def item_text_vectors(loaded: LoadedEncoder, texts: list[str], out: Path | None) -> np.ndarray:
    """Every item's unit text vector from the encoder's text model, cached in `out` per encoder version.

    The one encoding pass a ranker run makes: the retrieval spaces (`item_space`) and the item
    content (`ranking.content`) are both computed from it.
    """
    key = {"encoder_version": loaded.version, "items": len(texts)}
    if out is not None:
        cache, stamp = out / "item_text_vectors.npy", out / "item_text_vectors.json"
        if cache.is_file() and stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == key:
            return np.load(cache)
    vectors = np.ascontiguousarray(loaded.bundle.encode_items(texts), dtype=np.float32)
    if out is not None:
        np.save(cache, vectors)
        stamp.write_text(json.dumps(key), encoding="utf-8")
    return vectors


def item_space(
    loaded: LoadedEncoder,
    item_ids: list[str],
    texts: list[str],
    out: Path | None,
    text_vectors: np.ndarray | None = None,
) -> np.ndarray:
    """Every item's vector in the encoder's retrieval space (from `text_vectors` when given)."""
    if text_vectors is None:
        text_vectors = item_text_vectors(loaded, texts, out)
    vectors = loaded.bundle.index_vectors(item_ids, text_vectors=text_vectors)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def stage_queries(
    loaded: LoadedEncoder,
    context: BehaviorContext,
    split: Split,
    stage: str,
    vectors: np.ndarray,
    texts: list[str],
    config: RankerConfig,
    label_of: dict[tuple[str, int], int] | None = None,
    progress: bool = True,
) -> LabeledQueries:
    """A stage's queries end to end: targets, histories, user vectors, retrieval over the split's catalog.

    The one path training, evaluation and the A/B model systems (`jobs.ab_systems`) all take.
    """
    allowed = np.zeros(len(context.item_ids), dtype=bool)
    allowed[context.rows(split.catalog().to_list())] = True
    users, positions = build_queries(context, split, stage, config.extra_cuts)
    events = [context.history_of(u) for u in users]
    histories = [rows[:p] for (rows, _), p in zip(events, positions, strict=True)]
    seconds = [secs[:p] for (_, secs), p in zip(events, positions, strict=True)]
    user_vectors = encode_histories(loaded, context, histories, seconds, vectors, texts, progress)
    return labeled_queries(context, users, positions, user_vectors, vectors, allowed, config, label_of or {})


def encode_histories(
    loaded: LoadedEncoder,
    context: BehaviorContext,
    histories: list[np.ndarray],
    seconds: list[np.ndarray],
    item_vectors: np.ndarray,
    texts: list[str],
    progress: bool = True,
) -> np.ndarray:
    """User vectors of histories (item rows and seconds, oldest first): `EncoderBundle.user_vectors`.

    `pooled` reuses `item_vectors` (the context's rows) instead of encoding the texts again.
    """
    from recsys.progress import track

    bundle = loaded.bundle
    cap = bundle.history_cap  # the bundle cuts histories itself; cutting first spares converting old rows
    text_of = dict(zip(context.item_ids, texts, strict=True))

    def stored(ids: Sequence[str]) -> np.ndarray:
        return item_vectors[context.rows(ids)]

    out = np.zeros((len(histories), bundle.index_dim), dtype=np.float32)
    starts = range(0, len(histories), USER_BATCH)
    for start in track(starts, "user vectors", total=len(starts), enabled=progress):
        part = slice(start, min(len(histories), start + USER_BATCH))
        newest = [[context.item_ids[r] for r in h[::-1][:cap]] for h in histories[part]]
        stamps = [(s[::-1][:cap] + context.origin).astype(np.float64) for s in seconds[part]]
        out[part] = bundle.user_vectors(newest, stamps, texts=text_of, item_vectors=stored)
    return out


def build_queries(context: BehaviorContext, split: Split, stage: str, extra_cuts: int) -> tuple[list[str], list[int]]:
    """(users, target positions in each user's full sequence) for a stage: train | valid | test."""
    targets = split.targets("valid" if stage == "train" else cast("Stage", stage))  # Split.targets checks it
    users, positions = [], []
    for user, item in zip(targets["user_id"].to_list(), targets["item_id"].to_list(), strict=True):
        rows, _ = context.history_of(user)
        offset = 1 if stage == "test" else 2
        position = len(rows) - offset
        if position < 0 or context.item_ids[rows[position]] != item:
            raise DataError(
                f"user {user!r}: the split's {stage} target {item!r} is not at position {position} "
                "of the interaction log ordered by (ts, item_id); was the split made from this data?",
                column="item_id",
            )
        if stage == "train":
            for cut in range(1, extra_cuts + 1):
                if position - cut >= 2:  # keep at least two items of history
                    users.append(user)
                    positions.append(position - cut)
        else:
            users.append(user)
            positions.append(position)
    return users, positions


def labeled_queries(
    context: BehaviorContext,
    users: list[str],
    positions: list[int],
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    allowed: np.ndarray,
    config: RankerConfig,
    label_of: dict[tuple[str, int], int],
) -> LabeledQueries:
    """Retrieve each query's top `retrieval_k` and wrap it with its target and label."""
    from ranking.candidates import Query
    from ranking.training import LabeledQueries

    k = min(config.candidates.retrieval_k, int(allowed.sum()))
    queries, targets, labels = [], [], []
    for start in range(0, len(users), 1024):
        block = slice(start, min(len(users), start + 1024))
        scores = user_vectors[block] @ item_vectors.T
        scores[:, ~allowed] = -np.inf
        for j, (user, position) in enumerate(zip(users[block], positions[block], strict=True)):
            rows, seconds = context.history_of(user)
            history, history_seconds = rows[:position], seconds[:position]
            row_scores = scores[j]
            row_scores[history] = -np.inf
            top = np.argpartition(-row_scores, k - 1)[:k] if k else np.zeros(0, np.int64)
            top = top[np.lexsort((top, -row_scores[top]))]
            top = top[np.isfinite(row_scores[top])]
            queries.append(
                Query(
                    history=history,
                    t=int(seconds[position]),
                    retrieved=top,
                    interest=row_scores[top].astype(np.float64),
                    history_seconds=history_seconds,
                    allowed=allowed,
                    user_vector=user_vectors[start + j],
                )
            )
            targets.append(int(rows[position]))
            labels.append(label_of.get((user, position), 1))
    return LabeledQueries(queries, np.asarray(targets, np.int64), np.asarray(labels, np.int64), list(users))


def graded_labels(dataset: Dataset, graded: bool) -> tuple[dict[tuple[str, int], int], str]:
    """(user, position) -> 2 for a strong positive (weight >= the log's median), else 1; and the rule used."""
    import polars as pl

    log = dataset.interactions
    if not graded or "weight" not in log.columns or log["weight"].n_unique() < 2:
        return {}, "binary: the next interaction is the positive"
    threshold = float(cast(float, log["weight"].median()))
    ordered = chronological(log).with_columns(pl.int_range(pl.len()).over("user_id").alias("position"))
    strong = ordered.filter(pl.col("weight") >= threshold)
    label_of = {(u, p): 2 for u, p in zip(strong["user_id"].to_list(), strong["position"].to_list(), strict=True)}
    return label_of, f"graded: 2 when weight >= {threshold:g} (the log's median), else 1"


def topk_frame(users: list[str], ranked: list[tuple[np.ndarray, np.ndarray]], item_ids: list[str]) -> pl.DataFrame:
    import polars as pl

    out_u, out_i, out_r = [], [], []
    for user, (rows, _) in zip(users, ranked, strict=True):
        out_u += [user] * len(rows)
        out_i += [item_ids[r] for r in rows.tolist()]
        out_r += list(range(1, len(rows) + 1))
    return pl.DataFrame({"user_id": out_u, "item_id": out_i, "rank": pl.Series(out_r, dtype=pl.Int32)})


def train_ranker(
    dataset: Dataset,
    split: Split,
    loaded: LoadedEncoder,
    out: Path,
    config: RankerConfig | None = None,
    progress: bool = True,
) -> RankerRun:
    """Run the whole flow (module doc); returns metrics and writes the output folder."""
    import polars as pl

    from ranking.context import BehaviorContext
    from ranking.model import RankerModel, save_ranker
    from ranking.training import RankerConfig, featurize, top_k, train_booster
    from recsys.metrics import evaluate_topk, item_counts_from

    config = config or RankerConfig()
    config.check()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    context = BehaviorContext.build(dataset, covisit_window=config.covisit_window)
    timings["context_s"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    texts = catalog_texts(dataset, context.item_ids)
    text_vectors = item_text_vectors(loaded, texts, out)
    vectors = item_space(loaded, context.item_ids, texts, out, text_vectors)
    context.with_content(text_vectors if config.item_content else None)
    # Stacking: training and validation queries see the tower as it was before their targets
    # (`EncoderBundle.ranker_training_view`); test queries and the service see the served one.
    fitting = replace(loaded, bundle=loaded.bundle.ranker_training_view())
    stacking = _stacking_report(fitting, config)
    fitting_vectors = (
        vectors if fitting.bundle is loaded.bundle else item_space(fitting, context.item_ids, texts, out, text_vectors)
    )
    np.save(out / "item_vectors.npy", vectors)
    if fitting_vectors is not vectors:
        np.save(out / "item_vectors_holdout.npy", fitting_vectors)
    space = {"train": fitting_vectors, "valid": fitting_vectors, "test": vectors}
    encoder_of = {"train": fitting, "valid": fitting, "test": loaded}
    timings["item_vectors_s"] = round(time.perf_counter() - started, 1)
    label_of, label_rule = graded_labels(dataset, config.graded)

    def vectors_of(stage: str) -> ItemVectors:
        return lambda rows: space[stage][rows]

    started = time.perf_counter()
    sets = {
        stage: stage_queries(encoder_of[stage], context, split, stage, space[stage], texts, config, label_of, progress)
        for stage in ("train", "valid", "test")
    }
    timings["user_vectors_s"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    features = {
        stage: featurize(context, sets[stage], config, vectors_of(stage), desc=f"{stage} features", progress=progress)
        for stage in sets
    }
    timings["features_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    booster, report = train_booster(features["train"], features["valid"], config)
    timings["train_s"] = round(time.perf_counter() - started, 1)

    report["stacking"] = stacking
    meta = {
        "config": config.to_dict(),
        "categories": context.categories,
        "encoder_version": loaded.version,
        "encoder_ref": loaded.ref,
        "dataset": dataset.name,
        "labels": label_rule,
        "report": report,
    }
    folder = save_ranker(out / "ranker", booster, meta)
    model = RankerModel.load(folder, context)

    started = time.perf_counter()
    metrics: dict[str, dict[str, float]] = {}
    for stage in ("valid", "test"):
        labeled = sets[stage]
        candidates, _, scores = model.score(labeled.queries, vectors_of(stage))
        ranked = top_k(scores, candidates, TOP_K)
        topk = topk_frame(labeled.user_ids, ranked, context.item_ids)
        targets = split.targets(stage).select("user_id", "item_id")
        counts = item_counts_from(split.history(stage))
        metrics[stage] = evaluate_topk(topk, targets, ks=(10, 50), catalog=split.catalog(), item_counts=counts)
        if stage == "test":
            topk.write_parquet(out / "topk_test.parquet")
            encoder_lists = [(q.retrieved[:TOP_K], q.interest[:TOP_K]) for q in labeled.queries]
            encoder_topk = topk_frame(labeled.user_ids, encoder_lists, context.item_ids)
            encoder_topk.write_parquet(out / "topk_test_encoder.parquet")
            metrics["test_encoder"] = evaluate_topk(
                encoder_topk, targets, ks=(10, 50), catalog=split.catalog(), item_counts=counts
            )
    timings["evaluate_s"] = round(time.perf_counter() - started, 1)
    importance = dict(zip(booster.feature_name(), booster.feature_importance("gain").tolist(), strict=True))
    plot_importance(importance, out / "importance.png")
    run = RankerRun(out, metrics["test"], metrics["test_encoder"], metrics["valid"], report, timings)
    record = {
        "test": run.test,
        "test_encoder": run.test_encoder,
        "valid": run.valid,
        "report": report,
        "timings": timings,
        "config": config.to_dict(),
        "encoder_version": loaded.version,
        "encoder_ref": loaded.ref,
        "labels": label_rule,
        "importance_gain": importance,
        "queries": {stage: len(labeled) for stage, labeled in sets.items()},
        "candidate_recall": {
            stage: float(len(f.groups_with_target()) / max(len(sets[stage]), 1)) for stage, f in features.items()
        },
    }
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    pl.DataFrame({"feature": list(importance), "gain": list(importance.values())}).write_csv(out / "importance.csv")
    return run


def _stacking_report(fitting: LoadedEncoder, config: RankerConfig) -> dict[str, Any]:
    """Which tower the ranker's training queries saw, and how many of their cuts were out of sample."""
    tail = fitting.bundle.holdout_tail
    out_of_sample = min(config.extra_cuts, tail)
    return {
        "holdout_tail": tail,
        "out_of_sample_cuts": out_of_sample,
        "training_cuts": config.extra_cuts,
        "rule": (
            "training and validation queries scored by the holdout tower (trained without them), "
            "test queries by the served tower"
        )
        if tail
        else "no holdout tower in this encoder: training queries scored in sample",
    }


def plot_importance(importance: dict[str, float], path: Path) -> None:
    """Horizontal bar chart of gain importance (the MLflow run and the docs show it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(importance.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(ordered) + 1.2))
    ax.barh([k for k, _ in ordered], [v for _, v in ordered], color="#4c72b0")
    ax.set_xlabel("total gain")
    ax.set_title("LambdaRank feature importance")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
