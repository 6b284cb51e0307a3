"""`POST /v1/events` over HTTP against a real `recsys serve` subprocess (uvicorn on loopback).

A posted event changes the user's next recommendations (the item is excluded as seen and the
history is re-encoded); bad batches are 422s naming the field, unknown items are reported per
event, retries are duplicates; and a kill -9 in the middle of a stream of events loses none that
was acknowledged: every acknowledged event_id is in the SQLite log, and the restarted service has
them in the users' histories.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs.testing import build_world
from recsys.embedding_store import read_user_vectors
from recsys.index import IndexStore
from recsys.serving.testing import ServerProcess


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("events-http-world"))


def _server(world, folder, name: str = "server") -> ServerProcess:
    return ServerProcess(
        world.store,
        world.data,
        str(world.encoders["text"]),
        folder / f"{name}.log",
        extra_args=("--event-log", str(folder / "events.sqlite")),
        env={"RECSYS_HOME": str(folder / "home")},
    )


@pytest.fixture(scope="module")
def client(world, tmp_path_factory):
    server = _server(world, tmp_path_factory.mktemp("events-http"))
    with server as running, httpx.Client(base_url=running.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def cached_users(world):
    store = IndexStore(world.store / "index")
    return read_user_vectors(store.root, store.metadata(store.current_version()))["user_id"].to_list()


def _top(client: httpx.Client, user: str, k: int = 10) -> dict:
    response = client.post("/v1/recommend", json={"user_id": user, "k": k})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_posted_event_changes_the_users_next_recommendations(client, cached_users):
    user = cached_users[0]
    before = _top(client, user)
    assert before["user_vector"] == "cached"
    clicked = before["items"][0]["item_id"]
    event = {"event_id": "click-1", "user_id": user, "item_id": clicked, "event": "click"}
    response = client.post("/v1/events", json={"events": [event, {**event, "event_id": "x", "item_id": "nope"}]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["unknown_items"]) == (1, 0, 1)
    assert [e["status"] for e in body["events"]] == ["accepted", "unknown_item"] and body["commit_ms"] > 0
    after = _top(client, user)
    ids = [item["item_id"] for item in after["items"]]
    assert clicked not in ids and ids != [item["item_id"] for item in before["items"]]
    assert after["user_vector"] == "encoded"
    retry = client.post("/v1/events", json={"events": [event]}).json()
    assert (retry["accepted"], retry["duplicates"]) == (0, 1)
    status = client.get("/readyz").json()
    assert status["live_events"] == 1 and status["live_users"] == 1
    counted = {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "recsys_events_total"
    }
    assert counted == {"accepted": 1, "duplicate": 1, "unknown_item": 1}  # Prometheus sees what the bodies said


def test_bad_event_batches_are_422s_naming_the_field(client, world):
    item = world.dataset.items["item_id"][0]
    good = {"event_id": "b", "user_id": "u", "item_id": item}
    cases = {
        "events": {"events": []},
        "events.0.item_id": {"events": [{"event_id": "b", "user_id": "u"}]},
        "events.1.weight": {"events": [good, {**good, "weight": "heavy"}]},
        "events.0.colour": {"events": [{**good, "colour": "red"}]},
        "events[0].ts": {"events": [{**good, "ts": "2999-01-01T00:00:00Z"}]},
    }
    for field, body in cases.items():
        response = client.post("/v1/events", json=body)
        assert response.status_code == 422, (field, response.text)
        assert response.json()["message"].startswith(f"{field}:"), response.json()["message"]
    many = {"events": [{"event_id": str(n), "user_id": "u", "item_id": item} for n in range(1001)]}
    response = client.post("/v1/events", json=many)
    assert response.status_code == 422 and "1000" in response.json()["message"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert schema["EventsRequest"]["properties"]["events"]["maxItems"] == 1000
    assert client.get("/readyz").json()["live_events"] <= 1  # nothing of the refused batches was stored


def test_kill_9_mid_stream_loses_no_acknowledged_event(world, tmp_path):
    items = world.dataset.items["item_id"].to_list()
    users = [f"stream-{n}" for n in range(4)]
    acknowledged: list[tuple[str, str, str]] = []  # (event_id, user, item)
    enough = threading.Event()
    server = _server(world, tmp_path, "first").start()

    def stream() -> None:
        n = 0
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while True:
                batch = [
                    {"event_id": uuid.uuid4().hex, "user_id": users[j % 4], "item_id": items[(n + j) % 40]}
                    for j in range(10)
                ]
                n += 10
                try:
                    response = http.post("/v1/events", json={"events": batch})
                except httpx.HTTPError:
                    return  # the server is gone
                assert response.status_code == 200, response.text
                acknowledged.extend((e["event_id"], e["user_id"], e["item_id"]) for e in batch)
                if len(acknowledged) >= 300:
                    enough.set()

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        assert enough.wait(120), "the stream did not get going"
        server.process.kill()  # SIGKILL while batches are in flight
        server.process.wait()
    finally:
        thread.join(60)
        server.stop()
    assert len(acknowledged) >= 300
    with sqlite3.connect(tmp_path / "events.sqlite") as db:
        logged = {row[0] for row in db.execute("SELECT event_id FROM events")}
    lost = {event_id for event_id, _, _ in acknowledged} - logged
    assert not lost, f"{len(lost)} acknowledged events are not in the log"

    with _server(world, tmp_path, "second") as restarted, httpx.Client(base_url=restarted.url, timeout=60) as http:
        assert http.get("/readyz").json()["live_events"] == len(logged)
        for user in users:
            seen = {item for _, who, item in acknowledged if who == user}
            result = _top(http, user, k=len(items))
            assert not result["cold_start"] and result["user_vector"] == "encoded"
            assert result["items"] and not seen & {item["item_id"] for item in result["items"]}  # excluded as seen
