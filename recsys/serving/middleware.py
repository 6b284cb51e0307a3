"""Pure-ASGI middleware: request context (id, access log, metrics), API keys, body-size limit.

Order, outermost first: context -> API keys -> body limit -> the FastAPI router. So every response,
a 401 or a 413 included, carries `X-Request-ID`, is counted and is logged; keys are checked before a
byte of the body is read; and a body over the limit never reaches JSON parsing.

API keys: `X-API-Key: <key>` or `Authorization: Bearer <key>`, compared with `hmac.compare_digest`
against every configured key (no early exit, so timing says nothing about which key nearly
matched). No key: 401; a wrong one: 403. Only paths under `/v1/` are protected; health, readiness,
metrics and the OpenAPI document stay open for probes and scrapers (readiness shows file paths only
to a caller with a valid key: `app.py`).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from starlette.requests import ClientDisconnect

from recsys.serving.logs import access_line
from recsys.serving.metrics import CLIENT_CLOSED

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("recsys.serving")
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
PROTECTED_PREFIX = "/v1/"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value
    return None


def request_state(scope: Scope) -> dict[str, Any]:
    """The per-request dict Starlette exposes as `request.state` (handlers put stage timings there)."""
    state = scope.get("state")
    if not isinstance(state, dict):
        state = {}
        scope["state"] = state
    return state


async def send_json(
    send: Send, status: int, payload: dict[str, Any], headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(payload, ensure_ascii=True).encode("ascii")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """Request id in and out, one JSON access line, Prometheus observations, a JSON 500 for crashes.

    A client that disconnects before a response was sent (mid-body, or while waiting) is recorded
    as 499, an abort on its side, never as a server error: no exception log, no 500 counted.
    """

    def __init__(self, app: ASGIApp, observe: Callable[..., None], route_of: Callable[[Scope], str]) -> None:
        self.app = app
        self.observe = observe
        self.route_of = route_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = _header(scope, b"x-request-id")
        text = given.decode("latin-1") if given else ""
        request_id = text if _REQUEST_ID.match(text) else uuid.uuid4().hex
        state = request_state(scope)
        state["request_id"] = request_id
        status = 500
        response_started = False
        disconnected = False

        async def receive_watched() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                response_started = True
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.lower().encode(), request_id.encode()),
                ]
            await send(message)

        crashed = False
        try:
            await self.app(scope, receive_watched, send_with_id)
        except ClientDisconnect:
            pass  # the body could not be read: the client left (499 below)
        except Exception:
            crashed = True
            log.exception("unhandled error", extra={"fields": {"request_id": request_id}})
            status = 500
            if not response_started:
                await send_json(
                    send,
                    500,
                    {"detail": "internal error", "request_id": request_id},
                    [(REQUEST_ID_HEADER.lower().encode(), request_id.encode())],
                )
        finally:
            if disconnected and not response_started and not crashed:
                status = CLIENT_CLOSED
            seconds = time.perf_counter() - started
            route = self.route_of(scope)
            stages = state.get("timings")
            self.observe(route, scope.get("method", ""), status, seconds, stages)
            fields: dict[str, Any] = {
                "request_id": request_id,
                "method": scope.get("method"),
                "route": route,
                "status": status,
                "latency_ms": round(seconds * 1000, 3),
            }
            if status == CLIENT_CLOSED:
                fields["aborted"] = "the client disconnected before the response"
            if stages:
                fields["stages_ms"] = stages
            for key in ("mode", "cold_start", "index_version", "user_vector"):
                if key in state:
                    fields[key] = state[key]
            access_line(fields)


class ApiKeys:
    """The configured API keys and the check of the key a request presents (see the module doc)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [key.encode("utf-8") for key in keys if key]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    @staticmethod
    def presented(scope: Scope) -> bytes | None:
        """The key in `X-API-Key`, else in `Authorization: Bearer`; None when there is none."""
        given = _header(scope, b"x-api-key")
        if not given:
            auth = _header(scope, b"authorization") or b""
            scheme, _, token = auth.partition(b" ")
            given = token.strip() if scheme.lower() == b"bearer" else None
        return given or None

    def valid(self, given: bytes) -> bool:
        matched = False
        for key in self._keys:  # every key, no early exit: timing says nothing about which nearly matched
            matched |= hmac.compare_digest(given, key)
        return matched

    def allows(self, scope: Scope) -> bool:
        """True when keys are off or the request presents a valid one."""
        if not self._keys:
            return True
        given = self.presented(scope)
        return given is not None and self.valid(given)


class ApiKeyMiddleware:
    """401 without a key, 403 with a wrong one, on `/v1/` paths (see the module doc)."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not self.keys.enabled or not path.startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        given = self.keys.presented(scope)
        request_id = request_state(scope).get("request_id")
        if given is None:
            await send_json(
                send,
                401,
                {"detail": "missing API key: send X-API-Key or Authorization: Bearer <key>", "request_id": request_id},
                [(b"www-authenticate", b'Bearer realm="recsys"')],
            )
            return
        if not self.keys.valid(given):
            await send_json(send, 403, {"detail": "invalid API key", "request_id": request_id})
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for a body over `max_bytes` (or the path's own limit in `per_path`), by Content-Length or by
    counting a streamed body."""

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        request_id = request_state(scope).get("request_id")
        limit = self.per_path.get(scope.get("path", ""), self.max_bytes)
        too_large = {"detail": f"request body exceeds {limit} bytes", "request_id": request_id}
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await send_json(send, 400, {"detail": "Content-Length is not a number", "request_id": request_id})
                return
            if size > limit:
                await send_json(send, 413, too_large, [(b"connection", b"close")])
                return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                await send_json(send, 413, too_large, [(b"connection", b"close")])
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
