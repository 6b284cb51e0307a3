"""`recsys ab`: decide offline whether system B beats system A on the same split (docs/architecture.md, A/B evaluation).

`run_ab` is the library entry (notebooks and other jobs call it; the CLI is a thin layer over it).
A and B are each

- a baseline name (`mostpop`, `itemknn`): fitted here on the stage's history and ranked over the
  split's catalog with the history excluded (full ranking, history excluded), parameters via
  `baseline_params={"itemknn": {"neighbors": 10}}`;
- a path to a parquet top-K file (`user_id, item_id, rank`): how the encoder, the ranker or any
  outside system plugs in: write the lists (for the stage's target users, ranked over the same
  catalog, history excluded), then compare them;
- a `train-encoder` / `train-ranker` output folder: its saved `topk_<stage>.parquet`;
- a model: `encoder:<ref>`, `ranker:<ref>` or `models:/<prefix>-encoder|ranker@alias|/version`,
  scored here on the stage's queries (`jobs.ab_systems`; needs `data=`, the dataset folder);
- a polars DataFrame with the same columns (in-process callers).

Both systems are scored on the same targets by `recsys.metrics.per_user_metrics`; a target user
without a list scores 0. The result holds the paired statistics (`recsys.abtest.paired`) over all
target users and over the tie-free ones (`recsys.ties.tie_free_users`: the target is not in the same
second as the history's last event), segment
breakdowns and beyond-accuracy numbers (`recsys.abtest.segments`), optional off-policy estimates from
an impression log with propensities (`recsys.abtest.ope`), and diagnostics that flag lists that break
the protocol (recommending seen or out-of-catalog items, short lists). `out=` writes the report
(`recsys.abtest.report.write_report`); `log_fn(result, folder)` is called afterwards when given (the
MLflow glue logs the folder as an evaluation run tagged with both systems).

Off-policy estimates: each system's lists become a single-slot policy (`policy_from_topk`: a
uniformly random pick among the user's top `ope_k` items, or rank-weighted) evaluated on the log's
requests at `ope_position` whose user has lists from both systems. Static per-user lists ignore the
request time, so this is an approximation for logs that span a long period (see `policy_from_topk`).
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import polars as pl

from jobs.ab_systems import is_model_reference, model_topk
from recsys.abtest.ope import OPESettings, compare_policies, policy_from_topk
from recsys.abtest.paired import align_per_user, compare_arrays, metric_columns
from recsys.abtest.report import ABResult, write_report
from recsys.abtest.segments import beyond_accuracy, lift_by_history, segment_comparisons
from recsys.baselines import BASELINES, make_baseline
from recsys.data.dataset import Dataset
from recsys.errors import ConfigError, DataError
from recsys.metrics import evaluate_topk, item_counts_from, per_user_metrics
from recsys.splits import Split
from recsys.ties import tie_free_users

DEFAULT_KS = (10, 50)
DEFAULT_SEGMENT_METRICS = ("ndcg@10", "hr@10")
System = str | Path


@dataclass(frozen=True)
class StatsConfig:
    """How the paired statistics are computed (`recsys.abtest.paired.compare_arrays` checks the values)."""

    n_bootstrap: int = 5000
    n_permutations: int = 20_000
    confidence: float = 0.95
    alpha: float = 0.05
    primary: Literal["randomization", "ttest"] = "randomization"
    seed: int = 0


@dataclass(frozen=True)
class OPEConfig:
    """Off-policy estimates from an impression log with propensities (skipped when `impressions` is None).

    `impressions` is a table, a parquet file or a dataset folder holding impressions.parquet; each
    system becomes a single-slot policy at `position` over the user's top `k` items (`weighting`
    uniform or rank-weighted); `clip` caps the importance weights.
    """

    impressions: pl.DataFrame | str | Path | None = None
    position: int = 0
    k: int = 10
    weighting: str = "uniform"
    clip: float | None = None


@dataclass(frozen=True)
class SegmentConfig:
    """User and item segments: history-length `history_thresholds` (cold <= t1 < medium <= t2 < heavy;
    None = terciles), the `head_share` of items that are "head", and the number of history-length `lift_bins`."""

    history_thresholds: tuple[int, int] | None = None
    head_share: float = 0.2
    lift_bins: int = 6


# The flat keyword names `run_ab` took before the configs (kept so older callers still run).
_FLAT_NAMES = {
    **{name: ("stats", name) for name in StatsConfig.__dataclass_fields__},
    "impressions": ("ope", "impressions"),
    "ope_position": ("ope", "position"),
    "ope_k": ("ope", "k"),
    "ope_weighting": ("ope", "weighting"),
    "clip": ("ope", "clip"),
    **{name: ("segments", name) for name in SegmentConfig.__dataclass_fields__},
}


def _with_flat(configs: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """Fold flat keywords (`n_bootstrap=200`) into the configs; an unknown name is a TypeError, as usual."""
    if not flat:
        return configs
    unknown = sorted(set(flat) - set(_FLAT_NAMES))
    if unknown:
        raise TypeError(f"run_ab() got unexpected keyword argument(s): {', '.join(unknown)}")
    warnings.warn(
        "run_ab(): pass stats=StatsConfig(...), ope=OPEConfig(...), segments=SegmentConfig(...) "
        f"instead of {', '.join(sorted(flat))}",
        DeprecationWarning,
        stacklevel=3,
    )
    changes: dict[str, dict[str, Any]] = {}
    for name, value in flat.items():
        group, field_name = _FLAT_NAMES[name]
        changes.setdefault(group, {})[field_name] = value
    return {group: replace(config, **changes.get(group, {})) for group, config in configs.items()}


def _cutoffs(ks: Sequence[int]) -> tuple[int, ...]:
    """Sorted distinct positive cutoffs (the metrics module re-checks; this is for `max(ks)` before it)."""
    try:
        values = tuple(sorted({int(k) for k in ks}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cutoffs must be positive integers, got {ks!r}") from exc
    if not values or values[0] < 1:
        raise ConfigError(f"cutoffs must be positive integers, got {ks!r}")
    return values


def _load_split(split: Split | str | Path) -> Split:
    return split if isinstance(split, Split) else Split.load(split)


def _read_topk(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for non-parquet input
        raise DataError(f"cannot read top-K list as parquet: {exc}", file=str(path)) from exc


def resolve_system(
    system: System | pl.DataFrame,
    split: Split,
    stage: Literal["valid", "test"],
    k: int,
    baseline_params: dict[str, dict[str, Any]] | None = None,
    data: Dataset | str | Path | None = None,
) -> tuple[pl.DataFrame, str, str | None]:
    """(top-K table, description, file) for a baseline, a parquet path, a run folder, a model or a table."""
    if isinstance(system, pl.DataFrame):
        return system, "top-K table given in memory", None
    if not isinstance(system, str | Path):
        kind = type(system).__name__
        raise ConfigError(f"a system is a baseline name, a parquet path or a DataFrame; got {kind}")
    path = Path(system)
    if path.is_file():
        return _read_topk(path), f"top-K file `{path}`", str(path)
    if path.is_dir():
        saved = path / f"topk_{stage}.parquet"
        if not saved.is_file():
            raise ConfigError(
                f"{path}: a run folder without {saved.name}; train-encoder and train-ranker "
                "runs save their test lists (use --stage test), or pass a top-K parquet"
            )
        return _read_topk(saved), f"run folder `{path}`", str(saved)

    if is_model_reference(str(system)):
        dataset = _load_dataset(data)
        topk, description = model_topk(str(system), dataset, split, stage, k)
        return topk.select("user_id", "item_id", "rank"), description, None
    name = str(system).strip().lower()
    if name in BASELINES:
        params = (baseline_params or {}).get(name, {})
        model = make_baseline(name, **params).fit(split.history(stage))
        users = split.targets(stage)["user_id"].unique().sort()
        topk = model.recommend(users, k=k, exclude=split.history(stage), catalog=split.catalog())
        description = f"baseline `{model!r}` fitted on the {stage} history"
        return topk.select("user_id", "item_id", "rank"), description, None
    raise ConfigError(
        f"system {str(system)!r} is neither a baseline ({', '.join(sorted(BASELINES))}), an existing "
        "top-K parquet file (user_id, item_id, rank) or run folder, nor a model (encoder:<ref>, ranker:<ref>, "
        "models:/...)"
    )


def _load_dataset(data: Dataset | str | Path | None) -> Dataset | None:
    if data is None or isinstance(data, Dataset):
        return data
    return Dataset.load(data)


def _checked_topk(topk: pl.DataFrame, file: str | None, targets: pl.DataFrame, ks: Sequence[int]) -> None:
    """Validate a list table up front, so a malformed file is named in the error."""
    try:
        per_user_metrics(topk, targets.head(1), ks)
    except DataError as exc:
        if file is None or exc.file:
            raise
        raise DataError(exc.reason, file=file, column=exc.column, row=exc.row, count=exc.count) from exc


def list_diagnostics(
    topk: pl.DataFrame, targets: pl.DataFrame, history: pl.DataFrame, catalog: pl.Series, k: int
) -> dict[str, float | int]:
    """How a system's lists relate to the protocol: coverage of target users, length, seen/unknown items."""
    slots = topk.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String), "rank").filter(
        pl.col("rank") <= k
    )
    users = targets.select(pl.col("user_id").cast(pl.String)).unique()
    slots = slots.join(users, on="user_id", how="semi")
    lengths = slots.group_by("user_id").agg(pl.len().alias("n"))
    pairs = history.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)).unique()
    seen = slots.join(pairs, on=["user_id", "item_id"], how="semi").height
    outside = slots.join(pl.DataFrame({"item_id": catalog.cast(pl.String)}), on="item_id", how="anti").height
    return {
        "target_users": users.height,
        "target_users_with_list": lengths.height,
        "mean_list_length": float(cast(float, lengths["n"].mean())) if lengths.height else 0.0,
        f"lists_shorter_than_{k}": int((lengths["n"] < k).sum()) + (users.height - lengths.height),
        "slots_with_seen_items": seen,
        "slots_outside_catalog": outside,
    }


def _load_impressions(impressions: pl.DataFrame | str | Path) -> tuple[pl.DataFrame, str | None]:
    if isinstance(impressions, pl.DataFrame):
        return impressions, None
    path = Path(impressions)
    if path.is_dir():
        path = path / "impressions.parquet"
    if not path.is_file():
        raise DataError(
            "impression log not found (give a parquet file, or a dataset folder with impressions.parquet)",
            file=str(path),
        )
    try:
        return pl.read_parquet(path), str(path)
    except Exception as exc:
        raise DataError(f"cannot read impressions as parquet: {exc}", file=str(path)) from exc


def _off_policy(
    impressions: pl.DataFrame | str | Path,
    topks: dict[str, pl.DataFrame],
    position: int,
    k: int,
    weighting: str,
    clip: float | None,
    n_bootstrap: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    log, file = _load_impressions(impressions)
    if "propensity" not in log.columns:
        raise DataError(
            "the impression log has no 'propensity' column: off-policy estimates need the "
            "logging policy's probabilities",
            file=file,
            column="propensity",
        )
    for column in ("request_id", "user_id", "position"):
        if column not in log.columns:
            raise DataError(f"impression log is missing required column '{column}'", file=file, column=column)
    requests = log.filter(pl.col("position") == position).select(
        pl.col("request_id").cast(pl.String), pl.col("user_id").cast(pl.String)
    )
    policies = {label: policy_from_topk(requests, topk, k=k, weighting=weighting) for label, topk in topks.items()}
    covered = None
    for policy in policies.values():
        ids = policy.select("request_id").unique()
        covered = ids if covered is None else covered.join(ids, on="request_id", how="semi")
    assert covered is not None
    total = requests.height
    note = (
        f"{covered.height} of {total} logged requests at position {position} belong to users with lists "
        f"from both systems and are evaluated; each system's policy shows one of the user's top {k} "
        f"items ({weighting} weights)."
    )
    if covered.height == 0:
        return {"results": {}, "diffs": {}, "note": "skipped: " + note, "requests": total, "evaluated": 0}
    kept = log.with_columns(pl.col("request_id").cast(pl.String)).join(covered, on="request_id", how="semi")
    settings = OPESettings(
        position=position, clip=clip, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, file=file
    )
    results, diffs = compare_policies(kept, policies, settings)
    return {"results": results, "diffs": diffs, "note": note, "requests": total, "evaluated": covered.height}


def run_ab(
    split: Split | str | Path,
    system_a: System | pl.DataFrame,
    system_b: System | pl.DataFrame,
    stage: Literal["valid", "test"] = "test",
    ks: Sequence[int] = DEFAULT_KS,
    metrics: Sequence[str] | None = None,
    segment_metrics: Sequence[str] = DEFAULT_SEGMENT_METRICS,
    labels: tuple[str, str] = ("A", "B"),
    stats: StatsConfig = StatsConfig(),
    ope: OPEConfig = OPEConfig(),
    segments: SegmentConfig = SegmentConfig(),
    baseline_params: dict[str, dict[str, Any]] | None = None,
    reference_baselines: Sequence[str] = ("mostpop", "itemknn"),
    out: str | Path | None = None,
    log_fn: Callable[[ABResult, Path], Any] | None = None,
    data: Dataset | str | Path | None = None,
    **flat: Any,
) -> ABResult:
    """Compare system B with system A on `split` at `stage`; write the report to `out` when given.

    Returns the `ABResult` (verdict lines: `result.verdicts()`). `metrics` (default: every per-user
    metric at every K) is the family Holm corrects across; it is compared over all target users and,
    side by side, over the tie-free users (`recsys.ties`). `segment_metrics` are broken
    down by user and item segment, the first also by history-length bin. `stats`, `ope` and `segments`
    hold the statistics, off-policy and segment settings. `log_fn(result, folder)` is called after
    the report is written (to a temporary folder when `out` is None). `reference_baselines` are scored
    on the same targets for the report's "all systems" table (baselines are always in the
    table); pass `()` to skip them. The older flat keywords (`n_bootstrap=...`, `clip=...`) still
    work, with a DeprecationWarning.
    """
    configs = _with_flat({"stats": stats, "ope": ope, "segments": segments}, flat)
    stats, ope, segments = configs["stats"], configs["ope"], configs["segments"]
    started = time.perf_counter()
    timings: dict[str, float] = {}
    ks = _cutoffs(ks)
    if len(labels) != 2 or labels[0] == labels[1]:
        raise ConfigError(f"labels must be two different names, got {labels!r}")
    label_a, label_b = labels
    dataset = _load_dataset(data)
    split_data = _load_split(split)
    targets = split_data.targets(stage)
    history = split_data.history(stage)
    catalog = split_data.catalog()

    tick = time.perf_counter()
    topks, described = {}, {}
    for label, system in ((label_a, system_a), (label_b, system_b)):
        topk, description, file = resolve_system(system, split_data, stage, max(ks), baseline_params, dataset)
        _checked_topk(topk, file, targets, ks)
        topks[label], described[label] = topk, description
    timings["lists"] = time.perf_counter() - tick

    tick = time.perf_counter()
    per_a = per_user_metrics(topks[label_a], targets, ks)
    per_b = per_user_metrics(topks[label_b], targets, ks)
    names = list(metrics) if metrics is not None else metric_columns(per_a)
    unknown = [m for m in [*names, *segment_metrics] if m not in per_a.columns]
    if unknown:
        available = ", ".join(metric_columns(per_a))
        raise ConfigError(f"unknown metric(s) {', '.join(unknown)}; available: {available}")
    _, a, b = align_per_user(per_a, per_b, names)
    paired = {**asdict(stats), "label_a": label_a, "label_b": label_b}
    comparison = compare_arrays(a, b, names, **paired)
    tie_free_ids = pl.DataFrame({"user_id": tie_free_users(split_data, stage).cast(pl.String)})
    tie_a, tie_b = (table.join(tie_free_ids, on="user_id", how="semi") for table in (per_a, per_b))
    _, ta, tb = align_per_user(tie_a, tie_b, names)
    tie_free = compare_arrays(ta, tb, names, **paired) if len(ta) >= 2 else None
    timings["paired"] = time.perf_counter() - tick

    tick = time.perf_counter()
    segment_rows, segment_info = segment_comparisons(
        topks[label_a],
        topks[label_b],
        targets,
        history,
        metrics=list(segment_metrics),
        ks=ks,
        catalog=catalog,
        thresholds=segments.history_thresholds,
        head_share=segments.head_share,
        **paired,
    )
    bins = []
    if segment_metrics:
        lift_users, la, lb = align_per_user(per_a, per_b, [segment_metrics[0]])
        bins = lift_by_history(
            lift_users,
            la,
            lb,
            history,
            segment_metrics[0],
            n_bins=segments.lift_bins,
            n_bootstrap=stats.n_bootstrap,
            confidence=stats.confidence,
            seed=stats.seed,
        )
    beyond = {label: beyond_accuracy(topks[label], targets, history, catalog, ks) for label in (label_a, label_b)}
    diagnostics: dict[str, Any] = {
        f"lists_{label}": list_diagnostics(topks[label], targets, history, catalog, max(ks))
        for label in (label_a, label_b)
    }
    timings["segments"] = time.perf_counter() - tick

    tick = time.perf_counter()
    counts = item_counts_from(history)
    reference = {}
    for label, topk in topks.items():
        reference[f"{label}: {described[label]}"] = evaluate_topk(topk, targets, ks, catalog, counts)
    for name in reference_baselines:
        key = str(name).strip().lower()
        reused = next(
            (
                lbl
                for lbl, system in ((label_a, system_a), (label_b, system_b))
                if isinstance(system, str) and system.strip().lower() == key
            ),
            None,
        )
        topk = topks[reused] if reused else resolve_system(key, split_data, stage, max(ks), baseline_params)[0]
        reference[f"baseline {key}"] = evaluate_topk(topk, targets, ks, catalog, counts)
    timings["reference_baselines"] = time.perf_counter() - tick

    off_policy = None
    if ope.impressions is not None:
        tick = time.perf_counter()
        off_policy = _off_policy(
            ope.impressions,
            topks,
            ope.position,
            ope.k,
            ope.weighting,
            ope.clip,
            stats.n_bootstrap,
            stats.confidence,
            stats.seed,
        )
        timings["off_policy"] = time.perf_counter() - tick
        if not off_policy["results"]:
            diagnostics["off_policy"] = off_policy["note"]
            off_policy = None
    diagnostics["seconds"] = {k: round(v, 3) for k, v in timings.items()}

    result = ABResult(
        label_a=label_a,
        label_b=label_b,
        system_a=described[label_a],
        system_b=described[label_b],
        stage=stage,
        comparison=comparison,
        tie_free=tie_free,
        n_tie_free_users=len(ta),
        segments=segment_rows,
        segment_info=segment_info,
        lift_bins=bins,
        beyond_accuracy=beyond,
        reference=reference,
        ope=off_policy,
        dataset={"kind": split_data.kind, "params": split_data.params, "counts": split_data.counts()},
        diagnostics=diagnostics,
        settings={
            "ks": list(ks),
            "metrics": names,
            "segment_metrics": list(segment_metrics),
            **paired,
            **asdict(segments),
            "ope_position": ope.position,
            "ope_k": ope.k,
            "ope_weighting": ope.weighting,
            "clip": ope.clip,
            "reference_baselines": list(reference_baselines),
        },
        seconds=time.perf_counter() - started,
    )
    if out is not None or log_fn is not None:
        folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="recsys-ab-"))
        write_report(result, folder)
        if log_fn is not None:
            log_fn(result, folder)
    return result
