"""Items: topics, series, Zipf popularity, quality, creation times, and their titles and descriptions."""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from recsys.data.synthetic.config import DAY, SyntheticConfig, make_ids, utc_datetimes
from recsys.data.synthetic.vocabulary import CATEGORIES, N_TOPICS, TOPICS_PER_CATEGORY
from recsys.errors import ConfigError

if TYPE_CHECKING:
    from polars.expr.whenthen import ChainedThen, Then


_FIELDS = ("adj", "adjl", "noun", "noun2", "topic", "hook", "maker", "extra")


def build_catalog(
    rng: np.random.Generator, n_items: int, horizon: int, start_us: int, cfg: SyntheticConfig
) -> dict[str, Any]:
    """Items in an internal topic-sorted order, their latent properties, text and the public frame."""
    n_cat = len(CATEGORIES)
    cat_share = rng.dirichlet(np.full(n_cat, 6.0))
    topic_share = (cat_share[:, None] * rng.dirichlet(np.full(TOPICS_PER_CATEGORY, 3.0), size=n_cat)).ravel()
    counts = 2 + rng.multinomial(n_items - 2 * N_TOPICS, topic_share / topic_share.sum())
    topic = np.repeat(np.arange(N_TOPICS), counts)
    topic_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cat = topic // TOPICS_PER_CATEGORY
    idx = np.arange(n_items)

    # Series: runs of 2-5 consecutive items of one topic.
    unit_len = np.where(rng.random(n_items) < cfg.series_fraction, rng.integers(2, 6, n_items), 1)
    unit = np.repeat(np.arange(n_items), unit_len)[:n_items]
    new_group = np.ones(n_items, dtype=bool)
    new_group[1:] = (unit[1:] != unit[:-1]) | (topic[1:] != topic[:-1])
    group = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)
    group_len = np.diff(np.append(group_start, n_items))
    head = group_start[group]
    volume = idx - head
    series_len = group_len[group]
    in_series = series_len > 1

    # Popularity: Zipf over a random rank within the category; quality follows popularity loosely.
    order = np.lexsort((rng.random(n_items), cat))
    cat_start = np.searchsorted(cat, np.arange(n_cat))
    rank = np.empty(n_items, dtype=np.int64)
    rank[order] = idx - cat_start[cat[order]]
    pop = (rank + 1.0) ** -cfg.zipf_exponent
    logp = np.log(pop)
    z = (logp - logp.mean()) / max(logp.std(), 1e-9)
    quality = np.clip(0.5 * z + rng.normal(0.0, 0.7, n_items), -3.0, 3.0)
    logging_quality = quality + rng.normal(0.0, 0.5, n_items)

    # Creation times: most items exist before the period; a topic's first item always does.
    is_new = rng.random(n_items) < cfg.new_item_fraction
    created = np.where(is_new, rng.uniform(0, horizon, n_items), -rng.uniform(1, 730 * DAY, n_items))
    created[topic_start] = -rng.uniform(1, 730 * DAY, N_TOPICS)
    series_gap = rng.uniform(30 * DAY, 120 * DAY, len(group_start))
    created = np.minimum(created[head] + volume * series_gap[group], horizon - DAY).astype(np.int64)
    created[topic_start] = np.minimum(created[topic_start], -1)

    # Zipf sampling within a topic: G = topic + normalised cumulative popularity inside the topic.
    cum = np.cumsum(pop)
    before = cum[topic_start] - pop[topic_start]
    total = cum[topic_start + counts - 1] - before
    sampler = topic + (cum - before[topic]) / total[topic]
    sampler[topic_start + counts - 1] = np.arange(N_TOPICS) + 1.0

    # Public ids follow creation order, like an auto-increment key.
    by_created = np.lexsort((idx, created))
    number = np.empty(n_items, dtype=np.int64)
    number[by_created] = idx
    public = make_ids("i", n_items)
    item_ids = public.gather(number)

    title, description = _item_text(rng, cat, topic, head, volume, in_series)
    frame = pl.DataFrame(
        {
            "item_id": item_ids,
            "title": title,
            "description": description,
            "category": pl.Series([c.name for c in CATEGORIES], dtype=pl.String).gather(cat),
            "created_at": utc_datetimes(start_us, created),
        }
    ).select(pl.all().gather(by_created))
    return {
        "frame": frame,
        "item_ids": item_ids,
        "topic": topic,
        "topic_start": topic_start,
        "topic_end": topic_start + counts,
        "cat": cat,
        "head": head,
        "volume": volume,
        "series_len": series_len,
        "quality": quality,
        "logging_quality": logging_quality,
        "created": created,
        "sampler": sampler,
    }


def _vocab(level: str, name: str) -> tuple[pl.Series, np.ndarray, np.ndarray]:
    """A flat vocabulary (per category or per topic) with each group's offset and length."""
    if level == "category":
        groups = [getattr(c, name) for c in CATEGORIES]
    else:
        groups = [getattr(t, name) for c in CATEGORIES for t in c.topics]
    lengths = np.array([len(g) for g in groups], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return pl.Series([w for g in groups for w in g], dtype=pl.String), offsets, lengths


def _draw(rng: np.random.Generator, group: np.ndarray, level: str, name: str) -> tuple[pl.Series, np.ndarray]:
    words, offsets, lengths = _vocab(level, name)
    pick = (rng.random(len(group)) * lengths[group]).astype(np.int64)
    return words.gather(offsets[group] + pick), pick


def _template_expr(template: str) -> pl.Expr:
    """A polars expression concatenating a template's literals and field columns."""
    parts: list[pl.Expr] = []
    for literal, name, _, _ in string.Formatter().parse(template):
        if literal:
            parts.append(pl.lit(literal))
        if name:
            if name not in _FIELDS:
                raise ConfigError(f"template {template!r} uses unknown field {name!r}; known: {_FIELDS}")
            parts.append(pl.col(name))
    return pl.concat_str(parts)


def _item_text(
    rng: np.random.Generator,
    cat: np.ndarray,
    topic: np.ndarray,
    head: np.ndarray,
    volume: np.ndarray,
    in_series: np.ndarray,
) -> tuple[pl.Series, pl.Series]:
    """Titles and descriptions from the vocabularies: vocab gathers + one concat per template."""
    n = len(cat)
    adj, _ = _draw(rng, cat, "category", "adjs")
    noun, noun_pick = _draw(rng, topic, "topic", "nouns")
    nouns, offsets, lengths = _vocab("topic", "nouns")
    shift = 1 + (rng.random(n) * (lengths[topic] - 1)).astype(np.int64)
    noun2 = nouns.gather(offsets[topic] + (noun_pick + shift) % lengths[topic])
    hook, _ = _draw(rng, topic, "topic", "hooks")
    maker, _ = _draw(rng, cat, "category", "makers")
    extra, _ = _draw(rng, cat, "category", "extras")
    labels = pl.Series([t.label for c in CATEGORIES for t in c.topics], dtype=pl.String)
    n_titles = np.array([len(c.titles) for c in CATEGORIES])
    n_descs = np.array([len(c.descriptions) for c in CATEGORIES])
    frame = pl.DataFrame(
        {
            "_row": np.arange(n, dtype=np.int64),
            "_cat": cat,
            "_tt": (rng.random(n) * n_titles[cat]).astype(np.int64),
            "_dt": (rng.random(n) * n_descs[cat]).astype(np.int64),
            "adj": adj,
            "adjl": adj.str.to_lowercase(),
            "noun": noun,
            "noun2": noun2,
            "topic": labels.gather(topic),
            "hook": hook,
            "maker": maker,
            "extra": extra,
        }
    )
    parts = []
    for c, category in enumerate(CATEGORIES):
        sub = frame.filter(pl.col("_cat") == c)
        if sub.height == 0:
            continue
        title: Then | ChainedThen = pl.when(pl.col("_tt") == 0).then(_template_expr(category.titles[0]))
        for j, template in enumerate(category.titles[1:], start=1):
            title = title.when(pl.col("_tt") == j).then(_template_expr(template))
        desc: Then | ChainedThen = pl.when(pl.col("_dt") == 0).then(_template_expr(category.descriptions[0]))
        for j, template in enumerate(category.descriptions[1:], start=1):
            desc = desc.when(pl.col("_dt") == j).then(_template_expr(template))
        parts.append(sub.select("_row", title.alias("title"), desc.alias("description")))
    text = pl.concat(parts).sort("_row")
    base = text["title"]
    series = pl.DataFrame(
        {
            "base": base,
            "desc": text["description"],
            "head_title": base.gather(head),
            "sep": pl.Series([c.series_sep for c in CATEGORIES], dtype=pl.String).gather(cat),
            "vol": (volume + 1).astype(np.int64),
            "in_series": in_series,
        }
    ).select(
        pl.when(pl.col("in_series"))
        .then(pl.concat_str([pl.col("head_title"), pl.col("sep"), pl.col("vol").cast(pl.String)]))
        .otherwise(pl.col("base"))
        .alias("title"),
        pl.when(pl.col("in_series"))
        .then(
            pl.concat_str(
                [
                    pl.col("desc"),
                    pl.lit(" Part "),
                    pl.col("vol").cast(pl.String),
                    pl.lit(" of the "),
                    pl.col("head_title"),
                    pl.lit(" series."),
                ]
            )
        )
        .otherwise(pl.col("desc"))
        .alias("description"),
    )
    return series["title"], series["description"]
