"""Do free-text queries mean what they say? A relevance check built from the catalog itself.

Why: a text query is scored like a one-item user (`EncoderBundle.as_queries`), and with the text
tower's popularity prior that once meant "Toy Story" ranked Shrek and Aladdin above Toy Story 2:
popularity outweighed the query. There are no labelled queries in a catalog, but two judgements
need none:
- title hit@10: the query is an item's own title; a hit when that item is in the top 10;
- genre precision@10: the share of the top 10 that shares a genre (category) with that item.

The query-side prior weight (the value queries put in the prior column; users put 1) is chosen as
the one with the best title hit@10, genre precision breaking ties, the smaller weight winning an
exact tie. It is stored in run.json and the bundle (`query_prior`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

QUERY_PRIOR_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0)
TOP = 10


@dataclass
class QueryProbe:
    """Queries drawn from the catalog: each one an item's title, with that item's row and genres."""

    queries: list[str]
    rows: np.ndarray
    genres: list[frozenset[str]] | None


def genre_sets(items: pl.DataFrame) -> list[frozenset[str]] | None:
    """Each item's genres (or categories) as a set; None when the catalog has no such column."""
    for column in ("genres", "category", "categories"):
        if column in items.columns:
            values = items[column].to_list()
            out: list[frozenset[str]] = []
            for value in values:
                if value is None:
                    out.append(frozenset())
                elif isinstance(value, list):
                    out.append(frozenset(str(v).strip() for v in value if str(v).strip()))
                else:
                    out.append(frozenset(p.strip() for p in str(value).replace(",", "|").split("|") if p.strip()))
            return out
    return None


def catalog_probe(items: pl.DataFrame, rows_of: dict[str, int], n: int = 100, seed: int = 0) -> QueryProbe:
    """`n` random items of `rows_of` with a title (or, lacking a title column, their first text field)."""
    column = "title" if "title" in items.columns else None
    ids = items["item_id"].to_list()
    titles = items[column].to_list() if column else [None] * len(ids)
    genres = genre_sets(items)
    eligible = [
        i
        for i, (item, title) in enumerate(zip(ids, titles, strict=True))
        if item in rows_of and title and str(title).strip()
    ]
    picked = np.random.default_rng(seed).permutation(eligible)[:n] if eligible else np.zeros(0, dtype=np.int64)
    return QueryProbe(
        [str(titles[i]).strip() for i in picked],
        np.asarray([rows_of[ids[i]] for i in picked], dtype=np.int64),
        None if genres is None else [genres[i] for i in picked],
    )


def relevance(
    query_content: np.ndarray,
    item_content: np.ndarray,
    prior: np.ndarray | None,
    probe: QueryProbe,
    item_genres: Sequence[frozenset[str]] | None,
    allowed: np.ndarray,
    weights: Sequence[float] = QUERY_PRIOR_WEIGHTS,
) -> dict[float, dict[str, float]]:
    """Title hit@10 and genre precision@10 of the probe's queries for each query-side prior weight."""
    base = query_content @ item_content.T
    base[:, ~allowed] = -np.inf
    out = {}
    for weight in weights if prior is not None else (0.0,):
        scores = base + (weight * prior[None, :] if prior is not None else 0.0)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :TOP]
        hits = float(np.mean([row in set(t) for row, t in zip(probe.rows.tolist(), top.tolist(), strict=True)]))
        result = {"title_hit@10": hits}
        if probe.genres is not None and item_genres is not None:
            shares = [
                float(np.mean([bool(wanted & item_genres[j]) for j in t])) if wanted else np.nan
                for wanted, t in zip(probe.genres, top.tolist(), strict=True)
            ]
            result["genre_precision@10"] = float(np.nanmean(shares)) if not np.isnan(shares).all() else 0.0
        out[float(weight)] = result
    return out


def choose_query_prior(report: dict[float, dict[str, float]]) -> float:
    """Best title hit@10, then genre precision@10; the smaller weight on an exact tie."""
    return max(report, key=lambda w: (report[w]["title_hit@10"], report[w].get("genre_precision@10", 0.0), -w))
