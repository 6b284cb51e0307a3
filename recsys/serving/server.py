"""Run the service with uvicorn: `recsys serve`, or `uvicorn --factory recsys.serving.server:app_from_env`.

Configuration (CLI options, or these environment variables for the factory and for workers):

| variable                | meaning                                              | default     |
|-------------------------|------------------------------------------------------|-------------|
| `RECSYS_STORE`          | nightly store folder (or an index store root)        | required    |
| `RECSYS_DATA`           | dataset folder                                       | required    |
| `RECSYS_ENCODER`        | registry reference or encoder folder                 | `champion`  |
| `RECSYS_RANKER`         | registry reference, folder, or `none`                | `champion`  |
| `RECSYS_API_KEYS`       | comma-separated API keys (unset: `/v1/` is open)     | unset       |
| `RECSYS_SERVING_CONFIG` | JSON object of `ServingConfig` fields                | `{}`        |
| `RECSYS_LOG_LEVEL`      | log level                                            | `info`      |

API keys travel by environment to worker processes and are never logged: the startup line only
says how many there are.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from recsys.errors import ConfigError
from recsys.serving.app import create_app
from recsys.serving.config import ServingConfig
from recsys.serving.logs import configure_logging
from recsys.serving.recommender import Recommender

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("recsys.serving")
ENV_STORE = "RECSYS_STORE"
ENV_DATA = "RECSYS_DATA"
ENV_ENCODER = "RECSYS_ENCODER"
ENV_RANKER = "RECSYS_RANKER"
ENV_KEYS = "RECSYS_API_KEYS"
ENV_CONFIG = "RECSYS_SERVING_CONFIG"
ENV_LOG_LEVEL = "RECSYS_LOG_LEVEL"


def parse_keys(*sources: str | None) -> tuple[str, ...]:
    """API keys from comma-separated strings (blank entries dropped, order kept, duplicates removed)."""
    keys = [part.strip() for text in sources if text for part in text.split(",")]
    return tuple(dict.fromkeys(key for key in keys if key))


@dataclass(frozen=True)
class ServeOptions:
    """Everything `recsys serve` needs."""

    store: Path
    data: Path
    encoder: str = "champion"
    ranker: str = "champion"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    config: ServingConfig = field(default_factory=ServingConfig)
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be 0..65535, got {self.port}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if not Path(self.data).is_dir():
            raise ConfigError(f"--data {self.data}: no such dataset folder")

    def environment(self) -> dict[str, str]:
        """The same options as environment variables (for worker processes)."""
        return {
            ENV_STORE: str(self.store),
            ENV_DATA: str(self.data),
            ENV_ENCODER: self.encoder,
            ENV_RANKER: self.ranker,
            ENV_KEYS: ",".join(self.api_keys),
            ENV_CONFIG: json.dumps(asdict(self.config)),
            ENV_LOG_LEVEL: self.log_level,
        }


def options_from_env(environ: dict[str, str] | None = None) -> ServeOptions:
    env = dict(os.environ if environ is None else environ)
    missing = [name for name in (ENV_STORE, ENV_DATA) if not env.get(name)]
    if missing:
        raise ConfigError(f"set {' and '.join(missing)} (the nightly store and the dataset folder)")
    try:
        config = ServingConfig.from_dict(json.loads(env.get(ENV_CONFIG) or "{}"))
    except ValueError as exc:
        raise ConfigError(f"{ENV_CONFIG} is not a JSON object: {exc}") from None
    return ServeOptions(
        store=Path(env[ENV_STORE]),
        data=Path(env[ENV_DATA]),
        encoder=env.get(ENV_ENCODER) or "champion",
        ranker=env.get(ENV_RANKER) or "champion",
        api_keys=parse_keys(env.get(ENV_KEYS)),
        config=config,
        log_level=env.get(ENV_LOG_LEVEL) or "info",
    )


def build_app(options: ServeOptions) -> FastAPI:
    """The app; its models load in the background (readiness at `/readyz`)."""

    def loader() -> Recommender:
        return Recommender.load(
            options.store, options.data, encoder=options.encoder, ranker=options.ranker, config=options.config
        )

    if not options.api_keys:
        log.warning("no API keys configured: /v1/ is open to anyone who can reach this port")
    return create_app(loader=loader, api_keys=options.api_keys, config=options.config)


def app_from_env() -> FastAPI:
    """uvicorn factory (`--factory recsys.serving.server:app_from_env`), configured by the environment."""
    options = options_from_env()
    configure_logging(options.log_level)
    return build_app(options)


def serve(options: ServeOptions) -> None:
    """Run uvicorn in the foreground until interrupted."""
    configure_logging(options.log_level)
    log.info(
        "starting",
        extra={
            "fields": {
                "host": options.host,
                "port": options.port,
                "workers": options.workers,
                "store": str(options.store),
                "data": str(options.data),
                "encoder": options.encoder,
                "ranker": options.ranker,
                "api_keys": len(options.api_keys),
                "poll_interval": options.config.poll_interval,
            }
        },
    )
    common: dict[str, Any] = {
        "host": options.host,
        "port": options.port,
        "log_config": None,
        "access_log": False,
        "log_level": options.log_level.lower(),
        "timeout_keep_alive": options.config.keep_alive,
    }
    if options.workers == 1:
        uvicorn.run(build_app(options), **common)
        return
    os.environ.update(options.environment())  # inherited by the worker processes
    uvicorn.run("recsys.serving.server:app_from_env", factory=True, workers=options.workers, **common)
