"""Prometheus metrics of one app: request counts, errors, latency per route and per serving stage.

Each app gets its own `CollectorRegistry` (several apps in one process, as in tests, never collide).
The serving state (versions, swaps, refusals, how user vectors were obtained) is read at scrape time
by a collector, so the facade needs no Prometheus code. With several uvicorn workers every worker
answers with its own numbers; aggregate across processes in Prometheus (or run one worker a pod).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# The `method` label takes these, anything else is "other": a client can send any token as a method, and
# each new label value is a new series kept for the process's life (1,000 made-up methods: 2,000 series).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})
# nginx's "client closed request": the client went away before a response could be sent. It is counted
# (status "499", error kind "aborted") apart from server errors, which it is not.
CLIENT_CLOSED = 499
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGES = ("encode", "search", "rank", "total")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServiceMetrics:
    """The app's metrics (see the module doc); `observe` is called once a request."""

    def __init__(self, recommender: Callable[[], Any]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "recsys_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "recsys_http_errors",
            "HTTP responses with status >= 400, by route and kind "
            "(client: 4xx; aborted: 499, the client left before the response; unavailable: "
            "503, not loaded yet; server: other 5xx, a bug).",
            ["route", "kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "recsys_http_request_duration_seconds",
            "Request latency by route template.",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.stages = Histogram(
            "recsys_stage_duration_seconds",
            "Serving stage latency: encode (user/text vector), "
            "search (FAISS), rank (features + ranker), total (facade).",
            ["stage"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(recommender))

    def observe(
        self, route: str, method: str, status: int, seconds: float, stages_ms: Mapping[str, float] | None
    ) -> None:
        self.requests.labels(route, method_label(method), str(status)).inc()
        if status >= 400:
            self.errors.labels(route, error_kind(status)).inc()
        self.latency.labels(route).observe(seconds)
        for stage, ms in (stages_ms or {}).items():
            if stage in STAGES:
                self.stages.labels(stage).observe(ms / 1000.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def method_label(method: str) -> str:
    """The request method as a metric label: one of `METHODS`, else "other" (bounded cardinality)."""
    return method if method in METHODS else "other"


def error_kind(status: int) -> str:
    """The `recsys_http_errors` kind of a status >= 400."""
    if status == CLIENT_CLOSED:
        return "aborted"
    if status < 500:
        return "client"
    return "unavailable" if status == 503 else "server"


class _StateCollector:
    """Serving-state gauges and counters read from the facade at scrape time."""

    def __init__(self, recommender: Callable[[], Any]) -> None:
        self._recommender = recommender

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        rec = self._recommender()
        yield GaugeMetricFamily("recsys_ready", "1 once models and an index are loaded.", value=int(rec is not None))
        if rec is None:
            return
        state, stats = rec.state, rec.stats
        info = GaugeMetricFamily(
            "recsys_serving_info",
            "What is served (value 1).",
            labels=["index_version", "encoder_version", "ranker_version", "mode"],
        )
        info.add_metric([state.index_version, state.encoder_version, state.ranker_version or "", state.mode], 1)
        yield info
        yield GaugeMetricFamily("recsys_index_items", "Items in the served index.", value=len(state.index))
        yield GaugeMetricFamily(
            "recsys_cached_users", "Users with a nightly vector in the served version.", value=len(state.users)
        )
        yield CounterMetricFamily("recsys_swaps", "Hot swaps of the serving state.", value=stats["swaps"])
        refusals = CounterMetricFamily(
            "recsys_refusals", "New versions refused (checksum, encoder mismatch, ...).", labels=["what"]
        )
        for what in ("index", "encoder", "ranker", "dataset"):
            refusals.add_metric([what], stats["refusals"].get(what, 0))
        yield refusals
        vectors = CounterMetricFamily(
            "recsys_user_vectors", "User vectors by origin (nightly cache or encoded).", labels=["origin"]
        )
        for origin, count in stats["user_vector"].items():
            vectors.add_metric([origin], count)
        yield vectors
        events = CounterMetricFamily(
            "recsys_events",
            "Posted events by outcome: accepted (logged durably), duplicate (an event_id already logged: "
            "a retry), unknown_item (not in the served catalog: not logged).",
            labels=["outcome"],
        )
        counts = stats.get("events") or {}
        for outcome, key in (("accepted", "accepted"), ("duplicate", "duplicates"), ("unknown_item", "unknown_items")):
            events.add_metric([outcome], counts.get(key, 0))
        yield events
        yield CounterMetricFamily(
            "recsys_cold_starts", "Requests served by the cold-start path.", value=stats["cold_start"]
        )
        yield CounterMetricFamily(
            "recsys_ranker_errors",
            "Requests where the ranker failed (served in retrieval order).",
            value=stats["ranker_errors"],
        )
