"""`generate` and `generate_with_truth`: the steps of the package put together, one seeded stream each."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np

from recsys.data.dataset import Dataset
from recsys.data.synthetic.catalog import build_catalog
from recsys.data.synthetic.config import (
    DAY,
    SyntheticConfig,
    make_ids,
    position_bias_array,
    resolve_sizes,
    start_micros,
)
from recsys.data.synthetic.impressions import sample_impressions
from recsys.data.synthetic.sessions import build_users, sample_interactions
from recsys.data.synthetic.truth import GroundTruth
from recsys.data.synthetic.vocabulary import CATEGORIES, N_TOPICS, TEXT_TEMPLATE


def generate(
    n_interactions: int = 20_000,
    n_users: int | None = None,
    n_items: int | None = None,
    seed: int = 0,
    n_impressions_requests: int | None = None,
    start: str | datetime | date = "2024-01-01",
    config: SyntheticConfig | None = None,
) -> Dataset:
    """A synthetic `Dataset` named ``"synthetic"``; see `recsys.data.synthetic` for what it contains.

    Defaults: ``n_users = n_interactions // 20``, ``n_items = max(600, n_interactions // 40)``,
    ``n_impressions_requests = n_interactions // 20`` (0 gives no impressions table).
    """
    dataset, _ = generate_with_truth(n_interactions, n_users, n_items, seed, n_impressions_requests, start, config)
    return dataset


def generate_with_truth(
    n_interactions: int = 20_000,
    n_users: int | None = None,
    n_items: int | None = None,
    seed: int = 0,
    n_impressions_requests: int | None = None,
    start: str | datetime | date = "2024-01-01",
    config: SyntheticConfig | None = None,
) -> tuple[Dataset, GroundTruth]:
    """Like `generate`, plus the `GroundTruth` needed to compute true values of target policies."""
    cfg = config or SyntheticConfig()
    n_users, n_items, n_requests = resolve_sizes(n_interactions, n_users, n_items, n_impressions_requests, cfg)
    start_us = start_micros(start)
    horizon = cfg.days * DAY
    catalog_ss, users_ss, inter_ss, imp_ss = np.random.SeedSequence(seed).spawn(4)

    catalog = build_catalog(np.random.default_rng(catalog_ss), n_items, horizon, start_us, cfg)
    users = build_users(np.random.default_rng(users_ss), n_users, n_interactions, horizon, cfg)
    truth = GroundTruth(
        start_us=start_us,
        categories=tuple(c.name for c in CATEGORIES),
        user_ids=make_ids("u", n_users),
        item_ids=catalog["item_ids"],
        item_topic=catalog["topic"],
        item_quality=catalog["quality"],
        item_logging_quality=catalog["logging_quality"],
        item_created_s=catalog["created"],
        theta=users["theta"],
        phi=users["phi"],
        drift=users["drift"],
        first_s=users["first_s"],
        last_s=users["last_s"],
        logging_noise=users["noise"],
        position_bias=position_bias_array(cfg),
        click_bias=cfg.click_bias,
        logging_temperature=cfg.logging_temperature,
    )
    interactions = sample_interactions(np.random.default_rng(inter_ss), truth, catalog, users, cfg)
    impressions = None
    if n_requests:
        impressions = sample_impressions(np.random.default_rng(imp_ss), truth, users, n_requests, cfg)
    notes: dict[str, int | str] = {
        "generator": "recsys.data.synthetic",
        "seed": seed,
        "start": str(start),
        "days": cfg.days,
        "categories": len(CATEGORIES),
        "topics": N_TOPICS,
        "slate_size": cfg.slate_size,
        "logging_temperature": str(cfg.logging_temperature),
        "positions": "0-based",
        "propensity": "Plackett-Luce conditional probability given the items at earlier positions",
    }
    dataset = Dataset(
        items=catalog["frame"],
        interactions=interactions,
        impressions=impressions,
        name="synthetic",
        text_template=TEXT_TEMPLATE,
        notes=notes,
    )
    return dataset, truth
