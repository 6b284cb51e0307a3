"""One JSON object a line for every log record, and the per-request access line.

Structured lines are what log pipelines index without regexes. Request logs carry the request id
(echoed in `X-Request-ID`), the route template (never the raw query or body), status, latency and
stage timings. Nothing here ever sees a header, so an API key cannot reach the log.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import Any

ACCESS = "recsys.access"


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...fields}`; ASCII-only, so odd Unicode never breaks a line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=True, default=str)


def configure_logging(level: str = "info") -> None:
    """Route every logger (uvicorn's included) to stderr as JSON lines.

    MLflow's artifact progress bars (a registry encoder or ranker downloaded at start or on a hot
    swap) would write raw terminal lines into that stream, so they are turned off unless asked for.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # the access line below replaces it
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD build loaded: noise


def access_line(fields: dict[str, Any]) -> None:
    logging.getLogger(ACCESS).info("request", extra={"fields": fields})
