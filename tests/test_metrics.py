"""Ranking metrics against hand-computed values, a loop-based reference, and malformed input."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from recsys.errors import ConfigError, DataError
from recsys.metrics import evaluate_topk, item_counts_from, per_user_metrics, score_topk_file
from recsys.splits import leave_last_out


def lists(rows: dict[str, list[str]]) -> pl.DataFrame:
    """{user: [item at rank 1, item at rank 2, ...]} -> user_id, item_id, rank."""
    out = [(u, item, r) for u, items in rows.items() for r, item in enumerate(items, start=1)]
    schema = {"user_id": pl.String, "item_id": pl.String, "rank": pl.Int64}
    return pl.DataFrame(out, schema=schema, orient="row")


def targets(pairs: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame(pairs, schema={"user_id": pl.String, "item_id": pl.String}, orient="row")


def row(table: pl.DataFrame, user: str) -> dict:
    return table.filter(pl.col("user_id") == user).to_dicts()[0]


def test_target_at_rank_one_scores_one_everywhere():
    m = row(per_user_metrics(lists({"u": ["a", "b", "c"]}), targets([("u", "a")]), ks=[10]), "u")
    assert m["hr@10"] == m["recall@10"] == m["ndcg@10"] == m["mrr@10"] == m["map@10"] == 1.0


def test_target_at_rank_three():
    m = row(per_user_metrics(lists({"u": ["a", "b", "c"]}), targets([("u", "c")]), ks=[10]), "u")
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(4)) == pytest.approx(0.5)
    assert m["mrr@10"] == pytest.approx(1 / 3)
    assert m["map@10"] == pytest.approx(1 / 3)  # precision@3 = 1/3, one relevant item
    assert m["hr@10"] == 1.0 and m["recall@10"] == 1.0


def test_ranks_beyond_k_are_ignored():
    items = [f"i{n}" for n in range(1, 13)]  # target sits at rank 11
    m = row(per_user_metrics(lists({"u": items}), targets([("u", "i11")]), ks=[10, 50]), "u")
    assert m["hr@10"] == m["ndcg@10"] == m["mrr@10"] == m["map@10"] == m["recall@10"] == 0.0
    assert m["hr@50"] == 1.0
    assert m["ndcg@50"] == pytest.approx(1 / math.log2(12))
    assert m["mrr@50"] == pytest.approx(1 / 11)


def test_user_without_recommendations_scores_zero_and_counts():
    table = per_user_metrics(lists({"u": ["a"]}), targets([("u", "a"), ("ghost", "a")]), ks=[10])
    assert table["user_id"].to_list() == ["ghost", "u"]
    ghost = row(table, "ghost")
    assert all(ghost[f"{m}@10"] == 0.0 for m in ("hr", "recall", "ndcg", "mrr", "map"))
    result = evaluate_topk(lists({"u": ["a"]}), targets([("u", "a"), ("ghost", "a")]), ks=[10])
    assert result["users"] == 2
    assert result["ndcg@10"] == pytest.approx(0.5)


def test_several_relevant_items():
    # relevant {a, c, e}; list a b c d -> hits at ranks 1 and 3
    relevant = targets([("u", "a"), ("u", "c"), ("u", "e")])
    table = per_user_metrics(lists({"u": ["a", "b", "c", "d"]}), relevant, ks=[2, 10])
    m = row(table, "u")
    assert m["n_relevant"] == 3
    # K=2: one hit at rank 1; IDCG over min(3, 2) = 2 slots
    assert m["recall@2"] == pytest.approx(1 / 3)
    assert m["ndcg@2"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert m["map@2"] == pytest.approx((1 / 1) / 2)
    # K=10: hits at ranks 1 and 3; IDCG over 3 slots
    assert m["recall@10"] == pytest.approx(2 / 3)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@10"] == pytest.approx(dcg / idcg)
    assert m["mrr@10"] == 1.0
    assert m["map@10"] == pytest.approx((1 / 1 + 2 / 3) / 3)


def test_perfect_list_with_more_relevant_than_slots_scores_one():
    table = per_user_metrics(lists({"u": ["a", "b"]}), targets([("u", x) for x in "abcd"]), ks=[2])
    m = row(table, "u")
    assert m["ndcg@2"] == pytest.approx(1.0)
    assert m["map@2"] == pytest.approx(1.0)
    assert m["recall@2"] == pytest.approx(0.5)  # recall = hits / |relevant| (documented)


def test_ranks_are_taken_as_given_not_renumbered():
    topk = pl.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "rank": [1, 4]})
    m = row(per_user_metrics(topk, targets([("u", "b")]), ks=[3, 10]), "u")
    assert m["hr@3"] == 0.0
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(5))


def test_duplicate_targets_count_once_and_extra_users_are_ignored():
    topk = lists({"u": ["a", "b"], "not_a_target": ["a"]})
    m = per_user_metrics(topk, targets([("u", "b"), ("u", "b")]), ks=[10])
    assert m.height == 1 and m["n_relevant"].to_list() == [1]
    assert m["ndcg@10"][0] == pytest.approx(1 / math.log2(3))


def test_integer_ids_are_accepted():
    topk = pl.DataFrame({"user_id": [1, 1], "item_id": [10, 20], "rank": [1, 2]})
    result = evaluate_topk(topk, pl.DataFrame({"user_id": ["1"], "item_id": ["20"]}), ks=[10])
    assert result["mrr@10"] == pytest.approx(0.5)


def test_coverage_novelty_and_popularity_bias_by_hand():
    topk = lists({"u": ["x", "y", "z"], "v": ["x", "q", "y"], "outsider": ["w"]})
    catalog = pl.Series(["x", "y", "z", "q", "w"])
    counts = pl.DataFrame({"item_id": ["x", "y", "z", "q"], "count": [4, 2, 1, 1]})  # total 8; w unseen
    result = evaluate_topk(topk, targets([("u", "z"), ("v", "y")]), ks=[2, 10], catalog=catalog, item_counts=counts)
    # top-2 slots of target users: x, y, x, q (the outsider is not a target user)
    assert result["coverage@2"] == pytest.approx(3 / 5)
    assert result["coverage@10"] == pytest.approx(4 / 5)
    info = {"x": -math.log2(4 / 8), "y": -math.log2(2 / 8), "z": -math.log2(1 / 8), "q": -math.log2(1 / 8)}
    assert result["novelty@2"] == pytest.approx((info["x"] * 2 + info["y"] + info["q"]) / 4)
    # percentile = average rank of the count among the 5 catalog items / 5:
    # w (0) -> 1, z and q (1, 1) -> 2.5, y (2) -> 4, x (4) -> 5
    pct = {"w": 1 / 5, "z": 2.5 / 5, "q": 2.5 / 5, "y": 4 / 5, "x": 5 / 5}
    assert result["popularity_bias@2"] == pytest.approx((pct["x"] * 2 + pct["y"] + pct["q"]) / 4)
    slots10 = ["x", "y", "z", "x", "q", "y"]
    assert result["popularity_bias@10"] == pytest.approx(sum(pct[i] for i in slots10) / 6)
    assert result["novelty@10"] == pytest.approx(sum(info[i] for i in slots10) / 6)
    assert result["users"] == 2
    # ranking metrics: u hits z at 3 (only at K=10), v hits y at 3
    assert result["hr@2"] == 0.0 and result["hr@10"] == 1.0
    assert result["ndcg@10"] == pytest.approx(0.5)


def test_never_seen_item_gets_finite_maximal_novelty():
    counts = pl.DataFrame({"item_id": ["x"], "count": [4]})
    result = evaluate_topk(
        lists({"u": ["new"]}), targets([("u", "x")]), ks=[1], catalog=pl.Series(["x", "new"]), item_counts=counts
    )
    assert result["novelty@1"] == pytest.approx(-math.log2(1 / 4))  # floored at one interaction


def test_list_metrics_absent_without_catalog_or_counts():
    result = evaluate_topk(lists({"u": ["a"]}), targets([("u", "a")]), ks=[5])
    assert "coverage@5" not in result and "novelty@5" not in result and "popularity_bias@5" not in result


def test_empty_topk_scores_zero():
    empty = pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String, "rank": pl.Int64})
    result = evaluate_topk(
        empty,
        targets([("u", "a"), ("v", "b")]),
        ks=[10],
        catalog=pl.Series(["a", "b"]),
        item_counts=pl.DataFrame({"item_id": ["a"], "count": [1]}),
    )
    assert result["users"] == 2
    assert result["ndcg@10"] == result["hr@10"] == result["map@10"] == 0.0
    assert result["coverage@10"] == 0.0


def frame(**columns) -> pl.DataFrame:
    ids = {c: pl.String for c in ("user_id", "item_id") if c in columns}
    return pl.DataFrame(columns, schema_overrides=ids)


EMPTY_TARGETS = pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String})
BAD_INPUT = [
    # (case, topk (None: a valid list), targets (None: valid), ks, error, column named)
    (
        "duplicate item in one list",
        frame(user_id=["u", "u"], item_id=["a", "a"], rank=[1, 2]),
        None,
        [10],
        DataError,
        "item_id",
    ),
    (
        "duplicate rank in one list",
        frame(user_id=["u", "u"], item_id=["a", "b"], rank=[1, 1]),
        None,
        [10],
        DataError,
        "rank",
    ),
    ("rank zero", frame(user_id=["u"], item_id=["a"], rank=[0]), None, [10], DataError, "rank"),
    ("float rank", frame(user_id=["u"], item_id=["a"], rank=[1.0]), None, [10], DataError, "rank"),
    ("missing rank column", frame(user_id=["u"], item_id=["a"]), None, [10], DataError, "rank"),
    ("null item", frame(user_id=["u"], item_id=[None], rank=[1]), None, [10], DataError, "item_id"),
    ("empty targets", None, EMPTY_TARGETS, [10], DataError, None),
    ("targets without item_id", None, frame(user_id=["u"]), [10], DataError, "item_id"),
    ("cutoff zero", None, None, [0], ConfigError, None),
    ("no cutoffs", None, None, [], ConfigError, None),
    ("fractional cutoff", None, None, [2.5], ConfigError, None),
]


@pytest.mark.parametrize(("case", "topk", "tgt", "ks", "error", "column"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_malformed_input_is_named(case, topk, tgt, ks, error, column):
    topk = topk if topk is not None else lists({"u": ["a", "b"]})
    tgt = tgt if tgt is not None else targets([("u", "a")])
    with pytest.raises(error) as info:
        per_user_metrics(topk, tgt, ks=ks)
    if column is not None:
        assert info.value.column == column
    if case == "duplicate item in one list":
        assert info.value.row == 1 and "row 1" in str(info.value)


def _reference(topk: pl.DataFrame, tgt: pl.DataFrame, k: int) -> dict[str, dict[str, float]]:
    """Textbook per-user loop, written independently of the vectorised code."""
    lists_by_user: dict[str, list[tuple[int, str]]] = {}
    for u, i, r in topk.iter_rows():
        lists_by_user.setdefault(u, []).append((r, i))
    relevant: dict[str, set[str]] = {}
    for u, i in tgt.iter_rows():
        relevant.setdefault(u, set()).add(i)
    out = {}
    for u, rel in relevant.items():
        ranked = sorted(lists_by_user.get(u, []))
        hits = [r for r, i in ranked if r <= k and i in rel]
        dcg = sum(1 / math.log2(r + 1) for r in hits)
        idcg = sum(1 / math.log2(p + 1) for p in range(1, min(len(rel), k) + 1))
        ap = sum((n + 1) / r for n, r in enumerate(hits)) / min(len(rel), k)
        out[u] = {
            "hr": float(bool(hits)),
            "recall": len(hits) / len(rel),
            "ndcg": dcg / idcg,
            "mrr": 1 / hits[0] if hits else 0.0,
            "map": ap,
        }
    return out


def test_matches_loop_reference_on_random_data():
    rng = random.Random(7)
    items = [f"i{n}" for n in range(30)]
    topk_rows, tgt_rows = [], []
    for u in range(60):
        user = f"u{u}"
        ranked = rng.sample(items, rng.randint(0, 20))
        ranks = sorted(rng.sample(range(1, 40), len(ranked)))  # holes in the ranks on purpose
        topk_rows += [(user, i, r) for i, r in zip(ranked, ranks, strict=True)]
        tgt_rows += [(user, i) for i in rng.sample(items, rng.randint(1, 4))]
    topk = pl.DataFrame(topk_rows, schema={"user_id": pl.String, "item_id": pl.String, "rank": pl.Int64}, orient="row")
    tgt = targets(tgt_rows)
    table = per_user_metrics(topk, tgt, ks=[5, 10, 50])
    for k in (5, 10, 50):
        ref = _reference(topk, tgt, k)
        assert table.height == len(ref)
        for got in table.iter_rows(named=True):
            for name, value in ref[got["user_id"]].items():
                assert got[f"{name}@{k}"] == pytest.approx(value), (got["user_id"], name, k)


def _tiny_split():
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    rows = []
    for u, seq in {"u1": "abcd", "u2": "bcda", "u3": "cab"}.items():
        rows += [(u, item, start + timedelta(days=n)) for n, item in enumerate(seq)]
    inter = pl.DataFrame(
        rows, schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Datetime("us", "UTC")}, orient="row"
    )
    return leave_last_out(inter)


def test_score_topk_file_matches_in_memory_scoring(tmp_path):
    split = _tiny_split()
    split.save(tmp_path / "split")
    topk = lists({"u1": ["d", "a"], "u2": ["b", "a"], "u3": ["a", "c"]})
    topk.write_parquet(tmp_path / "topk.parquet")
    expected = evaluate_topk(
        topk,
        split.targets("test"),
        ks=[1, 2],
        catalog=split.catalog(),
        item_counts=item_counts_from(split.history("test")),
    )
    got = score_topk_file(tmp_path / "topk.parquet", tmp_path / "split", stage="test", ks=[1, 2])
    assert got == pytest.approx(expected)
    # test targets: u1 -> d (rank 1), u2 -> a (rank 2), u3 -> b (missing)
    assert got["hr@2"] == pytest.approx(2 / 3)
    assert got["mrr@2"] == pytest.approx((1 + 0.5 + 0) / 3)
    valid = score_topk_file(tmp_path / "topk.parquet", tmp_path / "split", stage="valid", ks=[2])
    assert valid["users"] == 3


def test_score_topk_file_errors_name_the_file(tmp_path):
    _tiny_split().save(tmp_path / "split")
    with pytest.raises(DataError, match="not found"):
        score_topk_file(tmp_path / "missing.parquet", tmp_path / "split")
    bad = tmp_path / "dup.parquet"
    pl.DataFrame({"user_id": ["u1", "u1"], "item_id": ["a", "a"], "rank": [1, 2]}).write_parquet(bad)
    with pytest.raises(DataError) as info:
        score_topk_file(bad, tmp_path / "split")
    assert info.value.file == str(bad) and info.value.column == "item_id"
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="parquet"):
        score_topk_file(tmp_path / "text.parquet", tmp_path / "split")
    lists({"u1": ["a"]}).write_parquet(tmp_path / "ok.parquet")
    with pytest.raises(ConfigError):
        score_topk_file(tmp_path / "ok.parquet", tmp_path / "split", stage="train")
