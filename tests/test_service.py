"""The `Recommender` facade in-process: vectors, exclusions, filters, cold start, ranker contract, hot swap.

The world is real and tiny (`jobs.testing`): a synthetic dataset, one-step encoders over a
tiny random BERT, and a store published by the real nightly job. Expected results are recomputed
here independently: brute-force inner products over the encoder's own item vectors, popularity
with `collections.Counter`, histories sorted from the raw interaction table.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from threading import Barrier

import mlflow
import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

import ranking
from encoders.packaging import EncoderBundle
from jobs.log_encoder import log_encoder_run
from jobs.nightly_embed import run_nightly
from jobs.testing import build_world, embed_config
from ranking.protocol import RankRequest, RankResult
from recsys.data.dataset import Dataset
from recsys.embedding_store import read_user_vectors
from recsys.errors import DataError
from recsys.index import IndexStore, VectorIndex
from recsys.registry import configure_mlflow, set_alias
from recsys.serving import Recommender, ServingConfig, UnknownItemError, create_app
from recsys.serving.catalog import Catalog
from recsys.serving.events import Event
from recsys.serving.live import LiveHistories

ATOL = 1e-4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("serving"), towers=("text", "pooled", "sequence"))


@pytest.fixture(scope="module")
def truth(world):
    """Independent references: the encoder's item vectors for every catalog item, cached user vectors."""
    bundle = EncoderBundle.load(world.encoders["text"], device="cpu")
    text = world.dataset.item_text()
    ids = text["item_id"].to_list()
    text_vectors = bundle.encode_items(text["text"].to_list())
    vectors = bundle.index_vectors(ids, text_vectors=text_vectors)  # + the prior column when the encoder has one
    store = IndexStore(world.store / "index")
    users = read_user_vectors(store.root, store.metadata(store.current_version()))
    cached = dict(zip(users["user_id"].to_list(), np.stack(users["vector"].to_numpy()), strict=True))
    return {
        "bundle": bundle,
        "ids": ids,
        "row": {i: r for r, i in enumerate(ids)},
        "vectors": vectors,
        "text_vectors": text_vectors,
        "texts": dict(zip(ids, text["text"].to_list(), strict=True)),
        "cached": cached,
    }


@pytest.fixture(scope="module")
def rec(world):
    with Recommender.load(
        world.store, world.data, encoder=world.encoders["text"], ranker=None, config=ServingConfig(threads=1)
    ) as recommender:
        yield recommender


def _newest_first(dataset: Dataset, user: str) -> list[str]:
    rows = dataset.interactions.filter(pl.col("user_id") == user)
    return [item for _, item in sorted(zip(rows["ts"].to_list(), rows["item_id"].to_list(), strict=True), reverse=True)]


def _assert_top_k(result, truth, vector, k, exclude=(), allowed=None):
    """Returned items are the k best by brute force (scores compared, so exact ties may swap places)."""
    scores = truth["vectors"] @ np.asarray(vector, dtype=np.float32)
    eligible = [i for i in truth["ids"] if i not in set(exclude) and (allowed is None or i in allowed)]
    best = sorted((scores[truth["row"][i]] for i in eligible), reverse=True)[:k]
    assert len(result.items) == min(k, len(eligible))
    assert [item.rank for item in result.items] == list(range(1, len(result.items) + 1))
    for item in result.items:
        assert item.item_id in eligible
        assert item.score == pytest.approx(float(scores[truth["row"][item.item_id]]), abs=ATOL)
    np.testing.assert_allclose([item.score for item in result.items], best, atol=ATOL)


# ------------------------------------------------------------------------------------- users
def test_known_user_gets_the_fresh_nightly_vector_and_never_a_seen_item(rec, world, truth):
    user = sorted(truth["cached"])[0]
    history = _newest_first(world.dataset, user)
    result = rec.recommend(user_id=user, k=10)
    assert (result.user_vector, result.cold_start, result.mode, result.query) == ("cached", False, "retrieval", "user")
    assert result.index_version == world.report.index_version and result.encoder_version == rec.encoder_version
    _assert_top_k(result, truth, truth["cached"][user], 10, exclude=history)
    titles = dict(zip(world.dataset.items["item_id"].to_list(), world.dataset.items["title"].to_list(), strict=True))
    assert all(item.title == titles[item.item_id] and item.source == "retrieval" for item in result.items)
    assert set(result.timings_ms) >= {"search", "total"} and "encode" not in result.timings_ms

    kept = rec.recommend(user_id=user, k=len(truth["ids"]), exclude_seen=False)
    assert set(history) <= set(kept.item_ids)  # without exclusion the whole catalog comes back

    # The same history sent as item ids is encoded on the fly into (nearly) the nightly vector.
    again = rec.recommend(history=history, k=10)
    assert again.user_vector == "encoded" and "encode" in again.timings_ms
    _assert_top_k(again, truth, truth["cached"][user], 10, exclude=history)


def test_a_user_outside_the_cache_is_encoded_from_the_log(rec, world, truth):
    user = next(u for u in sorted(world.dataset.interactions["user_id"].unique()) if u not in truth["cached"])
    history = _newest_first(world.dataset, user)
    cap = truth["bundle"].history_cap
    expected = truth["bundle"].user_vectors_text([[truth["texts"][i] for i in history[:cap]]])[0]
    result = rec.recommend(user_id=user, k=7)
    assert result.user_vector == "encoded" and not result.cold_start
    _assert_top_k(result, truth, expected, 7, exclude=history)


def test_unknown_user_falls_back_to_recent_popularity(rec, world):
    inter = world.dataset.interactions
    newest = inter["ts"].max()
    recent = Counter(inter.filter(pl.col("ts") >= newest - timedelta(days=30))["item_id"].to_list())
    total = Counter(inter["item_id"].to_list())
    expected = sorted(world.dataset.items["item_id"].to_list(), key=lambda i: (-recent[i], -total[i], i))[:15]
    result = rec.recommend(user_id="nobody-at-all", k=15, explain=True)
    assert (result.cold_start, result.mode, result.user_vector) == (True, "popular", None)
    assert result.item_ids == expected
    assert [item.score for item in result.items] == [float(recent[i] or total[i]) for i in expected]
    assert all(item.source == "popular" and item.explanation["window"] for item in result.items)
    garden = rec.recommend(user_id="nobody-at-all", k=5, filters={"category": "gardening"})
    gardening = set(world.dataset.items.filter(pl.col("category") == "gardening")["item_id"].to_list())
    assert garden.item_ids == sorted(gardening, key=lambda i: (-recent[i], -total[i], i))[:5]


def test_history_requests_drop_unknown_ids_and_reject_all_unknown(rec, truth):
    known = truth["ids"][5:8]
    result = rec.recommend(history=["ghost-1", known[0], "ghost-2", *known[1:], "ghost-1"], k=5)
    assert result.ignored_items == ["ghost-1", "ghost-2"] and result.query == "history"
    cap = truth["bundle"].history_cap
    expected = truth["bundle"].user_vectors_text([[truth["texts"][i] for i in known[:cap]]])[0]
    _assert_top_k(result, truth, expected, 5, exclude=known)
    with pytest.raises(DataError, match="none of the 2 item ids") as caught:
        rec.recommend(history=["ghost-1", "ghost-2"])
    assert caught.value.column == "item_ids"


def test_free_text_odd_unicode_and_filters(rec, world, truth):
    text = "garden \u200f\u202e tools 🌱 \u0000 for the patio"
    expected = truth["bundle"].encode_items([text])[0]
    if truth["bundle"].prior is not None:  # a text query: similarity + the query-side share of the prior
        expected = np.append(expected, np.float32(truth["bundle"].meta["query_prior"]))
    np.testing.assert_allclose(truth["bundle"].query_vectors([text])[0], expected, atol=1e-6)
    result = rec.recommend(text=text, k=6)
    assert result.query == "text" and result.user_vector is None
    _assert_top_k(result, truth, expected, 6)

    items = world.dataset.items
    allowed = set(items.filter(pl.col("category").is_in(["gardening", "video games"]))["item_id"].to_list())
    filtered = rec.recommend(text=text, k=50, filters={"category": ["Gardening", " VIDEO GAMES "]}, explain=True)
    _assert_top_k(filtered, truth, expected, 50, allowed=allowed)
    assert all(item.explanation == {"interest": item.score} for item in filtered.items)


def test_similar_items_and_unknown_items(rec, truth):
    anchor = truth["ids"][3]
    result = rec.similar(anchor, k=5)
    assert result.query == "item" and anchor not in result.item_ids
    query = truth["vectors"][truth["row"][anchor]].copy()
    if truth["bundle"].prior is not None:
        query[-1] = truth["bundle"].meta["query_prior"]  # the anchor: similarity + the query-side prior share
    _assert_top_k(result, truth, query, 5, exclude=[anchor])
    with pytest.raises(UnknownItemError, match="not in the served index"):
        rec.similar("no-such-item")


def test_explanations_name_the_closest_history_item(rec, world, truth):
    user = sorted(truth["cached"])[1]
    history = _newest_first(world.dataset, user)
    result = rec.recommend(user_id=user, k=4, explain=True)
    window = history[: rec.config.explain_history]
    for item in result.items:
        text_vectors = truth["text_vectors"]
        sims = {h: float(text_vectors[truth["row"][item.item_id]] @ text_vectors[truth["row"][h]]) for h in window}
        assert item.explanation["similarity"] == pytest.approx(max(sims.values()), abs=ATOL)
        assert sims[item.explanation["because_of"]] == pytest.approx(max(sims.values()), abs=ATOL)


def test_concurrent_requests_are_batched_and_answer_like_sequential_ones(rec, world, truth):
    users = sorted(world.dataset.interactions["user_id"].unique())[:12]
    calls = [("user", u) for u in users] + [
        ("text", f"{word} guide") for word in ("garden", "crime", "travel", "money", "music", "sports")
    ]
    calls += [("similar", item) for item in truth["ids"][:6]]

    def run(call):
        kind, value = call
        if kind == "similar":
            return rec.similar(value, k=8)
        return rec.recommend(user_id=value, k=8) if kind == "user" else rec.recommend(text=value, k=8)

    sequential = [run(call) for call in calls]
    searches, batches = rec._searcher.tasks, rec._searcher.batches
    barrier = Barrier(len(calls))

    def together(call):
        barrier.wait()
        return run(call)

    with ThreadPoolExecutor(len(calls)) as pool:
        concurrent = list(pool.map(together, calls))
    for alone, batched in zip(sequential, concurrent, strict=True):
        np.testing.assert_allclose([i.score for i in batched.items], [i.score for i in alone.items], atol=ATOL)
        assert batched.user_vector == alone.user_vector and batched.cold_start == alone.cold_start
    assert rec._searcher.tasks - searches == len(calls)
    assert rec._searcher.batches - batches < len(calls)  # some searches shared a FAISS call


@pytest.mark.parametrize(
    ("kwargs", "column"),
    [
        ({"user_id": "u1", "k": 0}, "k"),
        ({"user_id": "u1", "k": 1001}, "k"),
        ({"user_id": "u1", "k": True}, "k"),
        ({"user_id": "u1", "k": 2.5}, "k"),
        ({"user_id": "u1", "text": "both"}, "query"),
        ({}, "query"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "x" * 257}, "user_id"),
        ({"history": "i000001"}, "item_ids"),
        ({"history": []}, "item_ids"),
        ({"history": ["i000001"] * 501}, "item_ids"),
        ({"history": ["i000001", 7]}, "item_ids"),
        ({"text": "a" * 2001}, "text"),
        ({"text": "bad \ud800 surrogate"}, "text"),
        ({"text": " \t\n "}, "text"),
        ({"text": "a", "filters": {"colour": "red"}}, "filters.colour"),
        ({"text": "a", "filters": {"category": []}}, "filters.category"),
        ({"text": "a", "exclude_seen": "yes"}, "exclude_seen"),
    ],
)
def test_bad_input_is_a_data_error_naming_the_field(rec, kwargs, column):
    with pytest.raises(DataError) as caught:
        rec.recommend(**kwargs)
    assert caught.value.column == column


def test_catalog_filters_match_list_valued_columns_case_insensitively():
    items = pl.DataFrame(
        {
            "item_id": ["1", "2", "3"],
            "title": ["A", "B", "C"],
            "genres": ["Adventure, Comedy", "Comedy|Drama", "Drama"],
            "year": [1995, 1995, 2001],
        }
    )
    stamp = datetime(2024, 1, 1, tzinfo=timezone.utc)
    interactions = pl.DataFrame({"user_id": ["u"] * 3, "item_id": ["1", "2", "3"], "ts": [stamp] * 3})
    catalog = Catalog(Dataset(items, interactions, text_template="{title} | {genres}"))
    assert catalog.filter_columns == ["title", "genres", "year"]
    assert catalog.matching(catalog.check_filters({"genres": "comedy"})) == {"1", "2"}
    assert catalog.matching(catalog.check_filters({"genres": ["DRAMA"], "year": "1995"})) == {"2"}
    assert catalog.matching(catalog.check_filters({"genres": "Adventure, Comedy"})) == {"1"}


def test_served_histories_order_same_second_ties_like_the_models_and_live_events_follow():
    """Newest first, ties by id in natural order (docs/data.md): "10" is newer than "9", as in the split.

    The served history used to break ties as strings ("9" newest), so a user whose newest second
    held items 9 and 10 was served a sequence ending in another item than the one the tower trained on.
    """
    items = pl.DataFrame({"item_id": ["2", "9", "10", "11"], "title": ["A", "B", "C", "D"]})
    stamp = datetime(2024, 1, 1, tzinfo=timezone.utc)
    interactions = pl.DataFrame(
        {"user_id": ["u"] * 3, "item_id": ["2", "9", "10"], "ts": [stamp - timedelta(days=1), stamp, stamp]}
    )
    catalog = Catalog(Dataset(items, interactions, text_template="{title}"))
    assert catalog.history("u").item_ids == ["10", "9", "2"]
    live = LiveHistories()
    live.apply([Event("e1", "u", "11", int(stamp.timestamp() * 1_000_000))])
    merged, fresh = live.history(catalog, "u")
    assert fresh and merged.item_ids == ["11", "10", "9", "2"]


# ------------------------------------------------------------------------------------ towers
@pytest.mark.parametrize("tower", ["pooled", "sequence"])
def test_other_towers_encode_a_history_like_the_nightly_job(world, tmp_path, tower):
    store = tmp_path / "store"
    run_nightly(world.data, world.encoders[tower], store, embed_config())
    with Recommender.load(store, world.data, encoder=world.encoders[tower], ranker=None) as recommender:
        state = recommender.state
        cached = read_user_vectors(store / "index", state.index_meta)
        assert state.encoder.bundle.tower == tower and len(cached) > 10
        for user, vector in zip(cached["user_id"].to_list()[:5], cached["vector"].to_numpy()[:5], strict=True):
            history = state.catalog.history(user)
            encoded = recommender._user_vector(state, history.item_ids, history.ts_us, {})
            np.testing.assert_allclose(encoded, vector, atol=1e-5)
            result = recommender.recommend(user_id=user, k=5)
            assert result.user_vector == "cached" and len(result.items) == 5


# ------------------------------------------------------------------------------------ ranker
class CountingRanker:
    """A real, deliberately simple second stage for the plugin interface: candidates re-ordered by their
    interaction count plus interest; popular items when retrieval gave nothing. Records its requests."""

    def __init__(self, dataset: Dataset, encoder_version: str | None = None, fail: bool = False) -> None:
        self.feature_names = ["interest", "interactions"]
        self.version = "test-ranker/1"
        self.encoder_version = encoder_version
        self.counts = Counter(dataset.interactions["item_id"].to_list())
        self.fail = fail
        self.requests: list[RankRequest] = []

    def rank(self, request: RankRequest, *, explain: bool = False) -> RankResult:
        self.requests.append(request)
        if self.fail:
            raise RuntimeError("the ranker's feature store is down")
        pool = [
            (item, interest, "retrieval") for item, interest in zip(request.candidates, request.interest, strict=True)
        ]
        if not pool:
            pool = [(item, 0.0, "popular") for item, _ in self.counts.most_common()]
        pool = [p for p in pool if p[0] not in request.exclude and (request.allowed is None or p[0] in request.allowed)]
        scored = sorted(((self.counts[i] + s, i, src) for i, s, src in pool), key=lambda t: (-t[0], t[1]))
        top = scored[: request.k]
        explanations = (
            [{"contributions": {"interactions": float(self.counts[i])}, "because_of": None} for _, i, _ in top]
            if explain
            else None
        )
        return RankResult([i for _, i, _ in top], [s for s, _, _ in top], [src for _, _, src in top], explanations)


def test_a_ranker_reorders_the_retrieved_candidates(world, truth):
    ranker = CountingRanker(world.dataset)
    user = sorted(truth["cached"])[2]
    history = _newest_first(world.dataset, user)
    with Recommender.load(world.store, world.data, encoder=world.encoders["text"], ranker=ranker) as recommender:
        assert recommender.status()["mode"] == "ranked" and recommender.ranker_version == "test-ranker/1"
        result = recommender.recommend(user_id=user, k=8, explain=True)
        request = ranker.requests[-1]
        assert (result.mode, result.ranker_version, result.cold_start) == ("ranked", "test-ranker/1", False)
        # The request: every unseen item retrieved (the catalog is smaller than 200), in interest order.
        assert len(request.candidates) == len(truth["ids"]) - len(set(history))
        assert not set(request.candidates) & set(history)
        assert list(request.interest) == sorted(request.interest, reverse=True)
        assert list(request.history) == history[::-1] and request.exclude == frozenset(history)
        assert [t.timestamp() for t in request.history_ts] == sorted(t.timestamp() for t in request.history_ts)
        assert request.user_id == user and request.k == 8
        expected = CountingRanker(world.dataset).rank(request)
        assert result.item_ids == expected.item_ids
        assert [item.score for item in result.items] == pytest.approx(expected.scores)
        assert all(item.explanation["contributions"] for item in result.items)

        cold = recommender.recommend(user_id="new-user", k=5)
        assert (cold.cold_start, cold.mode) == (True, "popular") and ranker.requests[-1].candidates == []
        assert all(item.source == "popular" for item in cold.items)


def test_a_ranker_for_another_encoder_is_refused_and_a_failing_one_falls_back(world, truth):
    foreign = CountingRanker(world.dataset, encoder_version="recsys-encoder/999")
    with Recommender.load(world.store, world.data, encoder=world.encoders["text"], ranker=foreign) as recommender:
        status = recommender.status()
        assert status["ranker"] is None and status["mode"] == "retrieval"
        assert "recsys-encoder/999" in status["ranker_note"]
        assert recommender.recommend(user_id=sorted(truth["cached"])[0]).mode == "retrieval" and not foreign.requests

    broken = CountingRanker(world.dataset, fail=True)
    with Recommender.load(world.store, world.data, encoder=world.encoders["text"], ranker=broken) as recommender:
        user = sorted(truth["cached"])[0]
        result = recommender.recommend(user_id=user, k=5)
        assert result.mode == "retrieval" and broken.requests and recommender.stats["ranker_errors"] == 1
        _assert_top_k(result, truth, truth["cached"][user], 5, exclude=_newest_first(world.dataset, user))


def test_no_usable_ranker_means_retrieval_order_with_a_reason(world, mlflow_settings):
    """`ranker="champion"` with no ranker registered (or no `ranking.load_ranker` yet): retrieval order."""
    settings = mlflow_settings
    with Recommender.load(
        world.store, world.data, encoder=world.encoders["text"], ranker="champion", settings=settings
    ) as recommender:
        status = recommender.status()
        assert status["ranker"] is None and status["mode"] == "retrieval"
        expected = "recsys-ranker" if hasattr(ranking, "load_ranker") else "ranking.load_ranker is not available"
        assert expected in status["ranker_note"]
        assert recommender.recommend(user_id="anyone").mode == "popular"


# ---------------------------------------------------------------------------------- hot swap
def _perturbed(index: VectorIndex, seed: int) -> VectorIndex:
    ids = index.item_ids.tolist()
    vectors = index.reconstruct(ids) + np.random.default_rng(seed).normal(0, 0.05, (len(ids), index.dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return VectorIndex.build(ids, vectors.astype(np.float32), {"kind": "flat"}, encoder_version=index.encoder_version)


def test_refresh_swaps_good_versions_and_refuses_broken_ones(world, tmp_path, truth):
    store = tmp_path / "store"
    shutil.copytree(world.store, store)
    index_store = IndexStore(store / "index")
    v0, index0, meta0 = index_store.current()
    user = sorted(truth["cached"])[0]
    with Recommender.load(store, world.data, encoder=world.encoders["text"], ranker=None) as recommender:
        before = recommender.state
        good = _perturbed(index0, 1)
        v1 = index_store.publish(good, meta0["extra"])
        assert recommender.recommend(user_id=user).index_version == v0  # nothing moves until a refresh
        assert recommender.refresh() == [f"index {v1} loaded (encoder {meta0['encoder_version']})"]
        result = recommender.recommend(user_id=user, k=5)
        assert result.index_version == v1 and result.user_vector == "cached"
        scores = good.reconstruct(result.item_ids) @ truth["cached"][user]
        np.testing.assert_allclose([i.score for i in result.items], scores, atol=ATOL)
        # A request that started on the old state finishes on it: the old state object still answers.
        assert before.index.search(truth["cached"][user][None, :], 3).counts[0] == 3

        v2 = index_store.publish(_perturbed(index0, 2), meta0["extra"], encoder_version="someone-else/7")
        v3 = index_store.publish(_perturbed(index0, 3), meta0["extra"])
        index_file = index_store.versions_dir / v3 / "index.faiss"
        data = bytearray(index_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        index_file.write_bytes(bytes(data))
        assert recommender.refresh() == [] and recommender.index_version == v1
        extra = dict(meta0["extra"], user_vectors=dict(meta0["extra"]["user_vectors"], sha256="0" * 64))
        v4 = index_store.publish(_perturbed(index0, 4), extra)
        assert recommender.refresh() == [] and recommender.refresh() == []  # refused once, not retried
        refused = recommender.status()["refused"]
        assert [(r["what"], r["version"]) for r in refused] == [("index", v3), ("index", v4)]
        assert "checksum mismatch" in refused[0]["reason"] and "user-vector file checksum" in refused[1]["reason"]
        assert recommender.recommend(user_id=user).index_version == v1
        assert v2 not in {r["version"] for r in refused}  # never CURRENT long enough to be seen

        index_store.rollback(v2)  # CURRENT names the index of another encoder
        recommender.refresh()
        assert "built with encoder someone-else/7" in recommender.status()["refused"][-1]["reason"]
        v5 = index_store.publish(_perturbed(index0, 5), meta0["extra"])
        recommender.refresh()
        assert recommender.recommend(user_id=user).index_version == v5
        assert recommender.status()["swaps"] == 2 and recommender.stats["refusals"] == {"index": 3}


def test_an_empty_current_file_is_logged_and_the_newest_good_version_served(world, tmp_path, caplog):
    root = tmp_path / "index"
    shutil.copytree(world.store / "index", root)
    index_store = IndexStore(root)
    v0 = index_store.current_version()
    (root / "CURRENT").write_text("", encoding="utf-8")
    with (
        caplog.at_level(logging.WARNING, logger="recsys.serving"),
        Recommender.load(root, world.data, encoder=world.encoders["text"], ranker=None) as recommender,
    ):
        status = recommender.status()
        assert status["index_version"] == v0 and status["index_note"].startswith("CURRENT is empty")
        assert recommender.recommend(text="garden", k=2).index_version == v0
    assert any("is empty" in record.getMessage() and str(root) in record.getMessage() for record in caplog.records)


def test_a_rewritten_dataset_is_reloaded_and_stale_vectors_are_re_encoded(world, tmp_path, truth):
    data = tmp_path / "data"
    world.dataset.save(data)
    user = sorted(truth["cached"])[3]
    with Recommender.load(world.store, data, encoder=world.encoders["text"], ranker=None) as recommender:
        assert recommender.recommend(user_id=user).user_vector == "cached"
        history = _newest_first(world.dataset, user)
        new_item = next(i for i in truth["ids"] if i not in history)
        inter = world.dataset.interactions
        later = pl.lit(inter["ts"].max() + timedelta(hours=1)).cast(inter["ts"].dtype)
        extra = inter.head(1).with_columns(
            pl.lit(user).alias("user_id"), pl.lit(new_item).alias("item_id"), later.alias("ts")
        )
        Dataset(
            world.dataset.items,
            pl.concat([inter, extra]),
            name=world.dataset.name,
            text_template=world.dataset.text_template,
        ).save(data)
        events = recommender.refresh()
        assert any(e.startswith("dataset") for e in events)
        result = recommender.recommend(user_id=user, k=6)
        newest = [new_item, *history]
        expected = truth["bundle"].user_vectors_text(
            [[truth["texts"][i] for i in newest[: truth["bundle"].history_cap]]]
        )[0]
        assert result.user_vector == "encoded" and new_item not in result.item_ids
        _assert_top_k(result, truth, expected, 6, exclude=newest)


def test_an_alias_moving_to_a_new_encoder_waits_for_its_index(world, tmp_path, mlflow_settings):
    settings = mlflow_settings
    first = log_encoder_run(world.encoders["text"], settings, alias="champion")
    store = tmp_path / "store"
    run_nightly(world.data, "champion", store, embed_config(), settings=settings)
    with Recommender.load(store, world.data, encoder="champion", ranker=None, settings=settings) as recommender:
        assert recommender.encoder_version == f"recsys-encoder/{first.version}"
        served = recommender.index_version
        # A new registered version (same files, new version number) takes the alias.
        configure_mlflow(settings)
        source = mlflow.MlflowClient().get_model_version("recsys-encoder", str(first.version)).source
        second = mlflow.register_model(source, "recsys-encoder")
        set_alias("recsys-encoder", second.version, "champion", settings)
        assert recommender.refresh() == [
            f"encoder recsys-encoder/{second.version} loaded; waiting for an index built with it"
        ]
        status = recommender.status()
        assert status["pending_encoder"] == f"recsys-encoder/{second.version}"
        assert (status["encoder_version"], status["index_version"]) == (f"recsys-encoder/{first.version}", served)

        # A service started now serves the pair the CURRENT index was built with, and waits the same way.
        with Recommender.load(store, world.data, encoder="champion", ranker=None, settings=settings) as late:
            assert late.encoder_version == f"recsys-encoder/{first.version}"
            assert late.status()["pending_encoder"] == f"recsys-encoder/{second.version}"

        report = run_nightly(world.data, "champion", store, embed_config(), settings=settings)
        assert report.encoder_version == f"recsys-encoder/{second.version}"
        recommender.refresh()
        status = recommender.status()
        assert (status["encoder_version"], status["index_version"], status["pending_encoder"]) == (
            f"recsys-encoder/{second.version}",
            report.index_version,
            None,
        )
        user = sorted(recommender.state.users.row_of)[0]
        result = recommender.recommend(user_id=user)
        assert result.encoder_version == f"recsys-encoder/{second.version}" and result.user_vector == "cached"


def test_a_warm_up_runs_every_query_kind_and_counts_nothing(rec):
    before = {"user_vector": dict(rec.stats["user_vector"]), "cold_start": rec.stats["cold_start"]}
    warm = rec.warm_up()
    assert rec.warmed_up and rec.status()["warm_up"] == warm
    assert set(warm["queries"]) == {"history", "text", "user", "cold", "similar"} and not warm["skipped"]
    assert {"encode", "search", "total"} <= set(warm["stages"])
    assert {"user_vector": rec.stats["user_vector"], "cold_start": rec.stats["cold_start"]} == before


def test_import_recsys_stays_light_and_exposes_the_facade():
    code = (
        "import sys, recsys; cls = recsys.Recommender; "
        "heavy = [m for m in ('torch', 'transformers', 'faiss', 'mlflow', 'fastapi', 'lightgbm') "
        "if m in sys.modules]; print(cls.__name__, heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "Recommender []"


def test_a_host_application_can_serve_its_own_recommender_as_an_asgi_app(rec, truth):
    user = sorted(truth["cached"])[0]
    app = create_app(rec, api_keys=["host-key"], poll=False, close_on_shutdown=False)
    with TestClient(app) as client:
        assert client.get("/readyz").json()["warm_up"]["queries"]  # warmed before its first request
        response = client.post("/v1/recommend", json={"user_id": user, "k": 3}, headers={"X-API-Key": "host-key"})
        assert response.status_code == 200
        assert response.json() == {
            **rec.recommend(user_id=user, k=3).to_dict(),
            "timings_ms": response.json()["timings_ms"],
        }
        assert client.post("/v1/recommend", json={"user_id": user}).status_code == 401
        assert client.get("/readyz").json()["index_version"] == rec.index_version
