"""Request and response bodies of the HTTP API (pydantic), with the bounds the OpenAPI schema shows.

The bounds come from `ServingConfig`, so `request_model(config)` builds the request class for one
app; everything else is static. Strings are strict (no number-to-string coercion) and must be valid
Unicode: JSON can smuggle lone surrogates (`"\\ud800"`), which no tokenizer, log or UTF-8 response
can carry, so they are a 422 like any other bad value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator
from pydantic.json_schema import JsonValue

from recsys.serving.config import ServingConfig
from recsys.serving.validation import MAX_EVENT_KIND_CHARS, MAX_ID_CHARS, blank_problem, unicode_problem

MAX_FILTERS = 16
MAX_FILTER_VALUES = 100


def _valid_unicode(value: str) -> str:
    problem = unicode_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


Text = Annotated[StrictStr, AfterValidator(_valid_unicode)]
Id = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_valid_unicode)]
FilterValue = Annotated[StrictStr, Field(max_length=MAX_ID_CHARS), AfterValidator(_valid_unicode)]
FilterKey = Annotated[StrictStr, Field(min_length=1, max_length=64), AfterValidator(_valid_unicode)]
Filters = Annotated[
    dict[FilterKey, FilterValue | Annotated[list[FilterValue], Field(min_length=1, max_length=MAX_FILTER_VALUES)]],
    Field(max_length=MAX_FILTERS),
]


# The three ways to ask, with their JSON types. Each may also be sent as null (generated clients send unset
# optional fields that way), which counts as absent: "exactly one of" is about the non-null ones.
QUERY_TYPES = {"user_id": "string", "item_ids": "array", "text": "string"}
# Examples any served catalog answers: an unknown user id is a cold start, not an error, and free text
# needs no catalog ids. Item ids and filter columns belong to one dataset, so no example names them.
EXAMPLES: list[JsonValue] = [{"user_id": "42", "k": 10}, {"text": "space opera with robots", "k": 5, "explain": True}]


def _not_blank(value: str) -> str:
    problem = blank_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def request_model(config: ServingConfig) -> type[BaseModel]:
    """The `POST /v1/recommend` body class with this config's bounds."""
    History = Annotated[list[Id], Field(min_length=1, max_length=config.max_history)]
    # The length bounds sit on the string itself (before the validators): bounds placed after a validator
    # are checked as a generic length, whose message speaks of "items".
    QueryText = Annotated[
        StrictStr,
        Field(min_length=1, max_length=config.max_text),
        AfterValidator(_valid_unicode),
        AfterValidator(_not_blank),
    ]

    class RecommendRequest(BaseModel):
        """Exactly one of `user_id`, `item_ids` or `text` (a null one counts as absent)."""

        model_config = ConfigDict(
            extra="forbid",
            # "Exactly one of" in the schema too, so generated clients and fuzzers know the rule.
            json_schema_extra={
                "oneOf": [
                    {"required": [name], "properties": {name: {"type": kind}}} for name, kind in QUERY_TYPES.items()
                ],
                "examples": EXAMPLES,
            },
        )

        user_id: Id | None = Field(
            None,
            description="A user id from the interaction log. Known users get their nightly vector while it is "
            "fresh, else their history is encoded; unknown users get the cold-start fallback (`cold_start: true`).",
            examples=["42"],
        )
        item_ids: History | None = Field(
            None,
            description=f"The user's recent item ids, newest first (1 to {config.max_history}). Ids not in the "
            "catalog are dropped and listed in `ignored_items`; if none is known the request is a 422.",
        )
        text: QueryText | None = Field(
            None,
            description=f"Free text (1 to {config.max_text} characters, not only whitespace), encoded with the "
            "item tower and searched like an item.",
            examples=["space opera with robots"],
        )
        k: StrictInt = Field(10, ge=1, le=config.max_k, description=f"How many items to return (1 to {config.max_k}).")
        exclude_seen: StrictBool = Field(
            True, description="Leave out items in the user's history (`user_id`) or in `item_ids`."
        )
        filters: Filters | None = Field(
            None,
            description='Item-column filters (absent or null: none), e.g. `{"category": "Comedy"}` or '
            '`{"genres": ["Comedy", "Drama"]}`: an item passes when, for every column, its value or one of '
            "its comma-separated parts equals one of the given values (case-insensitive). Which columns exist "
            "depends on the served dataset; unknown columns are a 422.",
        )
        explain: StrictBool = Field(
            False,
            description="Attach an explanation to each item (ranker contributions, or the closest history "
            "item in retrieval order, or the popularity count).",
        )

        @model_validator(mode="after")
        def _one_query(self) -> RecommendRequest:
            given = [name for name in QUERY_TYPES if getattr(self, name) is not None]
            if len(given) != 1:
                raise ValueError(f"give exactly one of user_id, item_ids or text (got {', '.join(given) or 'none'})")
            return self

    return RecommendRequest


EventKind = Annotated[StrictStr, Field(min_length=1, max_length=MAX_EVENT_KIND_CHARS), AfterValidator(_valid_unicode)]
EVENT_EXAMPLE: JsonValue = {
    "events": [{"event_id": "3f6c-0001", "user_id": "42", "item_id": "318", "event": "click"}],
}


class EventIn(BaseModel):
    """One interaction that just happened."""

    model_config = ConfigDict(extra="forbid")

    event_id: Id = Field(
        description="The client's unique id of this event: a retry with the same id is stored once.",
        examples=["3f6c-0001"],
    )
    user_id: Id = Field(description="Who acted (a new user id is fine: it starts a history).", examples=["42"])
    item_id: Id = Field(description="A catalog item id (unknown ones are reported, not stored).", examples=["318"])
    ts: datetime | None = Field(
        None,
        description="When it happened: ISO 8601 (no zone: UTC) or Unix seconds, from 1900 to a day ahead. "
        "Absent or null: the time the service received it.",
    )
    event: EventKind | None = Field(None, description="The kind of event, e.g. click, view, rating.")
    weight: float | None = Field(None, allow_inf_nan=False, description="An optional strength (a rating, say).")


def events_model(config: ServingConfig) -> type[BaseModel]:
    """The `POST /v1/events` body class with this config's batch bound."""

    class EventsRequest(BaseModel):
        """A batch of events (at most `ServingConfig.max_events`), stored durably before the response."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EVENT_EXAMPLE]})

        events: Annotated[list[EventIn], Field(min_length=1, max_length=config.max_events)] = Field(
            description=f"1 to {config.max_events} events. Each is validated; the batch is stored in one "
            "fsynced transaction."
        )

    return EventsRequest


class EventStatus(BaseModel):
    event_id: str
    status: Literal["accepted", "duplicate", "unknown_item"] = Field(
        description="accepted: stored now; duplicate: this event_id was stored before (a retry); "
        "unknown_item: the catalog lacks the item, not stored."
    )


class EventsResponse(BaseModel):
    accepted: int = Field(ge=0, description="Events stored by this request.")
    duplicates: int = Field(ge=0, description="Events whose event_id was already stored (not counted again).")
    unknown_items: int = Field(ge=0, description="Events naming an item the catalog lacks (not stored).")
    events: list[EventStatus] = Field(description="Each event's status, in the order sent.")
    commit_ms: float = Field(description="Milliseconds of the log's fsynced commit.")


class RecommendedItem(BaseModel):
    item_id: str = Field(description="The item id.", examples=["318"])
    title: str | None = Field(
        description="The item's title from the catalog.", examples=["Shawshank Redemption, The (1994)"]
    )
    score: float | None = Field(
        description="Ranker score (ranked), inner product (retrieval) or interaction count "
        "(popular); null for popular items that top up a ranker's short list."
    )
    rank: int = Field(ge=1, description="1-based position.")
    source: str = Field(
        description="Stage that proposed the item: retrieval, covisit, popular or text.", examples=["retrieval"]
    )
    explanation: dict[str, Any] | None = Field(None, description="Present when `explain` was asked.")


class RecommendResponse(BaseModel):
    items: list[RecommendedItem]
    cold_start: bool = Field(
        description="True when the user had no usable history (popularity or the ranker's fallbacks)."
    )
    mode: Literal["ranked", "retrieval", "popular"] = Field(
        description="ranked: the ranker ordered the items; retrieval: FAISS order (no usable ranker); popular: "
        "cold-start popularity."
    )
    query: Literal["user", "history", "text", "item"]
    user_vector: Literal["cached", "encoded"] | None = Field(
        description="cached: the nightly vector; encoded: the history was encoded for this request."
    )
    index_version: str = Field(description="The index version that answered.")
    encoder_version: str
    ranker_version: str | None
    ignored_items: list[str] = Field(description="History ids dropped because the catalog does not have them.")
    timings_ms: dict[str, float] = Field(description="Milliseconds per stage: encode, search, rank, total.")


class ErrorResponse(BaseModel):
    detail: str = Field(description="What went wrong.")
    request_id: str | None = None


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description='Where: e.g. ["body", "k"].')
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    detail: list[ValidationIssue]
    message: str = Field(description="All issues on one line, each prefixed with its field.")
    request_id: str | None = None


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body could not be read (not UTF-8, bad Content-Length)."},
    401: {"model": ErrorResponse, "description": "No API key (X-API-Key or Authorization: Bearer)."},
    403: {"model": ErrorResponse, "description": "Wrong API key."},
    413: {"model": ErrorResponse, "description": "Request body too large."},
    422: {"model": ValidationErrorResponse, "description": "Invalid input; `message` names each bad field."},
    503: {"model": ErrorResponse, "description": "Models or index not loaded yet."},
}
