"""LambdaRank training: labelled queries -> candidates -> features -> a LightGBM booster.

Why the training queries look the way they do: the retriever was fine-tuned on the training part
of every user's sequence, so its scores on those very targets are optimistic. The validation
targets are out of sample for it, but there is one per user (~600 on MovieLens): too few to learn
from alone. So the ranker learns from the last `extra_cuts` training targets of each user (history
= everything before it, features at its time t) and is early-stopped on the validation targets,
whose score distribution is the one the test and the service see. Groups without the target among
their candidates carry no ranking signal and are left out of training (they still count as misses
in every reported metric).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ranking.candidates import CandidateConfig, Candidates, ItemVectors, Query, generate
from ranking.context import BehaviorContext
from ranking.ensemble import average_boosters
from ranking.features import CATEGORICAL, FEATURE_NAMES, compute
from recsys.errors import ConfigError, DataError
from recsys.progress import track

if TYPE_CHECKING:
    import lightgbm as lgb


@dataclass
class RankerConfig:
    """LightGBM and candidate settings; stored with the model so serving rebuilds the same candidates."""

    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    learning_rate: float = 0.03
    num_leaves: int = 15
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambdarank_truncation_level: int = 30
    max_rounds: int = 2000
    early_stopping_rounds: int = 100
    extra_cuts: int = 8
    graded: bool = True
    covisit_window: int = 20
    # Give the ranker the items' text vectors (`ranking.content`): text candidates and similarities.
    item_content: bool = True
    # Boosters trained with seeds seed, seed + 1, ... and averaged into one (`ranking.ensemble`); 5 over
    # 1 on validation NDCG@10, ml-latest-small: 0.0992 vs 0.0931 / 0.0965 (seeds 0 / 1), BENCHMARKS.md.
    bagging_seeds: int = 5
    seed: int = 0
    threads: int = 0

    def check(self) -> None:
        self.candidates.check()
        if not 0 < self.learning_rate <= 1:
            raise ConfigError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if self.num_leaves < 2 or self.min_data_in_leaf < 1 or self.max_rounds < 1:
            raise ConfigError("num_leaves >= 2, min_data_in_leaf >= 1 and max_rounds >= 1 are required")
        if self.bagging_seeds < 1:
            raise ConfigError(f"bagging_seeds must be >= 1, got {self.bagging_seeds}")
        if self.extra_cuts < 1:
            raise ConfigError(f"extra_cuts must be >= 1 (the ranker needs training queries), got {self.extra_cuts}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RankerConfig:
        values = dict(values)
        candidates = CandidateConfig.from_dict(values.pop("candidates", None))
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(candidates=candidates, **known)

    def lightgbm_params(self) -> dict[str, Any]:
        return {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [10],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1,
            "lambdarank_truncation_level": self.lambdarank_truncation_level,
            "label_gain": [0, 1, 3],
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.threads,
            "verbose": -1,
        }


@dataclass
class LabeledQueries:
    """Queries with their held-out target item row and graded label (1, or 2 for a strong signal)."""

    queries: list[Query]
    targets: np.ndarray
    labels: np.ndarray
    user_ids: list[str]

    def __len__(self) -> int:
        return len(self.queries)


@dataclass
class FeatureSet:
    """Candidates, their feature matrix and labels for a set of labelled queries."""

    candidates: Candidates
    features: np.ndarray
    labels: np.ndarray

    def groups_with_target(self) -> np.ndarray:
        """Query indices whose candidates contain the target."""
        return np.unique(self.candidates.query[self.labels > 0])

    def restricted(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features, labels, group sizes) of the given queries, rows grouped by query."""
        keep = np.isin(self.candidates.query, queries)
        q = self.candidates.query[keep]
        order = np.argsort(q, kind="stable")
        sizes = np.bincount(q[order])[np.unique(q[order])]
        return self.features[keep][order], self.labels[keep][order], sizes


def featurize(
    context: BehaviorContext,
    labeled: LabeledQueries,
    config: RankerConfig,
    item_vectors: ItemVectors | None,
    desc: str = "candidates + features",
    chunk: int = 256,
    progress: bool = True,
) -> FeatureSet:
    """Candidates + features for all queries, in chunks (bounded memory, a progress bar)."""
    parts_c: list[Candidates] = []
    parts_x: list[np.ndarray] = []
    parts_y: list[np.ndarray] = []
    starts = range(0, len(labeled), chunk)
    for start in track(starts, desc, total=len(starts), enabled=progress):
        queries = labeled.queries[start : start + chunk]
        cands = generate(context, queries, config.candidates, item_vectors)
        x = compute(context, queries, cands, item_vectors)
        target = labeled.targets[start : start + chunk][cands.query]
        y = np.where(cands.item == target, labeled.labels[start : start + chunk][cands.query], 0)
        cands.query = cands.query + start
        parts_c.append(cands)
        parts_x.append(x)
        parts_y.append(y.astype(np.int32))
    candidates = Candidates(
        *(
            np.concatenate([getattr(c, name) for c in parts_c])
            for name in ("query", "item", "source", "interest", "retrieval_rank")
        )
    )
    return FeatureSet(
        candidates,
        np.concatenate(parts_x) if parts_x else np.zeros((0, len(FEATURE_NAMES))),
        np.concatenate(parts_y) if parts_y else np.zeros(0, np.int32),
    )


def train_booster(train: FeatureSet, valid: FeatureSet, config: RankerConfig) -> tuple[lgb.Booster, dict[str, Any]]:
    """LambdaRank on the train queries that contain their target, early-stopped on the valid ones.

    With `bagging_seeds` > 1, one booster per seed, each early-stopped on its own, averaged into
    one (`ranking.ensemble`); the report's top-level figures are the first member's.
    """
    import lightgbm as lgb

    config.check()
    train_groups, valid_groups = train.groups_with_target(), valid.groups_with_target()
    if len(train_groups) < 2 or len(valid_groups) < 1:
        raise DataError(
            f"too few queries with the target among their candidates to train a ranker "
            f"({len(train_groups)} train, {len(valid_groups)} valid): more data or more candidates"
        )
    x, y, sizes = train.restricted(train_groups)
    xv, yv, sizes_v = valid.restricted(valid_groups)
    train_set = lgb.Dataset(
        x, y, group=sizes, feature_name=FEATURE_NAMES, categorical_feature=CATEGORICAL, free_raw_data=False
    )
    valid_set = lgb.Dataset(xv, yv, group=sizes_v, reference=train_set)
    members, curves = [], []
    for member in range(config.bagging_seeds):
        curve: dict[str, Any] = {}
        members.append(
            lgb.train(
                {**config.lightgbm_params(), "seed": config.seed + member},
                train_set,
                num_boost_round=config.max_rounds,
                valid_sets=[valid_set],
                valid_names=["valid"],
                callbacks=[
                    lgb.early_stopping(config.early_stopping_rounds, verbose=False),
                    lgb.record_evaluation(curve),
                ],
            )
        )
        curves.append([float(v) for v in curve.get("valid", {}).get("ndcg@10", [])])
    report = {
        "train_queries": len(train_groups),
        "valid_queries": len(valid_groups),
        "train_rows": len(y),
        "best_iteration": int(members[0].best_iteration),
        "best_valid_ndcg10_in_candidates": float(members[0].best_score["valid"]["ndcg@10"]),
        "valid_curve": curves[0],
    }
    if len(members) > 1:
        report["members"] = [
            {
                "seed": config.seed + i,
                "best_iteration": int(m.best_iteration),
                "best_valid_ndcg10_in_candidates": float(m.best_score["valid"]["ndcg@10"]),
            }
            for i, m in enumerate(members)
        ]
    return average_boosters(members), report


def top_k(scores: np.ndarray, candidates: Candidates, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query (in order 0..max), its top-k item rows and scores; ties broken by item row."""
    out: list[tuple[np.ndarray, np.ndarray]] = []
    if not len(candidates):
        return out
    order = np.lexsort((candidates.item, -scores, candidates.query))
    q_sorted = candidates.query[order]
    bounds = np.searchsorted(q_sorted, np.arange(int(candidates.query.max()) + 2))
    for qi in range(int(candidates.query.max()) + 1):
        rows = order[bounds[qi] : bounds[qi + 1]][:k]
        out.append((candidates.item[rows], scores[rows]))
    return out
