"""The ranker: point-in-time lookups, leakage, train/serve parity, training, MLflow, loading, explanations.

Real parts throughout: a synthetic dataset with impressions, a tiny random-BERT encoder (frozen
text tower), a real LightGBM booster, a real SQLite MLflow store under tmp_path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from encoders.registry import resolve_encoder
from encoders.text_training import TextTrainConfig
from jobs.train_encoder import train_encoder
from jobs.train_ranker import train_ranker
from ranking.behavior import CovisitPairs, KeyedEvents
from ranking.candidates import TEXT, CandidateConfig, Query, generate
from ranking.context import BehaviorContext
from ranking.features import FEATURE_NAMES, compute
from ranking.model import RankerModel, category_map
from ranking.protocol import CandidateRanker, RankRequest
from ranking.training import RankerConfig
from recsys.config import Settings
from recsys.data.dataset import Dataset
from recsys.data.synthetic import generate as synthesize
from recsys.errors import ConfigError, DataError
from recsys.splits import leave_last_out

REPO = Path(__file__).resolve().parents[1]
SMALL = RankerConfig(
    candidates=CandidateConfig(retrieval_k=40, covisit_k=20, popular_k=10),
    min_data_in_leaf=5,
    max_rounds=60,
    early_stopping_rounds=20,
    extra_cuts=3,
    covisit_window=5,
    threads=1,
)


# ------------------------------------------------------------------------------ lookups
def test_keyed_events_match_brute_force():
    rng = np.random.default_rng(0)
    keys, seconds, weights = rng.integers(0, 7, 400), rng.integers(0, 1000, 400), rng.random(400)
    events = KeyedEvents(keys, seconds, weights)
    qk, qs, qe = rng.integers(0, 8, 300), rng.integers(0, 1000, 300), rng.integers(0, 1100, 300)
    got = events.total(qk, qe, qs)
    want = [weights[(keys == k) & (seconds >= s) & (seconds < e)].sum() for k, s, e in zip(qk, qs, qe, strict=True)]
    np.testing.assert_allclose(got, want)
    first = events.first_seconds(qk, qe)
    for k, e, f in zip(qk, qe, first, strict=True):
        before = seconds[(keys == k) & (seconds < e)]
        assert f == (before.min() if len(before) else -1)


def test_keyed_events_refuse_times_out_of_range():
    with pytest.raises(DataError, match="136-year"):
        KeyedEvents(np.array([1]), np.array([-5]))


def test_covisit_strength_and_neighbours_are_point_in_time():
    # user 0: items 1, 2, 3 at t=10, 20, 30; user 1: items 2, 1 at t=100, 200
    users = np.array([0, 0, 0, 1, 1])
    items = np.array([1, 2, 3, 2, 1])
    seconds = np.array([10, 20, 30, 100, 200])
    pairs = CovisitPairs.build(users, items, seconds, n_items=5, window=2)
    # (1, 2): distance 1 at t=20 (user 0) and at t=200 (user 1)
    assert pairs.strength(np.array([1]), np.array([2]), np.array([21]))[0] == pytest.approx(1.0)
    assert pairs.strength(np.array([1]), np.array([2]), np.array([20]))[0] == 0.0  # not strictly before
    assert pairs.strength(np.array([1]), np.array([2]), np.array([201]))[0] == pytest.approx(2.0)
    assert pairs.strength(np.array([1]), np.array([3]), np.array([31]))[0] == pytest.approx(0.5)  # distance 2
    assert pairs.strength(np.array([4]), np.array([1]), np.array([999]))[0] == 0.0  # never seen
    rows, strength = pairs.neighbours(np.array([1]), 25)
    assert rows.tolist() == [2] and strength.tolist() == pytest.approx([1.0])
    rows, strength = pairs.neighbours(np.array([1, 3]), 999, weights=np.array([1.0, 0.5]))
    # from 1: 2 (2.0), 3 (0.5); from 3 (x0.5): 2 (0.5 * 1.0), 1 (0.5 * 0.5)
    assert rows.tolist() == [2, 3, 1] and strength.tolist() == pytest.approx([2.5, 0.5, 0.25])
    forward = CovisitPairs.build(users, items, seconds, n_items=5, window=2, directed=True)
    assert forward.strength(np.array([1]), np.array([2]), np.array([999]))[0] == pytest.approx(1.0)  # 1 -> 2 once
    assert forward.strength(np.array([2]), np.array([1]), np.array([999]))[0] == pytest.approx(1.0)  # 2 -> 1 once
    with pytest.raises(ConfigError):
        CovisitPairs.build(users, items, seconds, n_items=5, window=0)


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert):
    """Synthetic data with impressions, its split, and a frozen tiny-BERT text encoder."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ranking")
    dataset = synthesize(n_interactions=4000, n_users=90, n_items=160, seed=5)
    dataset.save(root / "data")
    split = leave_last_out(dataset.interactions)
    split.save(root / "split")
    config = TextTrainConfig(
        method="frozen", max_steps=1, batch_size=8, eval_every=1, history_tokens=48, item_tokens=16, threads=1
    )
    train_encoder(
        dataset, split, root / "encoder", tower="text", base_model=tiny_bert, text_config=config, progress=False
    )
    loaded = resolve_encoder(root / "encoder", device="cpu")
    run = train_ranker(dataset, split, loaded, root / "ranker-run", SMALL, progress=False)
    return {"root": root, "dataset": dataset, "split": split, "loaded": loaded, "run": run}


def _query(context: BehaviorContext, user: str, position: int, vectors: np.ndarray) -> Query:
    rows, seconds = context.history_of(user)
    history = rows[:position]
    user_vector = vectors[history[-5:]].mean(axis=0)
    scores = vectors @ user_vector
    scores[history] = -np.inf
    top = np.argsort(-scores, kind="stable")[:30]
    return Query(
        history=history,
        t=int(seconds[position]),
        retrieved=top,
        interest=scores[top],
        history_seconds=seconds[:position],
        user_vector=user_vector,
    )


def features_of(model: RankerModel, query: Query, vectors) -> np.ndarray:
    """The text-similarity columns of a query's candidates (ranking.content)."""
    _, features, _ = model.score([query], vectors)
    return features[:, [FEATURE_NAMES.index("text_sim_last"), FEATURE_NAMES.index("text_sim_profile")]]


# ------------------------------------------------------------------------------ leakage
def test_planted_future_events_change_no_feature(world):
    """A training example at time t must not see events at or after t; events before t do move it."""
    dataset: Dataset = world["dataset"]
    context = BehaviorContext.build(dataset, covisit_window=5)
    text_vectors = np.load(world["root"] / "ranker-run" / "item_text_vectors.npy")
    context.with_content(text_vectors)
    vectors = np.load(world["root"] / "ranker-run" / "item_vectors.npy")
    user = dataset.interactions["user_id"].value_counts().sort("count", descending=True)["user_id"][0]
    rows, _ = context.history_of(user)
    position = len(rows) - 3
    query = _query(context, user, position, vectors)
    candidates = generate(context, [query], SMALL.candidates, lambda r: vectors[r])
    before = compute(context, [query], candidates, lambda r: vectors[r])

    t = context.datetime_of(query.t)
    last_item = context.item_ids[int(query.history[-1])]
    planted_items = [context.item_ids[int(r)] for r in candidates.item[:5]]
    future = []
    for k, item in enumerate(planted_items):  # a stranger watches the user's last item then a candidate, at/after t
        for when in (t, t + timedelta(seconds=1 + k), t + timedelta(days=2)):
            future += [("stranger", last_item, when - timedelta(microseconds=0)), ("stranger", item, when)]
    schema = dataset.interactions.schema
    planted = pl.DataFrame(
        {"user_id": [u for u, _, _ in future], "item_id": [i for _, i, _ in future], "ts": [w for _, _, w in future]}
    ).with_columns(pl.col("ts").cast(schema["ts"]))
    extra = {c: pl.lit(None, dtype=schema[c]) for c in dataset.interactions.columns if c not in planted.columns}
    leaky = replace(
        dataset,
        interactions=pl.concat(
            [dataset.interactions, planted.with_columns(**extra).select(dataset.interactions.columns)]
        ),
    )
    planted_impressions = pl.DataFrame(
        {
            "request_id": ["planted"] * len(planted_items),
            "user_id": ["stranger"] * len(planted_items),
            "ts": [t] * len(planted_items),
            "item_id": planted_items,
            "position": pl.Series(range(len(planted_items)), dtype=pl.Int32),
            "clicked": [True] * len(planted_items),
        }
    )
    imp_schema = dataset.impressions.schema
    imp_extra = {
        c: pl.lit(None, dtype=imp_schema[c])
        for c in dataset.impressions.columns
        if c not in planted_impressions.columns
    }
    planted_impressions = planted_impressions.with_columns(pl.col("ts").cast(imp_schema["ts"]), **imp_extra)
    leaky = replace(
        leaky, impressions=pl.concat([dataset.impressions, planted_impressions.select(dataset.impressions.columns)])
    )
    context_leaky = BehaviorContext.build(leaky, covisit_window=5).with_content(text_vectors)
    candidates_leaky = generate(context_leaky, [query], SMALL.candidates, lambda r: vectors[r])
    np.testing.assert_array_equal(candidates_leaky.item, candidates.item)
    after = compute(context_leaky, [query], candidates_leaky, lambda r: vectors[r])
    np.testing.assert_array_equal(np.nan_to_num(after, nan=-7.0), np.nan_to_num(before, nan=-7.0))

    # The same plant one minute *before* t is visible: the test above has teeth.
    early = planted.with_columns(pl.col("ts") - pl.duration(days=3))
    seen = replace(
        dataset,
        interactions=pl.concat(
            [dataset.interactions, early.with_columns(**extra).select(dataset.interactions.columns)]
        ),
    )
    context_seen = BehaviorContext.build(seen, covisit_window=5).with_content(text_vectors)
    moved = compute(context_seen, [query], candidates, lambda r: vectors[r])
    changed = {
        FEATURE_NAMES[j]
        for j in range(len(FEATURE_NAMES))
        if not np.array_equal(np.nan_to_num(moved[:, j], nan=-7), np.nan_to_num(before[:, j], nan=-7))
    }
    assert {"pop_all", "covisit_last", "covisit_sum"} <= changed


# ------------------------------------------------------------------------------ training
def test_training_writes_a_native_model_metrics_and_lists(world):
    out = world["root"] / "ranker-run"
    run = world["run"]
    assert (out / "ranker" / "model.txt").read_text().startswith("tree")
    meta = json.loads((out / "ranker" / "ranker.json").read_text())
    assert meta["features"] == FEATURE_NAMES and meta["encoder_version"] == world["loaded"].version
    record = json.loads((out / "run.json").read_text())
    assert record["queries"]["test"] == world["split"].targets("test").height
    assert 0.0 <= run.test["ndcg@10"] <= 1.0 and run.test["users"] == record["queries"]["test"]
    topk = pl.read_parquet(out / "topk_test.parquet")
    assert topk.columns == ["user_id", "item_id", "rank"]
    assert topk.group_by("user_id").agg(pl.col("item_id").n_unique() == pl.len())["item_id"].all()
    history = world["split"].history("test")
    assert topk.join(history, on=["user_id", "item_id"], how="inner").height == 0  # seen items never returned
    assert (out / "importance.png").stat().st_size > 1000
    assert sum(record["importance_gain"].values()) > 0


def test_train_and_serve_paths_give_the_same_features_and_scores(world):
    """The online `rank` (ids, datetimes, a vector lookup) equals the training path on the same requests."""
    dataset: Dataset = world["dataset"]
    out = world["root"] / "ranker-run"
    context = BehaviorContext.build(dataset, covisit_window=SMALL.covisit_window)
    context.with_content(np.load(out / "item_text_vectors.npy"))  # as training had it: text candidates too
    model = RankerModel.load(out / "ranker", context)
    assert isinstance(model, CandidateRanker)
    vectors = np.load(out / "item_vectors.npy")
    lookup_rows = lambda rows: vectors[rows]  # noqa: E731

    def lookup_ids(ids):
        return vectors[context.rows(ids)]

    users = world["split"].targets("test")["user_id"].to_list()[:8]
    sources_seen: set[int] = set()
    for user in users:
        rows, _ = context.history_of(user)
        query = _query(context, user, len(rows) - 1, vectors)
        candidates, _, scores = model.score([query], lookup_rows)
        order = np.lexsort((candidates.item, -scores))[:20]
        request = RankRequest(
            history=[context.item_ids[r] for r in query.history.tolist()],
            history_ts=[context.datetime_of(s) for s in query.history_seconds.tolist()],
            candidates=[context.item_ids[r] for r in query.retrieved.tolist()],
            interest=query.interest.tolist(),
            k=20,
            user_id=user,
            now=context.datetime_of(query.t),
            user_vector=query.user_vector.tolist(),
            item_vectors=lookup_ids,
        )
        served = model.rank(request, explain=True)
        assert served.item_ids == [context.item_ids[r] for r in candidates.item[order].tolist()]
        np.testing.assert_allclose(served.scores, scores[order], rtol=1e-12)
        assert set(served.sources) <= {"retrieval", "covisit", "popular", "text"}
        sources_seen.update(candidates.source.tolist())
        text_features = features_of(model, query, lookup_rows)
        assert np.isfinite(text_features).all()  # the context's item content reached both paths
        explanation = served.explanations[0]
        assert 0 < len(explanation["contributions"]) <= 5
        assert set(explanation["contributions"]) <= set(FEATURE_NAMES)
        assert explanation["because_of"] in request.history
    assert TEXT in sources_seen  # text candidates (ranking.content) were generated and ranked


def test_a_real_time_event_after_the_snapshot_is_scored_as_training_scores_it_just_before_t(world):
    """The service ranks at the ranker's snapshot time (`as_of`); an event posted later (`POST /v1/events`)
    counts as just before it: the online `rank` equals the training path on the history with the event at
    as_of - 1 s, and the event moves the point-in-time features (recency, co-visitation with it, length)."""
    context = BehaviorContext.build(world["dataset"], covisit_window=SMALL.covisit_window)
    model = RankerModel.load(world["root"] / "ranker-run" / "ranker", context)
    vectors = np.load(world["root"] / "ranker-run" / "item_vectors.npy")
    user = world["split"].targets("test")["user_id"][0]
    rows, seconds = context.history_of(user)
    clicked = next(r for r in range(len(context.item_ids)) if r not in set(rows.tolist()))
    history = np.append(rows, clicked)
    user_vector = vectors[history[-5:]].mean(axis=0)
    scores = vectors @ user_vector
    scores[history] = -np.inf
    top = np.argsort(-scores, kind="stable")[:30]
    query = Query(
        history=history,
        t=context.as_of,
        retrieved=top,
        interest=scores[top],
        history_seconds=np.append(seconds, context.as_of - 1),
        user_vector=user_vector,
    )
    candidates, features, trained = model.score([query], lambda r: vectors[r])
    order = np.lexsort((candidates.item, -trained))[:20]
    posted = context.datetime_of(context.as_of) + timedelta(days=400)  # the wall clock, long after the data
    served = model.rank(
        RankRequest(
            history=[context.item_ids[r] for r in history.tolist()],
            history_ts=[*(context.datetime_of(s) for s in seconds.tolist()), posted],
            candidates=[context.item_ids[r] for r in top.tolist()],
            interest=scores[top].tolist(),
            k=20,
            user_id=user,
            user_vector=user_vector.tolist(),
            item_vectors=lambda ids: vectors[context.rows(ids)],
        )
    )
    assert served.item_ids == [context.item_ids[r] for r in candidates.item[order].tolist()]
    np.testing.assert_allclose(served.scores, trained[order], rtol=1e-12)
    column = {name: features[:, j] for j, name in enumerate(FEATURE_NAMES)}
    np.testing.assert_allclose(column["since_last_days"], 1 / 86_400)  # active a second ago
    assert (column["history_len"] == len(rows) + 1).all()
    expected = context.covisit.strength(
        np.full(len(candidates), clicked), candidates.item, np.full(len(candidates), context.as_of)
    )
    np.testing.assert_allclose(column["covisit_last"], expected)  # co-visitation with the event's item


def test_cold_request_gets_popular_fallbacks_and_exclusions_hold(world):
    context = BehaviorContext.build(world["dataset"], covisit_window=SMALL.covisit_window)
    model = RankerModel.load(world["root"] / "ranker-run" / "ranker", context)
    cold = model.rank(RankRequest(history=[], candidates=[], interest=[], k=5))
    assert len(cold.item_ids) == 5 and set(cold.sources) == {"popular"}
    banned = frozenset(cold.item_ids[:2])
    again = model.rank(RankRequest(history=[], candidates=[], interest=[], k=5, exclude=banned))
    assert not banned & set(again.item_ids)
    category = world["dataset"].items["category"][0]
    allowed = frozenset(world["dataset"].items.filter(pl.col("category") == category)["item_id"].to_list())
    only = model.rank(RankRequest(history=[], candidates=[], interest=[], k=50, allowed=allowed))
    assert only.item_ids and set(only.item_ids) <= allowed


def test_category_codes_follow_names_across_catalog_changes():
    mapping = category_map(["books", "toys"], ["games", "toys", "books"])
    assert mapping.tolist() == [-1, 1, 0]


# ------------------------------------------------------------------------------ MLflow
def test_logged_ranker_is_registered_native_and_loads_by_alias(world, tmp_path):
    import mlflow

    from jobs.log_ranker import log_ranker_run
    from ranking.registry import load_ranker

    settings = Settings(home=tmp_path / "home")
    resolved = log_ranker_run(world["root"] / "ranker-run", settings=settings, alias="champion")
    assert resolved.name == "recsys-ranker" and resolved.alias == "champion"
    client = mlflow.MlflowClient()
    version = client.get_model_version("recsys-ranker", str(resolved.version))
    assert version.tags["encoder_version"] == world["loaded"].version
    files = {Path(p).name for p in _artifact_files(client, version.run_id)}
    assert {"model.txt", "ranker.json", "importance.png"} <= files
    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/recsys-ranker/{resolved.version}", dst_path=str(tmp_path / "model")
        )
    )
    model_files = {p.name for p in model_dir.rglob("*") if p.is_file()}
    assert {"model.lgb", "MLmodel"} <= model_files
    assert (model_dir / "model.lgb").read_text().startswith("tree")  # LightGBM's own text format
    assert not any(name.endswith((".pkl", ".pickle")) for name in files | model_files)
    native = mlflow.lightgbm.load_model(f"models:/recsys-ranker/{resolved.version}")
    assert native.num_feature() == len(FEATURE_NAMES)

    model = load_ranker("champion", dataset=world["dataset"], settings=settings, cache_dir=tmp_path / "cache")
    assert model.version == f"recsys-ranker/{resolved.version}"
    local = load_ranker(world["root"] / "ranker-run", dataset=world["dataset"])
    request = RankRequest(
        history=world["dataset"].interactions["item_id"][:5].to_list(), candidates=[], interest=[], k=10
    )
    assert model.rank(request).item_ids == local.rank(request).item_ids
    with pytest.raises(ConfigError):
        load_ranker("nope-alias", dataset=world["dataset"], settings=settings)


def _artifact_files(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for entry in client.list_artifacts(run_id, path):
        out += _artifact_files(client, run_id, entry.path) if entry.is_dir else [entry.path]
    return out


def test_cli_trains_and_reports_one_line_errors(world, tmp_path):
    env = {"RECSYS_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    args = [
        sys.executable,
        "-m",
        "recsys.cli",
        "train-ranker",
        "--data",
        str(world["root"] / "data"),
        "--split",
        str(world["root"] / "split"),
        "--out",
        str(tmp_path / "run"),
    ]
    bad = subprocess.run(
        [*args, "--encoder", str(tmp_path / "missing")], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )
    assert bad.returncode == 2 and "no such folder" in bad.stderr and "Traceback" not in bad.stderr
    bad_k = subprocess.run(
        [*args, "--encoder", str(world["root"] / "encoder"), "--retrieval-k", "-1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert bad_k.returncode == 2 and "retrieval_k" in bad_k.stderr


def test_ab_compares_models_by_reference_and_run_folders(world, tmp_path, monkeypatch):
    """`recsys ab` systems: encoder:<ref> vs ranker:<ref> scored here, and a run folder's saved lists."""
    from jobs.ab_job import StatsConfig, run_ab

    fast = StatsConfig(n_bootstrap=200, n_permutations=500)
    root = world["root"]
    result = run_ab(
        root / "split",
        f"encoder:{root / 'encoder'}",
        f"ranker:{root / 'ranker-run'}",
        data=root / "data",
        stats=fast,
        reference_baselines=(),
        out=tmp_path / "report",
    )
    verdicts = result.verdicts()
    assert any("NDCG@10" in line or "ndcg@10" in line for line in verdicts)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert "ranker" in json.dumps(report) and "encoder" in json.dumps(report)
    # The ranker scored here equals the lists training saved for the same test queries.
    saved = pl.read_parquet(root / "ranker-run" / "topk_test.parquet")
    again = run_ab(
        root / "split",
        root / "ranker-run",
        f"ranker:{root / 'ranker-run'}",
        data=root / "data",
        stats=fast,
        reference_baselines=(),
    )
    ndcg = next(m for m in again.comparison.metrics if m.metric == "ndcg@10")
    assert ndcg.diff == pytest.approx(0.0, abs=1e-12)
    assert saved.height > 0
    with pytest.raises(ConfigError, match="--data"):
        run_ab(root / "split", "mostpop", f"ranker:{root / 'ranker-run'}", reference_baselines=())
    # `frozen`: the zero-shot base encoder (real MiniLM), built once under RECSYS_HOME and reused.
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    frozen = run_ab(root / "split", "frozen", "mostpop", data=root / "data", stats=fast, reference_baselines=())
    assert "encoder" in frozen.system_a
    assert len(list((tmp_path / "home" / "frozen").glob("*/run.json"))) == 1


def test_popular_ranking_at_an_earlier_time_never_reuses_a_later_one(world):
    """Regression: a cache keyed by the hour let a query see popularity computed later in that hour."""
    context = BehaviorContext.build(world["dataset"], covisit_window=5)
    seconds = context.popularity.seconds
    later = int(np.max(seconds))
    earlier = later // 3600 * 3600  # the same hour as the later query, before the newest event
    fresh = BehaviorContext.build(world["dataset"], covisit_window=5)
    context.popular(later + 1, 30, 20)  # fill the cache at the later time first
    np.testing.assert_array_equal(context.popular(earlier, 30, 20), fresh.popular(earlier, 30, 20))
    every = np.arange(len(context.item_ids))
    expected = np.lexsort(
        (
            every,
            -context.popularity.total(every, earlier),
            -context.popularity.total(every, earlier, earlier - 30 * 86_400),
        )
    )
    expected = expected[context.popularity.total(every, earlier)[expected] > 0][:20]
    np.testing.assert_array_equal(context.popular(earlier, 30, 20), expected)


def test_ranker_trains_on_the_holdout_tower_and_tests_on_the_served_one(world, tiny_bert):
    """Stacking: a sequence encoder with a holdout tower scores the training and validation queries.

    The ranker's training candidates then come from the holdout tower's item space (its own cache
    file), the test queries from the served (refit) tower's, and run.json says which was which.
    """
    from encoders.sequence import SequenceConfig
    from encoders.sequence_training import SequenceTrainConfig

    root, dataset, split = world["root"], world["dataset"], world["split"]
    config = TextTrainConfig(
        method="frozen", max_steps=1, batch_size=8, eval_every=1, history_tokens=48, item_tokens=16, threads=1
    )
    train_encoder(
        dataset,
        split,
        root / "seq-encoder",
        tower="sequence",
        base_model=tiny_bert,
        text_config=config,
        sequence_config=SequenceConfig(dim=16, max_len=20, layers=1),
        sequence_train_config=SequenceTrainConfig(epochs=2, threads=1, holdout_tail=3),
        progress=False,
    )
    loaded = resolve_encoder(root / "seq-encoder", device="cpu")
    assert loaded.bundle.holdout is not None
    out = root / "ranker-stacked"
    train_ranker(dataset, split, loaded, out, SMALL, progress=False)
    stacking = json.loads((out / "run.json").read_text())["report"]["stacking"]
    assert stacking["holdout_tail"] == 3 and stacking["out_of_sample_cuts"] == SMALL.extra_cuts == 3
    served, holdout = np.load(out / "item_vectors.npy"), np.load(out / "item_vectors_holdout.npy")
    assert served.shape == holdout.shape and not np.allclose(served, holdout)
    meta = json.loads((out / "ranker" / "ranker.json").read_text())
    assert meta["report"]["stacking"]["holdout_tail"] == 3
    world_stacking = json.loads((root / "ranker-run" / "run.json").read_text())["report"]["stacking"]
    assert world_stacking["holdout_tail"] == 0  # a text tower has no holdout: said, not hidden
