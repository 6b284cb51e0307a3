"""`run_ab` end to end on a synthetic split: systems from names, files and tables; the written report."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import matplotlib.image as mpimg
import polars as pl
import pytest

from jobs.ab_job import OPEConfig, SegmentConfig, StatsConfig, run_ab
from recsys.baselines import ItemKNN
from recsys.data.synthetic import generate
from recsys.errors import ConfigError, DataError
from recsys.metrics import per_user_metrics
from recsys.splits import Split, leave_last_out
from recsys.ties import tie_free_users

FAST = {"stats": StatsConfig(n_bootstrap=1000, n_permutations=1000)}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A saved split, its dataset folder (with impressions) and an ItemKNN top-K file written 'outside'."""
    root = tmp_path_factory.mktemp("ab")
    dataset = generate(6000, seed=5, n_impressions_requests=800)
    dataset.save(root / "dataset")
    split = leave_last_out(dataset.interactions)
    split.save(root / "split")
    history = split.history("test")
    users = split.test["user_id"].unique().sort()
    topk = ItemKNN().fit(history).recommend(users, k=50, exclude=history, catalog=split.catalog())
    topk.select("user_id", "item_id", "rank").write_parquet(root / "topk_itemknn.parquet")
    return {"root": root, "split": split, "topk": topk}


def _strict_json(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_run_ab_writes_a_complete_report(workspace, tmp_path):
    root = workspace["root"]
    calls = []
    result = run_ab(
        root / "split",
        "mostpop",
        root / "topk_itemknn.parquet",
        ope=OPEConfig(impressions=root / "dataset"),
        out=tmp_path / "report",
        log_fn=lambda r, folder: calls.append((r, folder)),
        **FAST,
    )
    folder = tmp_path / "report"
    assert calls == [(result, folder)]
    for name in ("metrics_ci.png", "segment_deltas.png", "lift_by_history.png", "ope.png"):
        path = folder / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        height, width = mpimg.imread(path).shape[:2]
        assert height > 300 and width > 500

    markdown = (folder / "report.md").read_text()
    for line in result.verdicts():
        assert f"- {line}" in markdown
    for section in (
        "## Metrics",
        "## Segments",
        "## Lift by history length",
        "## Coverage, novelty",
        "## Off-policy estimates",
        "](metrics_ci.png)",
        "](segment_deltas.png)",
        "](lift_by_history.png)",
        "](ope.png)",
    ):
        assert section in markdown
    assert "top-K file" in markdown and "MostPop" in markdown

    data = _strict_json((folder / "report.json").read_text())
    assert data["verdicts"] == result.verdicts()
    metrics = {m["metric"]: m for m in data["comparison"]["metrics"]}
    assert list(metrics) == result.settings["metrics"] and len(metrics) == 10
    for m in result.comparison.metrics:
        saved = metrics[m.metric]
        assert saved["diff"] == pytest.approx(m.diff) and saved["ci_low"] == pytest.approx(m.ci_low)
        assert saved["p_holm"] == pytest.approx(m.p_holm)
        assert m.verdict.startswith(
            "B better" if m.significant and m.diff > 0 else "A better" if m.significant else "no significant difference"
        )
    reference = data["reference"]  # A, B and the reference baselines, scored on the same targets
    assert len(reference) == 4 and {"baseline mostpop", "baseline itemknn"} <= set(reference)
    a_key = next(k for k in reference if k.startswith("A: "))
    b_key = next(k for k in reference if k.startswith("B: "))
    assert reference["baseline mostpop"] == reference[a_key]  # A is MostPop: the same lists
    assert reference["baseline itemknn"]["ndcg@10"] == pytest.approx(reference[b_key]["ndcg@10"])
    assert reference[b_key]["ndcg@10"] == pytest.approx(result.comparison.by_metric()["ndcg@10"].mean_b)
    assert "## All systems and reference baselines" in markdown
    assert set(data["beyond_accuracy"]) == {"A", "B"}
    assert {"coverage@10", "novelty@10", "popularity_bias@10"} <= set(data["beyond_accuracy"]["A"])
    assert set(data["ope"]["results"]) == {"A", "B"} and "B - A" in data["ope"]["diffs"]
    for label in ("A", "B"):  # both lists follow the protocol: no seen item, nothing outside the catalog
        lists = data["diagnostics"][f"lists_{label}"]
        assert lists["slots_with_seen_items"] == 0 and lists["slots_outside_catalog"] == 0
        assert lists["target_users_with_list"] == lists["target_users"]
    kinds = [(s["kind"], s["segment"]) for s in data["segments"]]
    assert kinds == [
        ("history", "cold"),
        ("history", "medium"),
        ("history", "heavy"),
        ("item", "head"),
        ("item", "tail"),
        ("item", "cold"),
    ]
    bins = data["lift_bins"]
    assert sum(b["n_users"] for b in bins) == result.comparison.n_users
    assert all(b["low"] <= b["high"] < nxt["low"] for b, nxt in pairwise(bins))


def test_the_report_shows_all_users_and_tie_free_users_side_by_side(workspace, tmp_path):
    """Every metric over all target users and over the tie-free users, with the count."""
    base = workspace["split"]
    # the synthetic log has no same-second events: tie the first 60 test users' targets to their valid ts
    tied = base.test["user_id"].head(60)
    valid_ts = base.valid.select("user_id", pl.col("ts").alias("valid_ts"))
    test = (
        base.test.join(valid_ts, on="user_id")
        .with_columns(pl.when(pl.col("user_id").is_in(tied.to_list())).then("valid_ts").otherwise("ts").alias("ts"))
        .drop("valid_ts")
    )
    split = Split(train=base.train, valid=base.valid, test=test, kind=base.kind)
    result = run_ab(split, "mostpop", workspace["topk"], out=tmp_path, reference_baselines=(), **FAST)
    expected = tie_free_users(split, "test").cast(pl.String)
    assert result.n_tie_free_users == expected.len() == result.comparison.n_users - 60
    assert not set(tied.to_list()) & set(expected.to_list())
    assert result.tie_free is not None and result.tie_free.n_users == result.n_tie_free_users
    assert [m.metric for m in result.tie_free.metrics] == [m.metric for m in result.comparison.metrics]
    # the tie-free numbers are the same comparison restricted to those users
    per_b = per_user_metrics(workspace["topk"], split.test, (10, 50)).join(
        pl.DataFrame({"user_id": expected}), on="user_id", how="semi"
    )
    assert result.tie_free.by_metric()["ndcg@10"].mean_b == pytest.approx(per_b["ndcg@10"].mean())

    markdown = (tmp_path / "report.md").read_text()
    section = markdown.split("## All users and tie-free users")[1].split("\n## ")[0]
    n_all, n_free = result.comparison.n_users, result.n_tie_free_users
    assert f"{n_free} of {n_all} target users" in section and f"({n_free} tie-free)" in markdown
    assert f"tie-free (n={n_free})" in section and f"all (n={n_all})" in section
    rows = [line for line in section.splitlines() if line.startswith("| NDCG@10 ")]
    assert len(rows) == 1 and len(rows[0].strip("|").split("|")) == 9  # metric + 4 per group
    data = _strict_json((tmp_path / "report.json").read_text())
    assert data["n_tie_free_users"] == n_free and data["tie_free"]["n_users"] == n_free
    saved = {m["metric"]: m for m in data["tie_free"]["metrics"]}
    for m in result.tie_free.metrics:
        assert saved[m.metric]["diff"] == pytest.approx(m.diff)
        assert saved[m.metric]["ci_low"] == pytest.approx(m.ci_low)
        assert saved[m.metric]["p_holm"] == pytest.approx(m.p_holm)


def test_the_older_flat_keywords_still_work_with_a_warning(workspace):
    with pytest.warns(DeprecationWarning, match="StatsConfig"):
        old = run_ab(
            workspace["split"],
            "mostpop",
            "itemknn",
            n_bootstrap=1000,
            n_permutations=1000,
            head_share=0.3,
            reference_baselines=(),
        )
    new = run_ab(
        workspace["split"], "mostpop", "itemknn", reference_baselines=(), segments=SegmentConfig(head_share=0.3), **FAST
    )
    assert old.settings == new.settings and old.verdicts() == new.verdicts()
    with pytest.raises(TypeError, match="n_boot"):
        run_ab(workspace["split"], "mostpop", "itemknn", n_boot=1000)


def test_a_baseline_against_its_own_list_file_shows_no_difference(workspace, tmp_path):
    """Same lists through two routes (fitted by name, read from parquet): every difference is exactly 0."""
    root = workspace["root"]
    result = run_ab(
        workspace["split"], "itemknn", str(root / "topk_itemknn.parquet"), out=tmp_path, reference_baselines=(), **FAST
    )
    assert all(m.diff == 0.0 and m.p_holm == 1.0 for m in result.comparison.metrics)
    assert all(line.startswith("no significant difference") for line in result.verdicts())
    assert result.ope is None and not (tmp_path / "ope.png").exists()
    assert "Off-policy" not in (tmp_path / "report.md").read_text()
    in_memory = run_ab(workspace["split"], workspace["topk"], "itemknn", reference_baselines=(), **FAST)
    assert [m.mean_a for m in in_memory.comparison.metrics] == [m.mean_b for m in result.comparison.metrics]


def test_bad_systems_and_inputs_are_reported(workspace, tmp_path):
    split = workspace["split"]
    with pytest.raises(ConfigError, match="neither a baseline"):
        run_ab(split, "mostpop", "no-such-system", **FAST)
    broken = workspace["topk"].with_columns(pl.lit(1).alias("rank"))
    path = Path(tmp_path / "broken.parquet")
    broken.write_parquet(path)
    with pytest.raises(DataError, match="rank used twice") as err:
        run_ab(split, "mostpop", path, **FAST)
    assert err.value.file == str(path)
    with pytest.raises(ConfigError, match="unknown metric"):
        run_ab(split, "mostpop", "itemknn", metrics=["ndcg@7"], **FAST)
    log = pl.read_parquet(workspace["root"] / "dataset" / "impressions.parquet").drop("propensity")
    with pytest.raises(DataError, match="propensity"):
        run_ab(split, "mostpop", "itemknn", ope=OPEConfig(impressions=log), **FAST)
