"""`recsys baselines`: MostPop and ItemKNN on a split, scored by the shared metrics.

These numbers are the floor every learned model must clear, so they are computed with exactly the
evaluation protocol of `recsys.splits` (full ranking over the catalog, history excluded).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import polars as pl

from recsys.baselines import make_baseline
from recsys.metrics import evaluate_topk

if TYPE_CHECKING:
    from recsys.splits import Split

DEFAULT_KS = (10, 50)


@dataclass
class BaselineResult:
    name: str
    metrics: dict[str, float]
    seconds: float
    topk: pl.DataFrame


def evaluate_baselines(
    split: Split,
    names: list[str],
    stage: Literal["valid", "test"] = "test",
    ks: tuple[int, ...] = DEFAULT_KS,
    params: dict[str, dict] | None = None,
) -> list[BaselineResult]:
    """Fit each baseline on the stage's history and score its top-max(ks) lists on the stage's targets."""
    history = split.history(stage)
    targets = split.targets(stage)
    catalog = split.catalog()
    item_counts = history.group_by("item_id").agg(pl.len().alias("count"))
    users = targets["user_id"].unique().sort()
    results = []
    for name in names:
        started = time.perf_counter()
        model = make_baseline(name, **(params or {}).get(name, {})).fit(history)
        topk = model.recommend(users, k=max(ks), exclude=history, catalog=catalog)
        metrics = evaluate_topk(topk, targets, ks=ks, catalog=catalog, item_counts=item_counts)
        results.append(BaselineResult(name, metrics, time.perf_counter() - started, topk))
    return results


def write_results(results: list[BaselineResult], out: Path) -> Path:
    """metrics.json plus one top-K parquet per system (`user_id, item_id, rank`) for outside rescoring."""
    out.mkdir(parents=True, exist_ok=True)
    for result in results:
        result.topk.select("user_id", "item_id", "rank").write_parquet(out / f"topk_{result.name}.parquet")
    payload = {r.name: {**r.metrics, "seconds": round(r.seconds, 3)} for r in results}
    (out / "metrics.json").write_text(json.dumps(payload, indent=2))
    return out


def results_table(results: list[BaselineResult], columns: tuple[str, ...]) -> list[list[str]]:
    """Rows for display: system, then each metric to 4 decimals, then seconds."""
    rows = []
    for result in results:
        rows.append(
            [result.name, *[f"{result.metrics.get(c, float('nan')):.4f}" for c in columns], f"{result.seconds:.1f}"]
        )
    return rows
