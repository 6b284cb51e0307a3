"""The free-text relevance check that sets the query-side popularity prior (encoders.query_check)."""

from __future__ import annotations

import numpy as np
import polars as pl

from encoders.query_check import QueryProbe, catalog_probe, choose_query_prior, genre_sets, relevance


def test_probe_draws_titled_items_with_their_genres():
    items = pl.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "title": ["Alpha", "", None, "Delta"],
            "genres": ["Drama|Comedy", "Drama", "Horror", ""],
        }
    )
    probe = catalog_probe(items, {"a": 0, "b": 1, "c": 2, "d": 3}, n=10)
    assert sorted(probe.queries) == ["Alpha", "Delta"]  # untitled items are not queries
    assert {q: int(r) for q, r in zip(probe.queries, probe.rows, strict=True)} == {"Alpha": 0, "Delta": 3}
    assert genre_sets(items)[0] == frozenset({"Drama", "Comedy"}) and genre_sets(items)[3] == frozenset()


def test_a_heavy_query_prior_buries_the_item_the_query_names():
    """Item 0 matches the query best, item 1 is popular: weight 0 finds item 0 first, weight 1 does not."""
    n = 12
    items = np.eye(n, dtype=np.float32)
    query = np.zeros((1, n), dtype=np.float32)
    query[0, 0] = 1.0
    prior = np.full(n, 2.0, dtype=np.float32)
    prior[0] = 0.0  # the named item is unpopular
    probe = QueryProbe(["zero"], np.array([0]), [frozenset({"g"})])
    genres = [frozenset({"g"})] + [frozenset({"h"})] * (n - 1)
    report = relevance(query, items, prior, probe, genres, np.ones(n, bool), weights=(0.0, 1.0))
    assert report[0.0]["title_hit@10"] == 1.0 and report[1.0]["title_hit@10"] == 0.0
    assert report[0.0]["genre_precision@10"] == 0.1
    assert choose_query_prior(report) == 0.0


def test_ties_go_to_the_smaller_weight():
    report = {0.0: {"title_hit@10": 0.5}, 0.5: {"title_hit@10": 0.5}, 1.0: {"title_hit@10": 0.4}}
    assert choose_query_prior(report) == 0.0
