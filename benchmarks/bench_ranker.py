"""Ranker speed: one online request (candidates + features + LightGBM) and training on 1M rows.

Part 1 (`--run DIR`, a `recsys train-ranker` output on ml-latest-small): for real test users, time
`RankerModel.rank` on one request with the 200 retrieved candidates (plus its co-visitation and
popular fallbacks), p50/p99 over `--requests` requests, with and without explanations; baseline in
the same process: the exact FAISS search (IndexFlatIP) that produced those 200 candidates.

Part 2 (`--train-rows N`): a synthetic log (`recsys.data.synthetic`) with random unit item vectors as
the retriever (the timing does not depend on their quality), queries built and featurised by the
real code until N candidate rows exist, then LambdaRank training for a fixed number of rounds; the
baseline is LightGBM's pointwise binary objective on the same rows and rounds.

    python benchmarks/bench_ranker.py --run /tmp/mlw/ranker --data /tmp/mlw/data --train-rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import faiss
import lightgbm as lgb
import numpy as np

from ranking.candidates import CandidateConfig, Query
from ranking.context import BehaviorContext
from ranking.model import RankerModel
from ranking.protocol import RankRequest
from ranking.training import FeatureSet, LabeledQueries, RankerConfig, featurize
from recsys.data.dataset import Dataset
from recsys.data.synthetic import generate


def _percentiles(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def bench_request(run: Path, data: Path, requests: int) -> dict:
    dataset = Dataset.load(data)
    started = time.perf_counter()
    context = BehaviorContext.build(dataset, covisit_window=20)
    context_s = time.perf_counter() - started
    model = RankerModel.load(run / "ranker", context)
    if model.item_content:  # as the service attaches it (`with_content`)
        context.with_content(np.load(run / "item_text_vectors.npy"))
    vectors = np.load(run / "item_vectors.npy").astype(np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    users = [u for u in context.user_events if len(context.user_events[u][0]) >= 5][:requests]
    search_t, rank_t, explain_t, sizes = [], [], [], []
    rng = np.random.default_rng(0)
    for user in users:
        rows, seconds = context.history_of(user)
        user_vector = vectors[rows[-10:]].mean(axis=0)
        user_vector += rng.normal(0, 0.01, user_vector.shape).astype(np.float32)
        started = time.perf_counter()
        scores, found = index.search(user_vector[None, :], 200 + len(rows))
        search_t.append(time.perf_counter() - started)
        seen = set(rows.tolist())
        keep = [(int(i), float(s)) for i, s in zip(found[0], scores[0], strict=True) if int(i) not in seen][:200]
        request = RankRequest(
            history=[context.item_ids[r] for r in rows.tolist()],
            history_ts=[context.datetime_of(s) for s in seconds.tolist()],
            candidates=[context.item_ids[i] for i, _ in keep],
            interest=[s for _, s in keep],
            k=20,
            exclude=frozenset(context.item_ids[r] for r in seen),
            user_vector=user_vector.tolist(),
            item_vectors=lambda ids: vectors[context.rows(ids)],
        )
        started = time.perf_counter()
        result = model.rank(request)
        rank_t.append(time.perf_counter() - started)
        started = time.perf_counter()
        model.rank(request, explain=True)
        explain_t.append(time.perf_counter() - started)
        sizes.append(len(result.item_ids))
    rank, search = _percentiles(rank_t), _percentiles(search_t)
    return {
        "requests": len(users),
        "context_build_s": round(context_s, 2),
        "rank": rank,
        "rank_explain": _percentiles(explain_t),
        "faiss_exact_search_200": search,
        "ratio_rank_over_search_p50": round(rank["p50_ms"] / max(search["p50_ms"], 1e-6), 1),
    }


def bench_training(rows_wanted: int, rounds: int) -> dict:
    per_query = 300
    n_queries = rows_wanted // per_query + 1
    started = time.perf_counter()
    dataset = generate(
        n_interactions=max(200_000, n_queries * 12), n_users=n_queries, n_items=20_000, seed=1, n_impressions_requests=0
    )
    synth_s = time.perf_counter() - started
    started = time.perf_counter()
    context = BehaviorContext.build(dataset, covisit_window=20)
    context_s = time.perf_counter() - started
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(context.item_ids), 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    config = RankerConfig(candidates=CandidateConfig(retrieval_k=200, covisit_k=100, popular_k=50), threads=0)
    queries, targets, users = [], [], []
    for user, (rows, seconds) in context.user_events.items():
        if len(rows) < 4:
            continue
        history = rows[:-1]
        user_vector = vectors[history[-10:]].mean(axis=0)
        scores = vectors @ user_vector
        scores[history] = -np.inf
        top = np.argpartition(-scores, 200)[:200]
        top = top[np.argsort(-scores[top])]
        queries.append(
            Query(
                history=history,
                t=int(seconds[-1]),
                retrieved=top,
                interest=scores[top],
                history_seconds=seconds[:-1],
                user_vector=user_vector,
            )
        )
        targets.append(int(rows[-1]))
        users.append(user)
        if len(queries) >= n_queries:
            break
    labeled = LabeledQueries(queries, np.asarray(targets), np.ones(len(targets), np.int64), users)
    started = time.perf_counter()
    features: FeatureSet = featurize(context, labeled, config, lambda r: vectors[r], progress=True)
    featurize_s = time.perf_counter() - started
    groups = np.bincount(features.candidates.query)
    groups = groups[groups > 0]
    params = config.lightgbm_params()
    params.pop("eval_at")
    params.update(metric="none")
    started = time.perf_counter()
    train_set = lgb.Dataset(features.features, features.labels, group=groups)
    lgb.train(params, train_set, num_boost_round=rounds)
    lambdarank_s = time.perf_counter() - started
    started = time.perf_counter()
    binary = {**params, "objective": "binary"}
    binary.pop("lambdarank_truncation_level")
    binary.pop("label_gain")
    lgb.train(binary, lgb.Dataset(features.features, (features.labels > 0).astype(int)), num_boost_round=rounds)
    binary_s = time.perf_counter() - started
    return {
        "rows": len(features.labels),
        "queries": len(queries),
        "interactions": dataset.interactions.height,
        "synthesize_s": round(synth_s, 1),
        "context_s": round(context_s, 1),
        "featurize_s": round(featurize_s, 1),
        "featurize_rows_per_s": round(len(features.labels) / featurize_s),
        "rounds": rounds,
        "lambdarank_train_s": round(lambdarank_s, 1),
        "binary_train_s": round(binary_s, 1),
        "ratio_lambdarank_over_binary": round(lambdarank_s / binary_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="train-ranker output folder (part 1)")
    parser.add_argument("--data", type=Path, help="its dataset folder")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--train-rows", type=int, default=0, help="part 2: candidate rows to train on")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
    }
    if args.run:
        result["request"] = bench_request(args.run, args.data, args.requests)
        print(json.dumps(result["request"], indent=1))
    if args.train_rows:
        result["training"] = bench_training(args.train_rows, args.rounds)
        print(json.dumps(result["training"], indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
