"""The HTTP service: a thin FastAPI layer over `Recommender` (docs/architecture.md, one request).

    POST /v1/recommend                    {user_id | item_ids | text, k, exclude_seen, filters, explain}
    GET  /v1/items/{item_id}/similar?k=   items near an item (404 when it is not indexed)
    POST /v1/events                       {events: [{event_id, user_id, item_id, ts?, event?, weight?}]}:
                                          stored durably (fsynced) before the 200, idempotent by
                                          event_id; the user's next recommendation sees them
    GET  /healthz                         the process is alive
    GET  /readyz                          models and index loaded (200) or not yet (503), with versions,
                                          the ranker mode, a pending encoder and refused versions
    GET  /metrics                         Prometheus text
    GET  /docs, /redoc, /openapi.json     the API document (Swagger UI and ReDoc served from this
                                          process: no CDN, so they work offline)

Status codes: 400 (a body that cannot be parsed: not UTF-8, nested too deeply), 401/403 (API keys),
404 (unknown item), 413 (body over the limit), 422 (bad input; `message` names every bad field),
503 (not loaded yet). Every error body carries the `request_id`. The app starts answering at once;
the models load in a background thread (retrying until an index exists) and are warmed up (one
request of each kind, so the first clients do not pay for lazy initialisation) before `/readyz`
turns 200; then the poller keeps them current (hot swap, `Recommender.refresh`). With API keys on,
`/readyz` shows file paths only to a caller with a valid key.

No `from __future__ import annotations` here: FastAPI reads the endpoint annotations at runtime,
and the request class is built per app (its bounds come from `ServingConfig`).
"""

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from recsys import __version__
from recsys.errors import DataError, RecsysError
from recsys.serving.config import ServingConfig
from recsys.serving.errors import NotReadyError, UnknownItemError
from recsys.serving.metrics import CONTENT_TYPE, ServiceMetrics
from recsys.serving.middleware import ApiKeyMiddleware, ApiKeys, BodyLimitMiddleware, RequestContextMiddleware
from recsys.serving.results import RecommendResult
from recsys.serving.schemas import (
    ERROR_RESPONSES,
    MAX_ID_CHARS,
    ErrorResponse,
    EventsResponse,
    HealthResponse,
    RecommendResponse,
    events_model,
    request_model,
)

log = logging.getLogger("recsys.serving")
_CONVERTER = re.compile(r":\w+}")  # "{item_id:path}" -> "{item_id}" in metric labels and logs
# Pydantic names the branch of a union an error came from inside the location; clients need the field.
_UNION_BRANCH = re.compile(r"^(none|str|int|float|bool|list\[.*\]|dict\[.*\]|constrained-\w+|[\w-]+\[.*\])$")
# A file path or URL in a readiness text (an error, a refusal's reason, a folder reference): what callers
# without a key do not see. Not a path: "models:/name@alias" (a ":" before the slash) or "encoder/3".
_PATH = re.compile(r"[a-zA-Z][\w+.-]*://[^\s'\"]*|(?<![\w.:/~-])~?/[^\s'\"`<>|,;:()\[\]{}]+")
HIDDEN_PATH = "<path>"


class SafeJSONResponse(JSONResponse):
    """UTF-8 JSON, falling back to ASCII escapes when a string cannot be UTF-8 (a lone surrogate
    echoed in an error location), and never NaN: a response that cannot render is itself a bug."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class ServiceHolder:
    """The app's handle on the facade: None until the background load succeeds."""

    def __init__(self, recommender: Any = None) -> None:
        self.recommender = recommender
        self.error: str | None = None if recommender is not None else "loading"
        self.stop = threading.Event()

    def get(self) -> Any:
        if self.recommender is None:
            raise NotReadyError(f"not ready: {self.error}")
        return self.recommender


def create_app(
    recommender: Any = None,
    *,
    loader: Callable[[], Any] | None = None,
    api_keys: Iterable[str] = (),
    config: ServingConfig | None = None,
    poll: bool = True,
    close_on_shutdown: bool = True,
) -> FastAPI:
    """The ASGI app over `recommender`, or over whatever `loader()` returns once it succeeds.

    `api_keys`: empty leaves `/v1/` open. `poll`: start the hot-swap poller (interval from `config`).
    """
    if recommender is None and loader is None:
        raise ValueError("give a recommender or a loader")
    config = config or (recommender.config if recommender is not None else ServingConfig())
    keys = ApiKeys(api_keys)
    holder = ServiceHolder(recommender)
    metrics = ServiceMetrics(lambda: holder.recommender)
    # A class built per app (its bounds); FastAPI reads it from the endpoint's annotation at runtime. Any:
    # a type checker can use it as an annotation but cannot know its fields.
    RecommendRequest: Any = request_model(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        thread = None
        if holder.recommender is not None and not holder.recommender.warmed_up:
            holder.recommender.warm_up()  # a host's own recommender: warm before the first request too
        if holder.recommender is None:
            thread = threading.Thread(
                target=_load_loop, args=(holder, loader, config, poll), name="recsys-loader", daemon=True
            )
            thread.start()
        elif poll:
            holder.recommender.start_polling(config.poll_interval)
        yield
        holder.stop.set()
        if thread is not None:
            thread.join(timeout=5)
        if holder.recommender is not None and close_on_shutdown:
            holder.recommender.close()

    # FastAPI's own /docs and /redoc load their scripts from a CDN (a blank page offline); these are the
    # same pages over assets packaged with fastapi-offline and served by this app.
    app = FastAPIOffline(
        title="recsys candidate retrieval",
        version=__version__,
        description=__doc__.split("\n\nNo `from __future__")[0],
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    app.state.holder = holder
    app.state.metrics = metrics
    security = (
        [Security(APIKeyHeader(name="X-API-Key", auto_error=False)), Security(HTTPBearer(auto_error=False))]
        if keys.enabled
        else []
    )

    @app.post(
        "/v1/recommend",
        response_model=RecommendResponse,
        responses=ERROR_RESPONSES,
        tags=["recommend"],
        summary="Top-k items for a user, a list of recent items, or a free text",
        dependencies=security,
    )
    def recommend(body: RecommendRequest, request: Request) -> dict[str, Any]:
        rec = holder.get()
        result = rec.recommend(
            user_id=body.user_id,
            history=body.item_ids,
            text=body.text,
            k=body.k,
            exclude_seen=body.exclude_seen,
            filters=body.filters,
            explain=body.explain,
        )
        return _respond(request, result)

    EventsRequest: Any = events_model(config)

    @app.post(
        "/v1/events",
        response_model=EventsResponse,
        responses=ERROR_RESPONSES,
        tags=["events"],
        summary=f"Record up to {config.max_events} interactions; the users' next recommendations see them",
        dependencies=security,
    )
    def events(body: EventsRequest) -> dict[str, Any]:
        rec = holder.get()
        return rec.add_events([event.model_dump() for event in body.events]).to_dict()

    @app.get(
        "/v1/items/{item_id:path}/similar",
        response_model=RecommendResponse,
        responses={**ERROR_RESPONSES, 404: {"model": ErrorResponse, "description": "Item not in the index."}},
        tags=["recommend"],
        summary="Items similar to an item",
        dependencies=security,
    )
    def similar(
        request: Request,
        item_id: str = Path(
            description="An item id of the served index.", min_length=1, max_length=MAX_ID_CHARS, examples=["318"]
        ),
        k: int = Query(10, ge=1, le=config.max_k, description=f"How many items (1 to {config.max_k})."),
    ) -> dict[str, Any]:
        rec = holder.get()
        return _respond(request, rec.similar(item_id, k=k))

    @app.get("/healthz", response_model=HealthResponse, tags=["operations"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Readiness: versions served, ranker mode, refusals",
        responses={503: {"description": "Not loaded yet (the body says why)."}},
    )
    def readyz(request: Request) -> Response:
        if holder.recommender is None:
            body, status = {"ready": False, "error": holder.error, "ranker": None, "mode": None}, 503
        else:
            body, status = holder.recommender.status(), 200
        if not keys.allows(request.scope):  # open to probes, but where the files live is for key holders
            body = _hide_paths(body)
        return SafeJSONResponse(body, status_code=status)

    @app.get(
        "/metrics", tags=["operations"], summary="Prometheus metrics", responses={200: {"content": {"text/plain": {}}}}
    )
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return _validation_response(request, _issues(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = _unreadable_body(exc) or exc.detail
        return SafeJSONResponse(
            {"detail": detail, "request_id": _request_id(request)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(UnknownItemError)
    async def unknown_item(request: Request, exc: UnknownItemError) -> Response:
        return SafeJSONResponse({"detail": exc.reason, "request_id": _request_id(request)}, status_code=404)

    @app.exception_handler(DataError)
    async def bad_data(request: Request, exc: DataError) -> Response:
        where = "body" if request.method == "POST" else ("query" if exc.column == "k" else "path")
        location = [where, *([exc.column] if exc.column else []), *([exc.row - 1] if exc.row else [])]
        return _validation_response(request, [{"loc": location, "msg": exc.reason, "type": "value_error"}])

    @app.exception_handler(NotReadyError)
    async def not_ready(request: Request, exc: NotReadyError) -> Response:
        return SafeJSONResponse(
            {"detail": str(exc), "request_id": _request_id(request)}, status_code=503, headers={"Retry-After": "1"}
        )

    def route_of(scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            route = next((r for r in app.router.routes if r.matches(scope)[0] != Match.NONE), None)
        path = getattr(route, "path", None)
        return _CONVERTER.sub("}", str(path)) if path else "unmatched"

    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body, per_path={"/v1/events": config.max_events_body})
    app.add_middleware(ApiKeyMiddleware, keys=keys)
    app.add_middleware(RequestContextMiddleware, observe=metrics.observe, route_of=route_of)
    return app


# ------------------------------------------------------------------------------------ helpers
def _load_loop(holder: ServiceHolder, loader: Callable[[], Any], config: ServingConfig, poll: bool) -> None:
    """Load until it works (an index may not be published yet), then start the hot-swap poller."""
    last = None
    while not holder.stop.is_set():
        started = time.perf_counter()
        try:
            rec = loader()
        except Exception as exc:
            holder.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, RecsysError) else str(exc)
            if holder.error != last:
                log.warning("not ready: %s (retrying every %.1f s)", holder.error, config.poll_interval)
                last = holder.error
            holder.stop.wait(config.poll_interval)
            continue
        if holder.stop.is_set():
            rec.close()
            return
        holder.error = "warming up"
        rec.warm_up()  # before readiness: the first clients must not pay for lazy initialisation
        holder.recommender, holder.error = rec, None
        status = rec.status()
        log.info(
            "ready after %.1f s",
            time.perf_counter() - started,
            extra={
                "fields": {
                    key: status[key] for key in ("index_version", "encoder_version", "ranker", "mode", "ranker_note")
                }
            },
        )
        if poll:
            rec.start_polling(config.poll_interval)
        return


def _respond(request: Request, result: RecommendResult) -> dict[str, Any]:
    state = request.state
    state.timings = result.timings_ms
    state.mode, state.cold_start, state.index_version = result.mode, result.cold_start, result.index_version
    state.user_vector = result.user_vector
    return _plain(result.to_dict())


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, non-finite floats to None (explanations come from rankers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, str | bytes):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _issues(errors: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors, cleaned for people: union-branch names dropped from locations (`user_id.none`,
    `text.function-after[...]`), the "should be None" half of an optional field's error dropped (also when
    the other half points inside the field: `item_ids.0`), duplicates merged."""
    issues = [_issue(error) for error in errors]
    located = [tuple(issue["loc"]) for issue in issues if issue["type"] != "none_required"]
    out, seen = [], set()
    for issue in issues:
        key = (tuple(issue["loc"]), issue["msg"])
        if key in seen or (issue["type"] == "none_required" and any(loc[: len(key[0])] == key[0] for loc in located)):
            continue
        seen.add(key)
        out.append(issue)
    return out


def _issue(error: dict[str, Any]) -> dict[str, Any]:
    """One validation error, with a message a client developer can act on."""
    loc = [
        part if isinstance(part, int) else str(part)
        for part in error.get("loc", ())
        if isinstance(part, int) or not _UNION_BRANCH.match(str(part))
    ]
    msg = str(error.get("msg", "invalid"))
    kind = str(error.get("type", "value_error"))
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error")
        at = f" at character {loc[1]}" if len(loc) > 1 and isinstance(loc[1], int) else ""
        loc, msg = ["body"], f"not valid JSON{at}{f': {reason}' if reason else ''}"
    elif kind == "missing" and loc == ["body"]:
        msg = "a JSON body is required"
    elif kind in ("model_attributes_type", "dict_type", "model_type") and loc == ["body"]:
        msg = "the body must be a JSON object (sent with Content-Type: application/json)"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    elif kind in ("too_long", "too_short"):
        msg = msg.replace(" items after validation,", " items,")  # "after validation": pydantic's inner detail
    return {"loc": loc, "msg": msg, "type": kind}


def _validation_response(request: Request, issues: list[dict[str, Any]]) -> Response:
    def where(loc: list[Any]) -> str:
        parts = [str(p) for p in loc if p != "body"] or ["body"]
        return ".".join(parts)

    message = "; ".join(f"{where(issue['loc'])}: {issue['msg']}" for issue in issues)
    return SafeJSONResponse({"detail": issues, "message": message, "request_id": _request_id(request)}, status_code=422)


def _unreadable_body(exc: StarletteHTTPException) -> str | None:
    """What was wrong with a body FastAPI could not parse (its 400 says only "error parsing the body")."""
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return (
            f"the body is not valid UTF-8 (byte 0x{cause.object[cause.start]:02x} at offset {cause.start}): "
            "send JSON encoded as UTF-8"
        )
    if isinstance(cause, RecursionError):
        return "the JSON body is nested too deeply to parse"
    return None


def _hide_paths(value: Any) -> Any:
    """`value` with every file path and URL in its strings replaced by `HIDDEN_PATH`."""
    if isinstance(value, str):
        return _PATH.sub(HIDDEN_PATH, value)
    if isinstance(value, dict):
        return {key: _hide_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_hide_paths(item) for item in value]
    return value


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)
