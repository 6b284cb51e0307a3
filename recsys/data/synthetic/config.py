"""The generator's knobs (`SyntheticConfig`), size checks, and its id and time conventions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone

import numpy as np
import polars as pl

from recsys.data.synthetic.vocabulary import N_TOPICS
from recsys.errors import ConfigError

DAY = 86_400


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator; the defaults give the behaviour documented in `recsys.data.synthetic`."""

    days: int = 365
    """Length of the simulated period (interaction timestamps start at `start`)."""
    slate_size: int = 10
    logging_temperature: float = 1.0
    """Temperature of the logging softmax: lower is greedier (and gives smaller propensities)."""
    logging_noise: float = 0.75
    """Std of the logging policy's per-(user, topic) error on the true taste."""
    position_bias: tuple[float, ...] | None = None
    """Examination probability per position; default ``1 / (k + 1) ** 0.7``."""
    click_bias: float = -2.5
    category_concentration: float = 0.25
    topic_concentration: float = 0.6
    drift_range: tuple[float, float] = (0.4, 1.0)
    new_item_fraction: float = 0.3
    series_fraction: float = 0.12
    zipf_exponent: float = 1.0
    p_new_session: float = 0.28
    p_fresh_topic: float = 0.35
    p_series_next: float = 0.2
    purchase_rate: float = 0.3


def position_bias_array(config: SyntheticConfig) -> np.ndarray:
    if config.position_bias is not None:
        bias = np.asarray(config.position_bias, dtype=np.float64)
        if bias.shape != (config.slate_size,) or (bias <= 0).any() or (bias > 1).any():
            raise ConfigError(f"position_bias needs {config.slate_size} values in (0, 1]; got {config.position_bias}")
        return bias
    return 1.0 / (np.arange(config.slate_size) + 1.0) ** 0.7


def resolve_sizes(
    n_interactions: int,
    n_users: int | None,
    n_items: int | None,
    n_requests: int | None,
    cfg: SyntheticConfig,
) -> tuple[int, int, int]:
    if n_interactions < 3:
        raise ConfigError(f"n_interactions must be at least 3 (every user has 3); got {n_interactions}")
    n_users = max(1, n_interactions // 20) if n_users is None else n_users
    if n_users < 1 or 3 * n_users > n_interactions:
        raise ConfigError(
            f"n_users={n_users} is impossible with n_interactions={n_interactions}: every user needs at least 3"
        )
    n_items = max(600, n_interactions // 40) if n_items is None else n_items
    if n_items < 2 * N_TOPICS:
        raise ConfigError(f"n_items must be at least {2 * N_TOPICS} (two per topic); got {n_items}")
    n_requests = n_interactions // 20 if n_requests is None else n_requests
    if n_requests < 0:
        raise ConfigError(f"n_impressions_requests must be >= 0; got {n_requests}")
    if cfg.days < 7:
        raise ConfigError(f"days must be at least 7; got {cfg.days}")
    if not 1 <= cfg.slate_size <= N_TOPICS:
        raise ConfigError(f"slate_size must be in [1, {N_TOPICS}]; got {cfg.slate_size}")
    if not 0.05 <= cfg.logging_temperature <= 100:
        raise ConfigError(f"logging_temperature must be in [0.05, 100]; got {cfg.logging_temperature}")
    return n_users, n_items, n_requests


def start_micros(start: str | datetime | date) -> int:
    if isinstance(start, str):
        try:
            start = datetime.fromisoformat(start)
        except ValueError as exc:
            raise ConfigError(f"start must be an ISO date or datetime; got {start!r}") from exc
    if not isinstance(start, datetime):
        start = datetime(start.year, start.month, start.day)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    return int(start.timestamp()) * 1_000_000


def make_ids(prefix: str, n: int) -> pl.Series:
    """``prefix`` + zero-padded numbers 0..n-1 (6 digits, more when needed)."""
    width = max(6, len(str(n - 1)))
    digits = pl.Series(np.arange(n, dtype=np.int64)).cast(pl.String).str.zfill(width)
    return pl.select(pl.concat_str([pl.lit(prefix), pl.lit(digits)])).to_series().alias(f"{prefix}_id")


def utc_datetimes(start_us: int, seconds: np.ndarray) -> pl.Series:
    """UTC datetimes `seconds` after `start_us`."""
    micros = pl.Series(start_us + seconds.astype(np.int64) * 1_000_000, dtype=pl.Int64)
    return micros.cast(pl.Datetime("us", "UTC"))
