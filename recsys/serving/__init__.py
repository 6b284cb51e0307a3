"""The online layer: the `Recommender` facade, its HTTP service, hot swap, limits and metrics.

This package sits above `encoders` and `ranking` (it is the only part of `recsys` that uses them: at
module level only the import-light `ranking.protocol`, the models inside functions, so `import
recsys.serving` loads no torch, faiss or LightGBM); it never imports `jobs`: the batch jobs and the
service share the loaders of `encoders.registry` and `ranking.registry`.

- `recommender.py`  `Recommender`: load, recommend, similar, status (the facade)
- `hotswap.py`      the served state's replacement: refresh, refusals, pending encoder, poller
- `validation.py`   input checks (ids, k, history, text), shared limits with `schemas.py`
- `state.py`        the immutable serving state a request reads once; user-vector cache; filter masks;
                    the index vectors the ranker's features read
- `catalog.py`      titles, texts, filters, histories and popularity from the dataset folder
- `events.py`       the SQLite event log of `POST /v1/events` (durable, idempotent); `live.py` the
                    events laid over the catalog's histories until the dataset has them
- `models.py`       encoder and ranker sources (registry aliases, folders, objects)
- `batcher.py`      one encoder thread that batches concurrent requests
- `app.py`          the FastAPI app; `schemas.py` its bodies; `middleware.py` request id, keys, body limit
- `metrics.py`      Prometheus; `logs.py` JSON log lines; `server.py` uvicorn (`recsys serve`)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Recommender": "recsys.serving.recommender",
    "ServingConfig": "recsys.serving.config",
    "Recommendation": "recsys.serving.results",
    "RecommendResult": "recsys.serving.results",
    "UnknownItemError": "recsys.serving.errors",
    "NotReadyError": "recsys.serving.errors",
    "create_app": "recsys.serving.app",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recsys.serving' has no attribute {name!r}")
