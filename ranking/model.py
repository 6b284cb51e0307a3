"""`RankerModel`: a trained booster plus what it needs to score a request exactly like in training.

A ranker folder holds `model.txt` (LightGBM's native text format: no pickle) and `ranker.json`
(feature list, candidate settings, the category vocabulary, the encoder version whose interest
scores it learned, metrics). Loading it against a `BehaviorContext` gives an object that satisfies
`ranking.protocol.CandidateRanker`: the facade hands it FAISS results, it adds fallback candidates,
computes the features with `ranking.features.compute` (the training code) and returns the order,
with per-item feature contributions (`pred_contrib`) and the history item that best explains each
recommendation when asked.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lightgbm as lgb
import numpy as np

from ranking.candidates import SOURCES, CandidateConfig, Candidates, ItemVectors, Query, generate
from ranking.context import BehaviorContext
from ranking.features import FEATURE_NAMES, RECENT, compute
from ranking.protocol import RankRequest, RankResult
from recsys.errors import ConfigError, DataError

MODEL_FILE = "model.txt"
META_FILE = "ranker.json"
FORMAT_VERSION = 1
TOP_CONTRIBUTIONS = 5


def save_ranker(folder: str | Path, booster: lgb.Booster, meta: dict[str, Any]) -> Path:
    """Write `model.txt` + `ranker.json` (meta must carry config, categories, encoder_version)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(folder / MODEL_FILE), num_iteration=booster.best_iteration or None)
    record = {"format_version": FORMAT_VERSION, "features": FEATURE_NAMES, **meta}
    (folder / META_FILE).write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    return folder


def read_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: not found; a ranker folder holds {MODEL_FILE} and {META_FILE}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"unreadable ranker metadata: {exc}", file=str(path)) from exc
    if meta.get("features") != FEATURE_NAMES:
        raise ConfigError(
            f"{path}: trained with features {meta.get('features')}, this code computes "
            f"{FEATURE_NAMES}; retrain the ranker with this version"
        )
    return meta


@dataclass
class RankerModel:
    """A loaded ranker bound to a behavior context (see module doc)."""

    booster: lgb.Booster
    meta: dict[str, Any]
    context: BehaviorContext
    version: str
    encoder_version: str | None
    feature_names: list[str]
    candidate_config: CandidateConfig
    _category_map: np.ndarray | None = None

    @classmethod
    def load(cls, folder: str | Path, context: BehaviorContext, version: str | None = None) -> RankerModel:
        folder = Path(folder)
        meta = read_meta(folder)
        model_file = folder / MODEL_FILE
        if not model_file.is_file():
            raise ConfigError(f"{model_file}: not found")
        booster = lgb.Booster(model_file=str(model_file))
        if version is None:
            digest = hashlib.sha256(model_file.read_bytes() + (folder / META_FILE).read_bytes()).hexdigest()
            version = f"local:{digest[:12]}"
        model = cls(
            booster,
            meta,
            context,
            version,
            meta.get("encoder_version"),
            list(FEATURE_NAMES),
            CandidateConfig.from_dict((meta.get("config") or {}).get("candidates")),
        )
        model._category_map = category_map(meta.get("categories") or [], context.categories)
        return model

    @property
    def item_content(self) -> bool:
        """Whether it was trained with item text vectors in its context (`ranking.content`): then
        whoever serves it must attach the same ones (`recsys.serving.models.with_content`)."""
        return bool((self.meta.get("config") or {}).get("item_content"))

    @property
    def item_ids(self) -> list[str]:
        """Item ids in row order: the order `RankRequest.item_matrix` must follow."""
        return self.context.item_ids

    # ------------------------------------------------------------------------------ scoring
    def score(
        self, queries: list[Query], item_vectors: ItemVectors | None = None
    ) -> tuple[Candidates, np.ndarray, np.ndarray]:
        """(candidates, feature matrix, scores) for queries: the path both evaluation and serving take."""
        candidates = generate(self.context, queries, self.candidate_config, item_vectors)
        features = compute(self.context, queries, candidates, item_vectors)
        remap_categories(features, self._category_map)
        # One request: a single thread is ~3x faster than OpenMP's fan-out for a few hundred rows.
        threads: dict[str, Any] = {"num_threads": 1} if len(queries) == 1 else {}
        scores = self.booster.predict(features, **threads) if len(candidates) else np.zeros(0)
        return candidates, features, np.asarray(scores, dtype=np.float64)

    def rank(self, request: RankRequest, *, explain: bool = False) -> RankResult:
        """`CandidateRanker.rank`: one request from the facade (ids in, ids out)."""
        context = self.context
        history = context.rows(request.history)
        seconds = None
        t = context.seconds_of(request.now)
        if request.history_ts is not None:
            known = [i for i, item in enumerate(request.history) if item in context.row_of]
            stamps = [context.seconds_of(request.history_ts[i]) for i in known]
            # Events at or after t (real-time events newer than this ranker's snapshot, whose clock
            # serves at `as_of`) count as just before t: the user was active now. In training every
            # history event is before t, so this changes nothing there (train/serve parity).
            seconds = np.minimum(np.asarray(stamps, dtype=np.int64), t - 1)
        retrieved_ids = [i for i in request.candidates if i in context.row_of]
        interest = [s for i, s in zip(request.candidates, request.interest, strict=True) if i in context.row_of]
        allowed = None
        if request.allowed is not None:
            allowed = np.zeros(len(context.item_ids), dtype=bool)
            allowed[context.rows(list(request.allowed))] = True
        vectors: ItemVectors | None
        if request.item_matrix is not None:
            matrix = request.item_matrix

            def vectors(rows: np.ndarray) -> np.ndarray:
                return matrix[rows]
        else:
            vectors = _request_vectors(request, context)
        query = Query(
            history=history,
            t=t,
            retrieved=context.rows(retrieved_ids),
            interest=np.asarray(interest, dtype=np.float64),
            history_seconds=seconds,
            exclude=context.rows(list(request.exclude)),
            allowed=allowed,
            user_vector=None if request.user_vector is None else np.asarray(request.user_vector, dtype=np.float32),
        )
        candidates, features, scores = self.score([query], vectors)
        order = np.lexsort((candidates.item, -scores))[: request.k]
        items = candidates.item[order]
        result = RankResult(
            item_ids=[context.item_ids[r] for r in items.tolist()],
            scores=[float(s) for s in scores[order]],
            sources=[SOURCES[s] for s in candidates.source[order].tolist()],
        )
        if explain:
            result.explanations = self.explain(query, candidates, features, order, vectors)
        return result

    def explain(
        self,
        query: Query,
        candidates: Candidates,
        features: np.ndarray,
        rows: np.ndarray,
        item_vectors: ItemVectors | None = None,
    ) -> list[dict[str, Any]]:
        """Top feature contributions (SHAP values from `pred_contrib`) and the best-explaining history item."""
        if not len(rows):
            return []
        # dense features in, so a dense [rows, features + 1] array out (not the sparse or list forms)
        contrib = cast(np.ndarray, self.booster.predict(features[rows], pred_contrib=True, num_threads=1))
        because = self._because_of(query, candidates.item[rows], item_vectors)
        out = []
        for i in range(len(rows)):
            values = contrib[i, :-1]
            top = np.argsort(-np.abs(values))[:TOP_CONTRIBUTIONS]
            out.append(
                {
                    "contributions": {self.feature_names[j]: round(float(values[j]), 5) for j in top},
                    "bias": round(float(contrib[i, -1]), 5),
                    "because_of": because[i],
                }
            )
        return out

    def _because_of(self, query: Query, items: np.ndarray, item_vectors: ItemVectors | None) -> list[str | None]:
        """The recent history item most co-visited with each item (else the most similar one)."""
        recent = np.asarray(query.history, dtype=np.int64)[::-1][:RECENT]
        if not len(recent):
            return [None] * len(items)
        a = np.repeat(recent, len(items))
        b = np.tile(items, len(recent))
        strength = self.context.covisit.strength(a, b, np.full(len(a), query.t)).reshape(len(recent), len(items))
        best = strength.argmax(axis=0)
        has_link = strength.max(axis=0) > 0
        if item_vectors is not None and not has_link.all():
            similarity = item_vectors(recent) @ item_vectors(items).T
            best = np.where(has_link, best, similarity.argmax(axis=0))
            has_link[:] = True
        return [
            self.context.item_ids[recent[j]] if ok else None
            for j, ok in zip(best.tolist(), has_link.tolist(), strict=True)
        ]


def category_map(trained: list[str], current: list[str]) -> np.ndarray:
    """Current category code -> the code the booster was trained with (-1: unseen category)."""
    position = {name: i for i, name in enumerate(trained)}
    return np.asarray([position.get(name, -1) for name in current], dtype=np.int64)


def remap_categories(features: np.ndarray, mapping: np.ndarray | None) -> None:
    """Rewrite the `category` column in place into the training vocabulary (NaN when unseen)."""
    if mapping is None or not len(features):
        return
    column = FEATURE_NAMES.index("category")
    values = features[:, column]
    known = ~np.isnan(values)
    mapped = np.full(len(values), np.nan)
    codes = mapping[values[known].astype(np.int64)]
    mapped[known] = np.where(codes >= 0, codes, np.nan)
    features[:, column] = mapped


def _request_vectors(request: RankRequest, context: BehaviorContext) -> ItemVectors | None:
    lookup = request.item_vectors
    if lookup is None:
        return None

    def by_rows(rows: np.ndarray) -> np.ndarray:
        return np.asarray(lookup([context.item_ids[r] for r in np.asarray(rows).tolist()]), dtype=np.float32)

    return by_rows
