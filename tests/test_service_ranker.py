"""The service's ranker path end to end: registered encoder, nightly index, registered LightGBM ranker, over HTTP.

Everything is real and tiny: a synthetic dataset, a tiny random-BERT encoder (frozen text tower)
registered as `recsys-encoder` champion in a SQLite MLflow store under tmp_path, an index published
by the nightly job from that alias, and rankers trained by `jobs.train_ranker` on the *served*
encoder (so their `encoder_version` is `recsys-encoder/1`) and registered by `jobs.log_ranker`.
`recsys serve --ranker champion` runs as a subprocess. Checked over HTTP: ranked mode and versions
in /readyz; ranked, unseen items for known users; SHAP contributions and a `because_of` history item
with `explain`; cold-start popular fallbacks; category filters; a hot swap of the ranker alias under
load with zero failed requests and no restart; a ranker trained on another encoder refused (the
previous ranker keeps serving; a service started on it serves retrieval order); and a new encoder
plus a ranker trained on it rolled out together when the nightly job publishes that encoder's index.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import mlflow
import numpy as np
import polars as pl
import pytest
import torch

from encoders.registry import resolve_encoder
from encoders.testing import make_tiny_bert
from jobs.log_encoder import log_encoder_run
from jobs.log_ranker import log_ranker_run
from jobs.nightly_embed import run_nightly
from jobs.testing import embed_config, train_tiny_encoder
from jobs.train_ranker import train_ranker
from ranking import load_ranker
from ranking.candidates import CandidateConfig
from ranking.features import FEATURE_NAMES
from ranking.training import RankerConfig
from recsys.config import Settings, load_settings
from recsys.data.dataset import Dataset
from recsys.data.synthetic import generate
from recsys.embedding_store import read_user_vectors
from recsys.errors import ConfigError
from recsys.index import IndexStore
from recsys.registry import configure_mlflow, set_alias
from recsys.serving import ServingConfig
from recsys.serving.catalog import Catalog
from recsys.serving.models import with_content
from recsys.serving.state import ItemVectors
from recsys.serving.testing import ServerProcess, wait_for_readyz
from recsys.splits import Split, leave_last_out

if TYPE_CHECKING:
    from encoders.registry import LoadedEncoder

SMALL = RankerConfig(
    candidates=CandidateConfig(retrieval_k=40, covisit_k=20, popular_k=10),
    min_data_in_leaf=5,
    max_rounds=60,
    early_stopping_rounds=20,
    extra_cuts=3,
    covisit_window=5,
    threads=1,
)
SOURCES = {"retrieval", "covisit", "popular", "text"}
UNKNOWN_USER = "nobody-we-know"


@dataclass
class RankerWorld:
    root: Path
    data: Path
    store: Path
    encoder_folder: Path
    dataset: Dataset
    split: Split
    settings: Settings
    env: dict[str, str]
    served_encoder: LoadedEncoder | None = None

    def history(self, user: str) -> set[str]:
        log = self.dataset.interactions
        return set(log.filter(pl.col("user_id") == user)["item_id"].to_list())

    def users(self, n: int) -> list[str]:
        """The `n` users with the longest histories (ties by id), so rankings have something to work with."""
        counts = (
            self.dataset.interactions["user_id"].value_counts().sort(["count", "user_id"], descending=[True, False])
        )
        return counts["user_id"].head(n).to_list()

    def category_of(self) -> dict[str, str]:
        items = self.dataset.items
        return dict(zip(items["item_id"].to_list(), items["category"].to_list(), strict=True))

    def train(self, name: str, encoder: LoadedEncoder | None, config: RankerConfig = SMALL) -> Path:
        out = self.root / name
        train_ranker(self.dataset, self.split, encoder, out, config, progress=False)
        return out

    def register(self, run: Path, alias: str = "champion"):
        return log_ranker_run(run, settings=self.settings, alias=alias)

    def server(self, log_name: str) -> ServerProcess:
        return ServerProcess(
            self.store, self.data, "champion", self.root / log_name, ranker="champion", poll_interval=0.2, env=self.env
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("service-ranker")
    home = root / "home"
    env = {
        "RECSYS_HOME": str(home),
        "RECSYS_PREFIX": "recsys",
        "MLFLOW_TRACKING_URI": "",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        dataset = generate(n_interactions=2000, n_users=60, n_items=120, seed=3)
        dataset.save(root / "data")
        bert = make_tiny_bert(root / "bert", seed=0)
        encoder_folder = train_tiny_encoder(dataset, root / "encoder", bert, "text")
        settings = load_settings(home=home, prefix="recsys", tracking_uri="")
        registered = log_encoder_run(encoder_folder, settings, alias="champion")
        assert registered.version == 1
        store = root / "store"
        run_nightly(root / "data", "champion", store, embed_config(), settings=settings)
        # The ranker learns from the interest scores of the very encoder the service will run.
        served = resolve_encoder("champion", settings=settings, cache_dir=store / "encoders", device="cpu")
        assert served.version == "recsys-encoder/1"
        world = RankerWorld(
            root,
            root / "data",
            store,
            encoder_folder,
            dataset,
            leave_last_out(dataset.interactions),
            settings,
            env,
            served,
        )
        assert world.register(world.train("ranker-1", served)).version == 1
        yield world


@pytest.fixture(scope="module")
def server(world):
    with world.server("server.log") as process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def _post(client: httpx.Client, body: dict) -> dict:
    response = client.post("/v1/recommend", json=body)
    assert response.status_code == 200, response.text
    return response.json()


# ------------------------------------------------------------------------------------ serving
def test_readyz_reports_the_registered_ranker_in_ranked_mode(client):
    status = client.get("/readyz").json()
    assert status["ready"] is True
    assert (status["ranker"], status["mode"]) == ("recsys-ranker/1", "ranked")
    assert status["encoder_version"] == "recsys-encoder/1" and status["encoder_ref"] == "champion"
    assert status["ranker_note"] is None and status["refused"] == []
    # Readiness came after a warm-up that went through the ranker (and its explanations) too.
    assert "rank" in status["warm_up"]["stages"] and not status["warm_up"]["skipped"]


def test_a_free_text_query_is_served_in_retrieval_order_even_with_a_ranker(client, world):
    """Semantic search: the history-trained ranker would reorder by popularity and co-visitation."""
    body = _post(client, {"text": world.dataset.items["title"][0], "k": 5})
    assert body["mode"] == "retrieval" and body["items"]
    assert {item["source"] for item in body["items"]} == {"retrieval"}
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_known_users_get_ranked_items_they_have_not_seen(client, world):
    store = IndexStore(world.store / "index")
    cached = read_user_vectors(store.root, store.metadata(store.current_version()))
    vector_of = dict(zip(cached["user_id"].to_list(), np.stack(cached["vector"].to_numpy()), strict=True))
    index = store.load(store.current_version())[0]
    ids = index.item_ids.tolist()
    item_vectors = index.reconstruct(ids)
    reordered = 0
    users = [u for u in world.users(12) if u in vector_of][:4]
    assert len(users) >= 2
    for user in users:
        body = _post(client, {"user_id": user, "k": 10})
        assert (body["mode"], body["ranker_version"], body["cold_start"]) == ("ranked", "recsys-ranker/1", False)
        assert body["user_vector"] == "cached" and body["timings_ms"]["rank"] > 0
        items = body["items"]
        got = [item["item_id"] for item in items]
        assert len(got) == 10 == len(set(got)) and [item["rank"] for item in items] == list(range(1, 11))
        assert {item["source"] for item in items} <= SOURCES
        assert not set(got) & world.history(user)
        scores = [item["score"] for item in items]
        assert scores == sorted(scores, reverse=True)  # the ranker's order
        assert all(item["explanation"] is None for item in items)
        # Retrieval alone (brute force over the index with the user's cached vector, history excluded):
        seen = world.history(user)
        interest = item_vectors @ vector_of[user]
        retrieval = [ids[j] for j in np.argsort(-interest, kind="stable") if ids[j] not in seen][:10]
        reordered += got != retrieval
    assert reordered  # the ranker really re-orders (and adds co-visitation/popular candidates)


def test_explain_gives_feature_contributions_and_a_history_item(client, world):
    user = world.users(1)[0]
    plain = _post(client, {"user_id": user, "k": 6})
    body = _post(client, {"user_id": user, "k": 6, "explain": True})
    assert body["mode"] == "ranked"
    assert [i["item_id"] for i in body["items"]] == [i["item_id"] for i in plain["items"]]
    history = world.history(user)
    for item in body["items"]:
        why = item["explanation"]
        contributions = why["contributions"]
        assert 1 <= len(contributions) <= 5 and set(contributions) <= set(FEATURE_NAMES)
        assert all(isinstance(value, float) and math.isfinite(value) for value in contributions.values())
        magnitudes = [abs(value) for value in contributions.values()]
        assert magnitudes == sorted(magnitudes, reverse=True)  # the strongest first
        assert math.isfinite(why["bias"])
        assert why["because_of"] in history


def _popularity_keys(world: RankerWorld, days: int) -> dict[str, tuple[int, int]]:
    """(interactions in the `days` before the log's end, all-time interactions) per item, recomputed here."""
    log = world.dataset.interactions.with_columns(sec=pl.col("ts").dt.epoch("s"))
    stamps = [log["sec"].max()]
    if world.dataset.impressions is not None:
        stamps.append(world.dataset.impressions.select(pl.col("ts").dt.epoch("s").max()).item())
    end = int(max(stamps)) + 1
    start = end - int(timedelta(days=days).total_seconds())
    counts = log.group_by("item_id").agg(recent=(pl.col("sec") >= start).sum(), ever=pl.len())
    return {
        i: (int(r), int(e))
        for i, r, e in zip(
            counts["item_id"].to_list(), counts["recent"].to_list(), counts["ever"].to_list(), strict=True
        )
    }


def test_an_unknown_user_gets_popular_fallbacks_flagged_cold_start(client, world):
    body = _post(client, {"user_id": UNKNOWN_USER, "k": 6, "explain": True})
    assert body["cold_start"] is True and body["user_vector"] is None
    items = body["items"]
    assert len(items) == 6 and {item["source"] for item in items} == {"popular"}
    # The ranker orders its own popular fallbacks: the `popular_k` most popular items of the last
    # `popular_days` (all-time count breaking ties). The mode says what the items are (popularity
    # fallbacks, not a personalised list); `ranker_version` says who ordered them.
    assert (body["mode"], body["ranker_version"]) == ("popular", "recsys-ranker/1")
    keys = _popularity_keys(world, SMALL.candidates.popular_days)
    threshold = sorted(keys.values(), reverse=True)[SMALL.candidates.popular_k - 1]
    assert all(keys[item["item_id"]] >= threshold for item in items)
    assert all(item["explanation"]["because_of"] is None for item in items)  # no history to point at


def test_a_category_filter_is_honoured(client, world):
    category_of = world.category_of()
    user = world.users(1)[0]
    recent = world.dataset.interactions.filter(pl.col("user_id") == user).sort("ts")["item_id"][-1]
    category = category_of[recent]
    in_category = {i for i, c in category_of.items() if c == category}
    history = world.history(user)
    for body in (
        {"user_id": user, "k": 5, "filters": {"category": category}},
        {"user_id": user, "k": 5, "filters": {"category": category.upper()}, "explain": True},
    ):
        result = _post(client, body)
        assert result["mode"] == "ranked" and result["items"]
        got = [item["item_id"] for item in result["items"]]
        assert set(got) <= in_category and not set(got) & history
        assert len(got) == min(5, len(in_category - history))
    # Cold start under a filter: the ranker's popular fallbacks are the overall top few, so for most
    # categories it has fewer than k (or none); catalog popularity tops the list up, unscored.
    for name in sorted(set(category_of.values())):
        members = {i for i, c in category_of.items() if c == name}
        cold = _post(client, {"user_id": UNKNOWN_USER, "k": 5, "filters": {"category": name}})
        assert cold["cold_start"] is True and cold["mode"] in ("ranked", "popular")
        got = [item["item_id"] for item in cold["items"]]
        assert len(got) == len(set(got)) == min(5, len(members)) and set(got) <= members, (name, cold)
        assert [item["rank"] for item in cold["items"]] == list(range(1, len(got) + 1))
        if cold["mode"] == "ranked":
            scored = [item["score"] for item in cold["items"] if item["score"] is not None]
            assert scored and scored == sorted(scored, reverse=True)
            assert all(item["score"] is None for item in cold["items"][len(scored) :])  # top-ups come last
    other = next(c for c in sorted(set(category_of.values())) if c != category)
    both = _post(client, {"user_id": user, "k": 8, "filters": {"category": [category, other]}})
    assert {category_of[item["item_id"]] for item in both["items"]} <= {category, other}


def test_the_rankers_item_vectors_are_the_index_vectors_and_unknown_items_are_missing(world):
    """The ranker's vector lookup (a dense copy, or per-request decoding for big indexes) equals the index."""
    store = IndexStore(world.store / "index")
    index = store.load(store.current_version())[0]
    ids = index.item_ids.tolist()
    asked = [ids[5], "not-in-the-index", ids[0], ids[5], ids[-1]]
    expected = index.reconstruct([ids[5], ids[0], ids[5], ids[-1]])
    dense, decoded = ItemVectors(index).warm(), ItemVectors(index, max_bytes=0).warm()
    assert dense.dense and not decoded.dense
    for lookup in (dense.for_request(), decoded.for_request()):
        got = lookup(asked)
        assert got.shape == (5, index.dim) and got.dtype == np.float32
        assert np.isnan(got[1]).all()
        np.testing.assert_array_equal(got[[0, 2, 3, 4]], expected)
        np.testing.assert_array_equal(lookup(ids[:3]), index.reconstruct(ids[:3]))
    # The copy aligned to the ranker's own rows: same vectors, NaN for an item the index lacks, built once.
    ranker_rows = [ids[2], "not-in-the-index", ids[0]]
    aligned = dense.aligned(ranker_rows)
    assert np.isnan(aligned[1]).all()
    np.testing.assert_array_equal(aligned[[0, 2]], index.reconstruct([ids[2], ids[0]]))
    assert dense.aligned(ranker_rows) is aligned and decoded.aligned(ranker_rows) is None
    for bad in ({"rank_concurrency": 0}, {"keep_alive": 0}, {"rank_concurrency": 1.5}):
        with pytest.raises(ConfigError):
            ServingConfig(**bad)


def test_a_served_ranker_gets_the_item_content_it_was_trained_with(world):
    """Training attached the encoder's item text vectors (`ranking.content`); the service gives the loaded
    ranker the same ones, read from the nightly store (or encoded when the store lacks them): otherwise it
    would serve NaN text similarities and no text candidates, a train/serve skew."""
    trained = np.load(world.root / "ranker-1" / "item_text_vectors.npy")
    expected = trained / np.linalg.norm(trained, axis=1, keepdims=True)
    catalog = Catalog(world.dataset)
    for embeddings in (world.store / "embeddings", None):
        ranker = load_ranker(world.root / "ranker-1", dataset=world.dataset)
        assert ranker.meta["config"]["item_content"] and ranker.context.content is None
        with_content(ranker, world.served_encoder, catalog, embeddings)
        content = ranker.context.content
        assert content is not None
        np.testing.assert_allclose(content.vectors, expected, atol=2e-3)  # the store may keep fp16
        with_content(ranker, world.served_encoder, catalog, embeddings)
        assert ranker.context.content is content  # once per loaded ranker
    plain = load_ranker(world.root / "ranker-1", dataset=world.dataset)
    plain.meta["config"]["item_content"] = False
    with_content(plain, world.served_encoder, catalog, world.store / "embeddings")
    assert plain.context.content is None  # a ranker trained without item content is left alone


# ------------------------------------------------------------------------------------ hot swap
def test_moving_the_alias_swaps_the_ranker_under_load_without_failures_or_restart(world, server, client):
    pid = server.process.pid
    users = world.users(2)
    first = client.get("/readyz").json()
    assert first["ranker"] == "recsys-ranker/1"
    seen: list[list[tuple[int | None, str | None, str | None]]] = [[], []]
    stop = threading.Event()

    def hammer(slot: int) -> None:
        deadline = time.monotonic() + 180
        with httpx.Client(base_url=server.url, timeout=60) as own:
            for _ in range(20_000):  # bounded: by count, by time, and by `stop`
                if stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    response = own.post("/v1/recommend", json={"user_id": users[slot], "k": 5})
                    body = response.json()
                    seen[slot].append((response.status_code, body.get("ranker_version"), body.get("mode")))
                except httpx.HTTPError as exc:
                    seen[slot].append((None, repr(exc), None))

    workers = [threading.Thread(target=hammer, args=(slot,)) for slot in (0, 1)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)
        second = world.register(
            world.train("ranker-2", world.served_encoder, replace(SMALL, num_leaves=7, seed=1, feature_fraction=0.6))
        )
        assert second.version == 2
        status = wait_for_readyz(client, lambda s: s["ranker"] == "recsys-ranker/2")
        counts = [len(responses) for responses in seen]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(len(r) < c + 10 for r, c in zip(seen, counts, strict=True)):
            time.sleep(0.05)  # keep the load on for a few requests served by the new version
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    assert server.process.poll() is None and server.process.pid == pid  # no restart
    assert status["mode"] == "ranked" and status["swaps"] >= first["swaps"] + 1 and status["refused"] == []
    order = ["recsys-ranker/1", "recsys-ranker/2"]
    for responses in seen:
        assert len(responses) >= 20
        failed = [r for r in responses if r[0] != 200]
        assert not failed, failed[:5]
        assert {mode for _, _, mode in responses} == {"ranked"}
        positions = [order.index(version) for _, version, _ in responses]
        assert positions == sorted(positions)  # once on version 2, never back
        assert positions[0] == 0 and positions[-1] == 1
    after = _post(client, {"user_id": users[0], "k": 5, "explain": True})
    assert after["ranker_version"] == "recsys-ranker/2"
    assert all(set(i["explanation"]["contributions"]) <= set(FEATURE_NAMES) for i in after["items"])


def test_a_ranker_trained_on_another_encoder_is_refused(world, server, client):
    before = client.get("/readyz").json()
    serving = before["ranker"]
    assert serving is not None and before["mode"] == "ranked"
    # Same files, but loaded from the folder: another encoder version, so other interest scores.
    other = resolve_encoder(world.encoder_folder, device="cpu")
    assert other.version != "recsys-encoder/1"
    foreign = world.register(world.train("ranker-foreign", other))
    version = f"recsys-ranker/{foreign.version}"

    def refused(status: dict) -> list[dict]:
        return [r for r in status["refused"] if r["what"] == "ranker" and r["version"] == version]

    status = wait_for_readyz(client, lambda s: bool(refused(s)))
    (record,) = refused(status)
    assert other.version in record["reason"] and "recsys-encoder/1" in record["reason"]
    # Refused like a broken index: the ranker that was serving keeps serving.
    assert (status["ranker"], status["mode"]) == (serving, "ranked")
    assert version in status["ranker_note"] and f"{serving} keeps serving" in status["ranker_note"]
    user = world.users(1)[0]
    body = _post(client, {"user_id": user, "k": 5})
    assert (body["mode"], body["ranker_version"]) == ("ranked", serving)
    time.sleep(0.5)  # more polls: refused once, not again on every check
    assert len(refused(client.get("/readyz").json())) == 1

    # A service started while the alias names it serves retrieval order, and says why.
    with world.server("server-foreign.log") as fresh, httpx.Client(base_url=fresh.url, timeout=60) as http:
        status = http.get("/readyz").json()
        assert (status["ranker"], status["mode"]) == (None, "retrieval")
        assert version in status["ranker_note"] and "serving retrieval order" in status["ranker_note"]
        assert len(refused(status)) == 1
        response = http.post("/v1/recommend", json={"user_id": user, "k": 5})
        assert response.status_code == 200
        body = response.json()
        assert (body["mode"], body["ranker_version"], body["cold_start"]) == ("retrieval", None, False)
        assert {item["source"] for item in body["items"]} == {"retrieval"}
        assert not {item["item_id"] for item in body["items"]} & world.history(user)

    # Both servers downloaded registry rankers; their logs stay one JSON object a line, and say what happened.
    for process, outcome in ((server, f"{serving} keeps serving"), (fresh, "serving retrieval order")):
        lines = [json.loads(raw) for raw in process.log_text().splitlines() if raw.strip()]
        warnings = [
            line["msg"] for line in lines if line["level"] == "warning" and f"refused ranker {version}" in line["msg"]
        ]
        assert len(warnings) == 1 and warnings[0].endswith(outcome), warnings


def test_a_new_encoder_and_a_ranker_trained_on_it_roll_out_together(world, server, client):
    """The encoder alias moves (it waits for its index); a ranker trained on it waits too (not refused); the
    index built with the new encoder swaps both in."""
    serving = client.get("/readyz").json()["ranker"]
    assert serving is not None
    user = world.users(1)[0]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in world.env.items():
            patch.setenv(key, value)
        configure_mlflow(world.settings)
        source = mlflow.MlflowClient().get_model_version("recsys-encoder", "1").source
        registered = mlflow.register_model(source, "recsys-encoder")  # same files, a new version
        set_alias("recsys-encoder", registered.version, "champion", world.settings)
        encoder_version = f"recsys-encoder/{registered.version}"
        wait_for_readyz(client, lambda s: s["pending_encoder"] == encoder_version)
        new_encoder = resolve_encoder(
            "champion", settings=world.settings, cache_dir=world.store / "encoders", device="cpu"
        )
        assert new_encoder.version == encoder_version
        ranker = world.register(world.train("ranker-next", new_encoder))
        version = f"recsys-ranker/{ranker.version}"

        status = wait_for_readyz(client, lambda s: version in (s["ranker_note"] or ""))
        assert "waits for an index built with encoder " + encoder_version in status["ranker_note"]
        assert (status["ranker"], status["encoder_version"]) == (serving, "recsys-encoder/1")
        assert not [r for r in status["refused"] if r["version"] == version]
        body = _post(client, {"user_id": user, "k": 5})
        assert (body["ranker_version"], body["encoder_version"]) == (serving, "recsys-encoder/1")

        report = run_nightly(world.data, "champion", world.store, embed_config(), settings=world.settings)
        assert report.encoder_version == encoder_version
    status = wait_for_readyz(client, lambda s: s["index_version"] == report.index_version and s["ranker"] == version)
    assert (status["encoder_version"], status["mode"], status["pending_encoder"]) == (encoder_version, "ranked", None)
    assert status["ranker_note"] is None and not [r for r in status["refused"] if r["version"] == version]
    body = _post(client, {"user_id": user, "k": 5, "explain": True})
    assert (body["mode"], body["ranker_version"], body["encoder_version"]) == ("ranked", version, encoder_version)
    assert body["index_version"] == report.index_version
    assert all(item["explanation"]["because_of"] in world.history(user) for item in body["items"])
