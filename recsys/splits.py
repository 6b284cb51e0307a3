"""Evaluation splits (docs/architecture.md): temporal leave-last-out per user, and a global time cut.

Leave-last-out sorts each user's interactions by (ts, item_id) — the item id breaks same-second
ties so the split is deterministic — and holds out the last (test) and the one before (valid).
Users with fewer than `min_interactions` (default 3) stay wholly in train: they still teach the
models but have no target to be scored on.

At test time a user's history is train + valid; at validation time it is train alone. The
ranking catalog is every item with at least one interaction anywhere in the data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, cast

import polars as pl

from recsys.data.order import chronological
from recsys.errors import ConfigError, DataError

SPLIT_MANIFEST = "split.json"
Stage = Literal["valid", "test"]


@dataclass
class Split:
    """Three interaction tables with the same columns, plus how they were made."""

    train: pl.DataFrame
    valid: pl.DataFrame
    test: pl.DataFrame
    kind: str
    params: dict[str, object] = field(default_factory=dict)

    def history(self, stage: Stage) -> pl.DataFrame:
        """Interactions a model may see when predicting `stage` targets (and must not recommend)."""
        if stage == "valid":
            return self.train
        if stage == "test":
            return pl.concat([self.train, self.valid], how="vertical_relaxed")
        raise ConfigError(f"unknown stage {stage!r}; use 'valid' or 'test'")

    def targets(self, stage: Stage) -> pl.DataFrame:
        if stage not in ("valid", "test"):
            raise ConfigError(f"unknown stage {stage!r}; use 'valid' or 'test'")
        return self.valid if stage == "valid" else self.test

    def catalog(self) -> pl.Series:
        """Every item with at least one interaction in any part (the full-ranking catalog)."""
        return pl.concat([self.train["item_id"], self.valid["item_id"], self.test["item_id"]]).unique().sort()

    def counts(self) -> dict[str, int]:
        return {
            "train": self.train.height,
            "valid": self.valid.height,
            "test": self.test.height,
            "test_users": self.test["user_id"].n_unique(),
            "catalog": self.catalog().len(),
        }

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("train", "valid", "test"):
            target = folder / f"{name}.parquet"
            tmp = target.with_suffix(".parquet.tmp")
            getattr(self, name).write_parquet(tmp)
            tmp.replace(target)
        manifest = {"kind": self.kind, "params": self.params, "counts": self.counts()}
        (folder / SPLIT_MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Split:
        folder = Path(folder)
        manifest_path = folder / SPLIT_MANIFEST
        if not manifest_path.exists():
            raise DataError("not a split folder (no split.json); create one with `recsys data split`", file=str(folder))
        manifest = json.loads(manifest_path.read_text())
        parts = {name: pl.read_parquet(folder / f"{name}.parquet") for name in ("train", "valid", "test")}
        return cls(**parts, kind=manifest["kind"], params=manifest.get("params", {}))


def _ordered(interactions: pl.DataFrame) -> pl.DataFrame:
    return chronological(interactions).with_columns(
        pl.int_range(pl.len(), 0, -1).over("user_id").alias("_from_end")  # 1 = last interaction
    )


def leave_last_out(interactions: pl.DataFrame, min_interactions: int = 3) -> Split:
    """Per user: last interaction -> test, the one before -> valid, the rest -> train."""
    if min_interactions < 3:
        raise ConfigError("min_interactions must be at least 3 (one train, one valid, one test)")
    ordered = _ordered(interactions).with_columns(pl.len().over("user_id").alias("_n"))
    eligible = pl.col("_n") >= min_interactions
    test = ordered.filter(eligible & (pl.col("_from_end") == 1))
    valid = ordered.filter(eligible & (pl.col("_from_end") == 2))
    train = ordered.filter(~eligible | (pl.col("_from_end") > 2))
    drop = ["_from_end", "_n"]
    return Split(
        train=train.drop(drop),
        valid=valid.drop(drop),
        test=test.drop(drop),
        kind="leave_last_out",
        params={"min_interactions": min_interactions},
    )


def _utc(moment: datetime | str) -> datetime:
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment)
        except ValueError as exc:
            raise ConfigError(f"bad cut time {moment!r}; use ISO-8601 such as 2018-01-01T00:00:00") from exc
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def global_time_cut(
    interactions: pl.DataFrame,
    test_start: datetime | str,
    valid_start: datetime | str | None = None,
) -> Split:
    """train: ts < valid_start (or test_start); valid: [valid_start, test_start); test: ts >= test_start.

    Every interaction of the test window is a target; users first seen after the cut stay in test
    (they are the cold-start users a deployed model would meet).
    """
    test_at = _utc(test_start)
    valid_at = _utc(valid_start) if valid_start is not None else test_at
    if valid_at > test_at:
        raise ConfigError("valid_start must not be after test_start")
    ordered = chronological(interactions)
    ts = pl.col("ts")
    train = ordered.filter(ts < valid_at)
    valid = ordered.filter((ts >= valid_at) & (ts < test_at))
    test = ordered.filter(ts >= test_at)
    if train.height == 0 or test.height == 0:
        lo, hi = cast(datetime, ordered["ts"].min()), cast(datetime, ordered["ts"].max())
        raise ConfigError(f"cut {test_at.isoformat()} leaves an empty train or test part; data spans {lo} .. {hi}")
    return Split(
        train=train,
        valid=valid,
        test=test,
        kind="global_time_cut",
        params={"test_start": test_at.isoformat(), "valid_start": valid_at.isoformat()},
    )
