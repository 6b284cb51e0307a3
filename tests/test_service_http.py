"""The HTTP service as a client sees it: a real `recsys serve` subprocess on loopback, called with httpx.

Bad input of every kind gets its documented 4xx and the server stays healthy; API keys; the body
limit; Prometheus counters that move by exactly the requests made; request ids; JSON logs that
never contain a key; a schemathesis run over `/openapi.json` that finds no 5xx; and hot swap under
load (a new index is picked up, a corrupt one and one built by another encoder are refused, zero
requests fail).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import threading
import time

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.configuration import set_hypothesis_home_dir
from prometheus_client.parser import text_string_to_metric_families
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jobs.testing import build_world
from recsys.embedding_store import read_user_vectors
from recsys.index import IndexStore, VectorIndex
from recsys.serving.testing import ServerProcess, wait_for_readyz

KEY = f"key-{secrets.token_hex(12)}"
SECOND_KEY = f"other-{secrets.token_hex(12)}"
WRONG_KEY = f"wrong-{secrets.token_hex(12)}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("http-world"))


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("http-server")
    with ServerProcess(world.store, world.data, str(world.encoders["text"]), folder / "server.log",
                       api_keys=(KEY, SECOND_KEY), env={"RECSYS_HOME": str(folder / "home")}) as process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def users(world):
    store = IndexStore(world.store / "index")
    return read_user_vectors(store.root, store.metadata(store.current_version()))["user_id"].to_list()


def _post(client: httpx.Client, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    return client.post("/v1/recommend", content=content, headers=headers)


def _metrics(client: httpx.Client) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


# --------------------------------------------------------------------------------- bad input
BAD_INPUTS = [
    ("malformed JSON", b'{"user_id": ', 422, "not valid JSON"),
    ("not an object", b"[1, 2]", 422, "must be a JSON object"),
    ("empty body", b"", 422, "JSON body is required"),
    ("invalid UTF-8", b'{"text": "\xff\xfe"}', 400, "parsing the body"),
    ("k as a string", {"user_id": "u1", "k": "10"}, 422, "k:"),
    ("user_id as a number", {"user_id": 5}, 422, "user_id:"),
    ("exclude_seen as a string", {"user_id": "u1", "exclude_seen": "yes"}, 422, "exclude_seen:"),
    ("item_ids as a string", {"item_ids": "i000001"}, 422, "item_ids:"),
    ("negative k", {"user_id": "u1", "k": -1}, 422, "k: Input should be greater than or equal to 1"),
    ("zero k", {"user_id": "u1", "k": 0}, 422, "k:"),
    ("huge k", {"user_id": "u1", "k": 10**12}, 422, "k: Input should be less than or equal to 1000"),
    ("fractional k", {"user_id": "u1", "k": 2.5}, 422, "k:"),
    ("empty history", {"item_ids": []}, 422, "item_ids:"),
    ("only unknown item ids", {"item_ids": ["nope-1", "nope-2"]}, 422, "none of the 2 item ids"),
    ("history over 500 ids", {"item_ids": ["i000001"] * 501}, 422, "item_ids:"),
    ("empty item id", {"item_ids": [""]}, 422, "item_ids.0:"),
    ("text over 2000 characters", {"text": "a" * 2001}, 422, "text:"),
    ("empty text", {"text": ""}, 422, "text:"),
    ("two queries", {"user_id": "u1", "text": "x"}, 422, "exactly one of user_id, item_ids or text"),
    ("no query", {"k": 5}, 422, "exactly one of user_id, item_ids or text (got none)"),
    ("unknown field", {"user_id": "u1", "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
    ("unknown filter column", {"text": "x", "filters": {"colour": "red"}}, 422, "filters.colour: cannot filter"),
    ("lone surrogate in text", b'{"text": "abc \\ud800 def"}', 422, "text:"),
    ("lone surrogate in user_id", b'{"user_id": "\\udfff"}', 422, "user_id:"),
    ("lone surrogate in an item id", b'{"item_ids": ["\\ud83d"]}', 422, "item_ids.0:"),
    ("lone surrogate in a filter key", b'{"text": "x", "filters": {"\\ud800": "a"}}', 422, "filters"),
]


@pytest.mark.parametrize(("body", "status", "message"), [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gets_its_documented_status_and_names_the_field(client, body, status, message):
    response = _post(client, body)
    assert response.status_code == status, response.text
    payload = response.json()
    text = payload.get("message") or payload["detail"]
    assert message in text, text
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    if status == 422:
        assert payload["request_id"] == response.headers["x-request-id"]
        assert all({"loc", "msg", "type"} <= set(issue) for issue in payload["detail"])


@pytest.mark.parametrize("text", ["nul \u0000 inside", "rtl \u200f\u202eمرحبا\u202c marks", "emoji 🎬🍿👩‍👩‍👧",
                                  "combining e\u0301\u0301\u0301", "\ufeffbom and \ufffd replacement", " "])
def test_odd_but_valid_unicode_text_is_served(client, text):
    response = _post(client, {"text": text, "k": 3})
    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) == 3 and response.json()["query"] == "text"


def test_odd_ids_are_unknown_users_or_ignored_items(client, world):
    cold = _post(client, {"user_id": "\u0000\u200f🎬", "k": 4}).json()
    assert cold["cold_start"] is True and cold["mode"] == "popular" and len(cold["items"]) == 4
    known = world.dataset.items["item_id"].to_list()[:2]
    mixed = _post(client, {"item_ids": ["🎬", known[0], "\u0000", known[1]], "k": 4}).json()
    assert mixed["ignored_items"] == ["🎬", "\u0000"] and not set(known) & {i["item_id"] for i in mixed["items"]}


def test_the_server_stays_healthy_after_bad_input(client, users):
    before = _metrics(client)
    for _, body, _, _ in BAD_INPUTS:
        _post(client, body)
    assert client.get("/healthz").json() == {"status": "ok"}
    response = _post(client, {"user_id": users[0], "k": 5})
    assert response.status_code == 200 and response.json()["user_vector"] == "cached"
    after = _metrics(client)
    server_errors = [key for key, value in after.items()
                     if key[0] == "recsys_http_errors_total" and ("kind", "server") in key[1] and value]
    assert not server_errors
    statuses = {key: value - before.get(key, 0.0) for key, value in after.items()
                if key[0] == "recsys_http_requests_total" and ("route", "/v1/recommend") in key[1]}
    assert sum(statuses.values()) == len(BAD_INPUTS) + 1


def test_similar_items_and_unknown_items(client, world):
    anchor = world.dataset.items["item_id"][0]
    response = client.get(f"/v1/items/{anchor}/similar", params={"k": 4})
    assert response.status_code == 200
    body = response.json()
    assert body["query"] == "item" and len(body["items"]) == 4 and anchor not in [i["item_id"] for i in body["items"]]
    missing = client.get("/v1/items/no-such-item/similar")
    assert missing.status_code == 404 and "not in the served index" in missing.json()["detail"]
    assert client.get(f"/v1/items/{anchor}/similar", params={"k": 0}).status_code == 422
    assert client.get(f"/v1/items/{anchor}/similar", params={"k": "many"}).status_code == 422


# -------------------------------------------------------------------------------------- auth
def test_api_keys(server, users):
    body = {"user_id": users[0], "k": 2}
    with httpx.Client(base_url=server.url, timeout=60) as anonymous:
        missing = anonymous.post("/v1/recommend", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.post("/v1/recommend", json=body, headers={"X-API-Key": WRONG_KEY}).status_code == 403
        assert anonymous.post("/v1/recommend", json=body,
                              headers={"Authorization": f"Bearer {WRONG_KEY}"}).status_code == 403
        assert anonymous.post("/v1/recommend", json=body, headers={"Authorization": f"Basic {KEY}"}).status_code == 401
        assert anonymous.get("/v1/items/x/similar").status_code == 401
        assert anonymous.post("/v1/recommend", json=body, headers={"X-API-Key": KEY}).status_code == 200
        assert anonymous.post("/v1/recommend", json=body,
                              headers={"Authorization": f"Bearer {SECOND_KEY}"}).status_code == 200
        for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert anonymous.get(open_path).status_code == 200, open_path
        # Keys are checked before the body is read: an unauthenticated oversized body is a 401, not a 413.
        assert anonymous.post("/v1/recommend", content=b"x" * 100_000).status_code == 401


# ------------------------------------------------------------------------------- body limit
def test_bodies_over_64_kib_are_413(client):
    big = json.dumps({"text": "a" * 70_000}).encode()
    response = _post(client, big)
    assert response.status_code == 413 and "65536 bytes" in response.json()["detail"]
    assert response.headers["x-request-id"]

    def chunks():  # no Content-Length: the server has to count
        for _ in range(20):
            yield b" " * 4096

    streamed = client.post("/v1/recommend", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    under = _post(client, json.dumps({"text": "a" * 60_000}).encode())
    assert under.status_code == 422 and "text:" in under.json()["message"]  # read, then validated


# ---------------------------------------------------------------------------------- metrics
def test_metrics_count_requests_by_route_and_status_and_time_each_stage(client, users):
    before = _metrics(client)
    for _ in range(3):
        assert _post(client, {"user_id": users[1], "k": 3}).status_code == 200
    assert _post(client, {"text": "quiet garden", "k": 3}).status_code == 200
    for _ in range(2):
        assert _post(client, {"user_id": users[1], "k": 0}).status_code == 422
    after = _metrics(client)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    route = "/v1/recommend"
    assert delta("recsys_http_requests_total", route=route, method="POST", status="200") == 4
    assert delta("recsys_http_requests_total", route=route, method="POST", status="422") == 2
    assert delta("recsys_http_errors_total", route=route, kind="client") == 2
    assert delta("recsys_http_request_duration_seconds_count", route=route) == 6
    assert delta("recsys_stage_duration_seconds_count", stage="total") == 4
    assert delta("recsys_stage_duration_seconds_count", stage="search") == 4
    assert delta("recsys_stage_duration_seconds_count", stage="encode") == 1  # the text; users[1] is cached
    assert delta("recsys_user_vectors_total", origin="cached") == 3
    assert after[("recsys_ready", ())] == 1
    info = [key for key in after if key[0] == "recsys_serving_info"]
    assert len(info) == 1 and ("mode", "retrieval") in info[0][1]


# --------------------------------------------------------------------------- ids and logs
def test_request_ids_are_echoed_or_generated(client, server, users):
    sent = "req-2026.11:abc_DEF-1"
    response = _post(client, {"user_id": users[0], "k": 1}, headers={"X-Request-ID": sent})
    assert response.headers["x-request-id"] == sent
    generated = _post(client, {"user_id": users[0], "k": 1})
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    unsafe = _post(client, {"user_id": users[0], "k": 1}, headers={"X-Request-ID": "two words\tand tabs"})
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["x-request-id"])
    rejected = _post(client, {"k": 0}, headers={"X-Request-ID": "bad-one-7"})
    assert rejected.headers["x-request-id"] == "bad-one-7" and rejected.json()["request_id"] == "bad-one-7"

    lines = _log_lines(server, sent)
    assert len(lines) == 1
    line = lines[0]
    assert (line["route"], line["status"], line["method"]) == ("/v1/recommend", 200, "POST")
    assert line["latency_ms"] > 0 and {"search", "total"} <= set(line["stages_ms"])
    assert line["index_version"] and line["mode"] == "retrieval"


def _log_lines(server: ServerProcess, request_id: str, wait: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + wait
    while True:
        lines = [json.loads(raw) for raw in server.log_text().splitlines() if raw.strip()]
        found = [line for line in lines if line.get("request_id") == request_id and line["logger"] == "recsys.access"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


# ------------------------------------------------------------------------------ schemathesis
def test_schemathesis_finds_no_server_errors(server, tmp_path):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    # Left out on purpose: positive-data acceptance (which item ids and filter columns exist is data, not
    # schema, so a schema-valid request naming unknown ones is rightly a 422) and negative-data rejection
    # (the test sends a valid key with every case, which overrides the invalid key headers it generates;
    # the auth test covers those). Bad bodies are still generated and must never cause a 5xx.
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    set_hypothesis_home_dir(tmp_path / ".hypothesis")  # its caches, not in the repository
    calls = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        @settings(max_examples=120, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=schema.as_strategy(generation_mode=mode))
        def run(case):
            response = case.call_and_validate(base_url=server.url, headers={"X-API-Key": KEY}, checks=checks,
                                              timeout=60)
            calls.append(response.status_code)

        run()
    assert len(calls) >= 200 and max(calls) < 500
    assert {200, 422} <= set(calls)


# -------------------------------------------------------------------------------- hot swap
def _perturbed(index: VectorIndex, seed: int) -> VectorIndex:
    ids = index.item_ids.tolist()
    vectors = index.reconstruct(ids) + np.random.default_rng(seed).normal(0, 0.05, (len(ids), index.dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return VectorIndex.build(ids, vectors.astype(np.float32), {"kind": "flat"}, encoder_version=index.encoder_version)


def _switch_current(store: IndexStore, version: str) -> None:
    """Point CURRENT at a version by hand, as a buggy or hostile publisher would (no verification)."""
    tmp = store.root / "CURRENT.by-hand.tmp"
    tmp.write_text(version + "\n", encoding="utf-8")
    os.replace(tmp, store.root / "CURRENT")


def test_hot_swap_under_load_serves_new_versions_refuses_broken_ones_and_drops_nothing(world, tmp_path, users):
    store_dir = tmp_path / "store"
    server = ServerProcess(store_dir, world.data, str(world.encoders["text"]), tmp_path / "swap.log",
                           env={"RECSYS_HOME": str(tmp_path / "home")})
    store_dir.mkdir()
    # Start on an empty store: alive but not ready, and /v1 answers 503 until an index is published.
    with _started_unready(server) as srv, httpx.Client(base_url=srv.url, timeout=60) as http:
        assert http.get("/healthz").status_code == 200
        unready = wait_for_readyz(http, lambda s: "no index has been published" in (s.get("error") or ""))
        assert unready["ready"] is False and http.get("/readyz").status_code == 503
        assert http.post("/v1/recommend", json={"user_id": users[0]}).status_code == 503
        staged = tmp_path / "staged"
        shutil.copytree(world.store / "index", staged)
        os.rename(staged, store_dir / "index")  # appears whole
        wait_for_readyz(http, lambda s: s.get("ready") is True)
        index_store = IndexStore(store_dir / "index")
        v0, index0, meta0 = index_store.current()
        anchor = world.dataset.items["item_id"][0]

        seen: list[list[tuple[int | None, str]]] = [[], []]
        stop = threading.Event()

        def hammer(slot: int) -> None:
            with httpx.Client(base_url=srv.url, timeout=60) as own:
                turn = 0
                while not stop.is_set():
                    try:
                        if (turn + slot) % 2:
                            response = own.post("/v1/recommend", json={"user_id": users[slot], "k": 5})
                        else:
                            response = own.get(f"/v1/items/{anchor}/similar", params={"k": 5})
                        seen[slot].append((response.status_code, response.json().get("index_version", "")))
                    except httpx.HTTPError as exc:
                        seen[slot].append((None, repr(exc)))
                    turn += 1

        workers = [threading.Thread(target=hammer, args=(slot,)) for slot in (0, 1)]
        for worker in workers:
            worker.start()
        try:
            time.sleep(0.5)
            v1 = index_store.publish(_perturbed(index0, 1), meta0["extra"])
            wait_for_readyz(http, lambda s: s["index_version"] == v1)
            time.sleep(0.5)
            # (a) an index built by another encoder is refused
            v2 = index_store.publish(_perturbed(index0, 2), meta0["extra"], encoder_version="another-encoder/3")
            status = wait_for_readyz(http, lambda s: v2 in {r["version"] for r in s["refused"]})
            assert status["index_version"] == v1
            # (b) a version whose index file was damaged after it was verified is refused
            scratch = IndexStore(tmp_path / "scratch")
            v3 = scratch.publish(_perturbed(index0, 3), meta0["extra"])
            shutil.copytree(scratch.versions_dir / v3, index_store.versions_dir / v3)
            damaged = index_store.versions_dir / v3 / "index.faiss"
            data = bytearray(damaged.read_bytes())
            data[len(data) // 3] ^= 0x5A
            damaged.write_bytes(bytes(data))
            _switch_current(index_store, v3)
            status = wait_for_readyz(http, lambda s: v3 in {r["version"] for r in s["refused"]})
            assert status["index_version"] == v1
            time.sleep(0.5)
            # (c) and the next good version is served again
            v4 = index_store.publish(_perturbed(index0, 4), meta0["extra"])
            wait_for_readyz(http, lambda s: s["index_version"] == v4)
            time.sleep(0.5)
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=30)
        status = http.get("/readyz").json()

    reasons = {r["version"]: r["reason"] for r in status["refused"]}
    assert "built with encoder another-encoder/3" in reasons[v2]
    assert "checksum mismatch" in reasons[v3]
    order = [v0, v1, v4]
    for responses in seen:
        assert len(responses) > 20
        failed = [r for r in responses if r[0] != 200]
        assert not failed, failed[:5]
        positions = [order.index(version) for _, version in responses]  # ValueError if v2/v3 ever answered
        assert positions == sorted(positions)  # never back to an older version
        assert {v1, v4} <= {version for _, version in responses}
    log = [json.loads(line) for line in server.log_text().splitlines() if line.strip()]
    warnings = [line["msg"] for line in log if line["level"] == "warning" and "refused index" in line["msg"]]
    assert any(v2 in w for w in warnings) and any(v3 in w for w in warnings)


class _started_unready:
    """Start a `ServerProcess` and wait only for /healthz (its store is empty, so it cannot be ready)."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server

    def __enter__(self) -> ServerProcess:
        self.server.start(ready_path="/healthz")
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


# -------------------------------------------------------------------------------- secrecy
def test_logs_are_json_lines_and_never_contain_a_key(server, client, users):
    assert _post(client, {"user_id": users[0]}).status_code == 200
    with httpx.Client(base_url=server.url, timeout=60) as anonymous:
        anonymous.post("/v1/recommend", json={"user_id": users[0]}, headers={"X-API-Key": WRONG_KEY})
        anonymous.post("/v1/recommend", json={"user_id": users[0]}, headers={"Authorization": f"Bearer {SECOND_KEY}"})
    marker = secrets.token_hex(8)
    _post(client, {"user_id": users[0]}, headers={"X-Request-ID": marker})
    assert _log_lines(server, marker)
    text = server.log_text()
    for secret in (KEY, SECOND_KEY, WRONG_KEY):
        assert secret not in text
    lines = [json.loads(raw) for raw in text.splitlines() if raw.strip()]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    assert any(line["msg"] == "starting" and line["api_keys"] == 2 for line in lines)
