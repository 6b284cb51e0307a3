"""MostPop and ItemKNN on hand-made data with known answers, plus the MovieLens sanity check."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import recsys.baselines as baselines
from recsys.baselines import ItemKNN, MostPop, make_baseline
from recsys.errors import ConfigError, DataError
from recsys.metrics import evaluate_topk
from recsys.splits import leave_last_out

MOVIELENS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movielens" / "ml-latest-small"


def history(pairs: dict[str, str]) -> pl.DataFrame:
    """{user: "abc"} -> one interaction per (user, letter)."""
    rows = [(u, item) for u, items in pairs.items() for item in items]
    return pl.DataFrame(rows, schema={"user_id": pl.String, "item_id": pl.String}, orient="row")


def items_of(recs: pl.DataFrame, user: str) -> list[str]:
    return recs.filter(pl.col("user_id") == user).sort("rank")["item_id"].to_list()


# Two taste clusters: {a, b, c} and {x, y}; "a" is the most popular item overall.
CLUSTERS = {"u1": "abc", "u2": "ab", "u3": "ac", "u4": "xy", "u5": "xy", "u6": "a"}


# -- MostPop ---------------------------------------------------------------------------------------------
def test_mostpop_orders_by_count_then_item_id():
    h = history({"u1": "ab", "u2": "bc", "u3": "dc", "u4": "e"})  # b, c: 2; a, d, e: 1
    recs = MostPop().fit(h).recommend(["new"], k=5)
    assert items_of(recs, "new") == ["b", "c", "a", "d", "e"]
    assert recs["score"].to_list() == [2.0, 2.0, 1.0, 1.0, 1.0]
    assert recs["rank"].to_list() == [1, 2, 3, 4, 5]
    assert recs.schema == pl.Schema({"user_id": pl.String, "item_id": pl.String, "rank": pl.Int32, "score": pl.Float64})


def test_mostpop_never_recommends_seen_items():
    h = history(CLUSTERS)
    recs = MostPop().fit(h).recommend(list(CLUSTERS), k=3, exclude=h)
    seen = recs.join(h, on=["user_id", "item_id"], how="semi")
    assert seen.height == 0
    assert items_of(recs, "u6") == ["b", "c", "x"]  # a seen; then b(2) c(2) x(2) by id
    assert items_of(recs, "u1") == ["x", "y"]  # only two unseen items remain


def test_catalog_restricts_candidates_and_adds_unseen_items_last():
    h = history(CLUSTERS)
    catalog = pl.Series(["c", "x", "zz_new", "a"])
    recs = MostPop().fit(h).recommend(["u2"], k=10, exclude=h, catalog=catalog)
    assert items_of(recs, "u2") == ["c", "x", "zz_new"]  # a seen, b/y outside the catalog
    assert recs.filter(pl.col("item_id") == "zz_new")["score"].to_list() == [0.0]


def test_users_keep_the_given_order_and_duplicates_collapse():
    recs = MostPop().fit(history(CLUSTERS)).recommend(pl.Series(["z", "b", "z", "a"]), k=1)
    assert recs["user_id"].to_list() == ["z", "b", "a"]


# -- ItemKNN ---------------------------------------------------------------------------------------------
def test_itemknn_cosine_weights_by_hand():
    model = ItemKNN(neighbors=10).fit(history(CLUSTERS))
    items = model._items.to_list()
    w = model.weights.toarray()
    idx = {item: n for n, item in enumerate(items)}
    # |U_a| = 4 (u1 u2 u3 u6), |U_b| = 2, |U_c| = 2, |U_x| = |U_y| = 2; co(a,b) = 2, co(b,c) = 1, co(x,y) = 2
    assert w[idx["a"], idx["b"]] == pytest.approx(2 / math.sqrt(4 * 2))
    assert w[idx["b"], idx["c"]] == pytest.approx(1 / math.sqrt(2 * 2))
    assert w[idx["x"], idx["y"]] == pytest.approx(1.0)
    assert w[idx["a"], idx["x"]] == 0.0
    assert np.allclose(np.diag(w), 0.0)
    assert np.allclose(w, w.T)  # no pruning with 10 neighbours: cosine is symmetric


def test_itemknn_recommends_from_the_users_cluster():
    h = history(CLUSTERS)
    recs = ItemKNN(neighbors=10).fit(h).recommend(["u2", "u4"], k=2, exclude=h)
    # u2 = {a, b}: c scores sim(a,c) + sim(b,c) = 0.707 + 0.5; x and y score 0
    assert items_of(recs, "u2")[0] == "c"
    assert recs.filter(pl.col("user_id") == "u2")["score"][0] == pytest.approx(2 / math.sqrt(8) + 0.5)
    # u4 = {x, y} has no co-occurrence with the rest: zero scores, so the popularity tie rule applies
    assert items_of(recs, "u4") == ["a", "b"]


def test_shrink_and_jaccard_by_hand():
    h = history(CLUSTERS)
    shrunk = ItemKNN(neighbors=10, shrink=2.0).fit(h)
    idx = {item: n for n, item in enumerate(shrunk._items.to_list())}
    assert shrunk.weights[idx["a"], idx["b"]] == pytest.approx(2 / (math.sqrt(8) + 2))
    jac = ItemKNN(neighbors=10, similarity="jaccard").fit(h)
    assert jac.weights[idx["a"], idx["b"]] == pytest.approx(2 / (4 + 2 - 2))
    assert jac.weights[idx["b"], idx["c"]] == pytest.approx(1 / (2 + 2 - 1))


def test_neighbors_prunes_per_target_item():
    model = ItemKNN(neighbors=1).fit(history(CLUSTERS))
    idx = {item: n for n, item in enumerate(model._items.to_list())}
    w = model.weights.toarray()
    assert (np.count_nonzero(w, axis=0) <= 1).all()
    # b's nearest neighbour is a (0.707 > sim(c, b) = 0.5)
    assert w[idx["a"], idx["b"]] > 0 and w[idx["c"], idx["b"]] == 0


def test_cold_users_get_the_mostpop_list():
    h = history(CLUSTERS)
    catalog = pl.Series(["a", "b", "c", "x", "y", "new"])
    knn = ItemKNN().fit(h).recommend(["stranger"], k=6, catalog=catalog)
    pop = MostPop().fit(h).recommend(["stranger"], k=6, catalog=catalog)
    assert items_of(knn, "stranger") == items_of(pop, "stranger") == ["a", "b", "c", "x", "y", "new"]


def test_itemknn_excludes_history_and_respects_catalog():
    h = history(CLUSTERS)
    catalog = pl.Series(["a", "b", "y"])
    recs = ItemKNN().fit(h).recommend(list(CLUSTERS), k=5, exclude=h, catalog=catalog)
    assert recs.join(h, on=["user_id", "item_id"], how="semi").height == 0
    assert set(recs["item_id"]) <= {"a", "b", "y"}
    assert items_of(recs, "u1") == ["y"]  # a, b seen


def test_all_candidates_excluded_gives_no_rows():
    h = history({"u1": "ab", "u2": "a"})
    recs = ItemKNN().fit(h).recommend(["u1", "u2"], k=3, exclude=h)
    assert items_of(recs, "u1") == []
    assert items_of(recs, "u2") == ["b"]


def test_dense_reference_without_pruning():
    """With every neighbour kept, scores equal the dense textbook formula X (X^T X / norms), zero diagonal."""
    rng = random.Random(3)
    pairs = {f"u{u}": "".join(rng.sample("abcdefghijkl", rng.randint(1, 6))) for u in range(40)}
    h = history(pairs)
    model = ItemKNN(neighbors=1000, shrink=1.5).fit(h)
    items = model._items.to_list()
    users = sorted(pairs)
    x = np.array([[1.0 if i in pairs[u] else 0.0 for i in items] for u in users])
    co = x.T @ x
    norms = np.sqrt(np.diag(co))
    sim = co / (np.outer(norms, norms) + 1.5)
    np.fill_diagonal(sim, 0.0)
    expected = x @ sim
    recs = model.recommend(users, k=len(items))
    got = np.zeros_like(expected)
    for u, i, _, s in recs.iter_rows():
        got[users.index(u), items.index(i)] = s
    assert np.allclose(got, expected, atol=1e-5)
    # and each list is sorted by score
    for u in users:
        scores = recs.filter(pl.col("user_id") == u)["score"].to_list()
        assert scores == sorted(scores, reverse=True)


def test_batching_does_not_change_results(monkeypatch):
    rng = random.Random(5)
    pairs = {f"u{u}": "".join(rng.sample("abcdefghijklmnop", rng.randint(1, 8))) for u in range(50)}
    h = history(pairs)
    users = [*sorted(pairs), "cold"]
    whole_model = ItemKNN(neighbors=3).fit(h)
    whole = whole_model.recommend(users, k=5, exclude=h)
    monkeypatch.setattr(baselines, "_BATCH_CELLS", 20)  # about one user per batch
    monkeypatch.setattr(baselines, "_SIM_BLOCK_CELLS", 40)  # a few target items per block
    small_model = ItemKNN(neighbors=3).fit(h)
    assert (small_model.weights != whole_model.weights).nnz == 0
    assert small_model.recommend(users, k=5, exclude=h).equals(whole)


def test_deterministic_and_independent_of_row_order():
    h = history(CLUSTERS)
    shuffled = h.sample(fraction=1.0, shuffle=True, seed=11)
    users = [*CLUSTERS, "cold"]
    for cls in (MostPop, ItemKNN):
        a = cls().fit(h).recommend(users, k=4, exclude=h)
        b = cls().fit(shuffled).recommend(users, k=4, exclude=shuffled)
        assert a.equals(b)


def test_repeated_interactions_count_once_in_itemknn():
    once = ItemKNN(neighbors=10).fit(history(CLUSTERS))
    twice = ItemKNN(neighbors=10).fit(pl.concat([history(CLUSTERS), history(CLUSTERS)]))
    assert np.allclose(once.weights.toarray(), twice.weights.toarray())


# -- protocol, factory, errors ----------------------------------------------------------------------------
def test_make_baseline():
    assert isinstance(make_baseline("MostPop"), MostPop)
    knn = make_baseline("itemknn", neighbors=7, shrink=1.0)
    assert isinstance(knn, ItemKNN) and knn.neighbors == 7 and knn.shrink == 1.0
    with pytest.raises(ConfigError, match="itemknn, mostpop"):
        make_baseline("svd")
    with pytest.raises(ConfigError, match="bad parameters"):
        make_baseline("mostpop", neighbors=3)


@pytest.mark.parametrize("params", [{"neighbors": 0}, {"neighbors": 2.5}, {"shrink": -1.0}, {"similarity": "pearson"}])
def test_itemknn_rejects_bad_params(params):
    with pytest.raises(ConfigError):
        ItemKNN(**params)


def test_usage_errors():
    with pytest.raises(ConfigError, match="fit"):
        MostPop().recommend(["u"], k=3)
    model = MostPop().fit(history(CLUSTERS))
    for k in (0, -1, 2.0, True):
        with pytest.raises(ConfigError):
            model.recommend(["u1"], k=k)
    with pytest.raises(ConfigError, match="catalog is empty"):
        model.recommend(["u1"], k=3, catalog=pl.Series([], dtype=pl.String))
    with pytest.raises(DataError):
        MostPop().fit(pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String}))
    with pytest.raises(DataError) as info:
        ItemKNN().fit(pl.DataFrame({"user_id": ["u"]}))
    assert info.value.column == "item_id"
    with pytest.raises(DataError) as info:
        model.recommend(["u1"], k=3, exclude=pl.DataFrame({"user": ["u1"]}))
    assert info.value.column == "user_id"


# -- MovieLens ---------------------------------------------------------------------------------------------
@pytest.mark.movielens
@pytest.mark.slow
def test_movielens_itemknn_beats_mostpop():
    ratings = MOVIELENS / "ratings.csv"
    if not ratings.exists():
        pytest.skip(f"MovieLens ml-latest-small not found at {MOVIELENS}")
    raw = pl.read_csv(ratings, schema_overrides={"userId": pl.String, "movieId": pl.String})
    interactions = raw.select(
        pl.col("userId").alias("user_id"),
        pl.col("movieId").alias("item_id"),
        pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC").alias("ts"),
    )
    split = leave_last_out(interactions)
    seen = split.history("test")
    targets = split.targets("test")
    catalog = split.catalog()
    results = {}
    for name in ("mostpop", "itemknn"):
        model = make_baseline(name).fit(seen)
        topk = model.recommend(targets["user_id"], k=10, exclude=seen, catalog=catalog)
        assert topk.join(seen, on=["user_id", "item_id"], how="semi").height == 0
        assert topk.group_by("user_id").len()["len"].min() == 10
        results[name] = evaluate_topk(topk, targets, ks=[10], catalog=catalog)
    assert results["mostpop"]["users"] == results["itemknn"]["users"] == 610
    assert results["itemknn"]["ndcg@10"] > results["mostpop"]["ndcg@10"]
    assert 0.02 <= results["itemknn"]["ndcg@10"] <= 0.05
    assert results["itemknn"]["coverage@10"] > results["mostpop"]["coverage@10"]
