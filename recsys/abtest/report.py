"""The A/B report: one result object, written as markdown with PNG plots and as JSON with every number.

`ABResult` is the whole outcome of an offline A/B comparison (what `jobs.ab_job.run_ab` returns and
what a notebook can build from the pieces in `recsys.abtest`). `write_report(result, folder)` writes

- `report.md`: verdict lines, the headline table (each metric for all target users and, side by side,
  for the tie-free users of `recsys.ties`), the metric table, segment and history-length breakdowns, beyond-accuracy
  numbers, off-policy estimates when there were impressions, and the settings that make it
  reproducible; it embeds the PNGs by relative path, so the folder can be moved or committed as is.
- `report.json`: the same numbers, machine-readable (NaN and infinities become null).
- `metrics_ci.png`: each metric's mean for A and B with its CI, beside the paired difference B - A
  with its CI (significant differences after Holm are drawn solid, others hollow).
- `segment_deltas.png`: the paired difference per user segment and target-item segment.
- `lift_by_history.png`: A's and B's metric by history-length bin, and the difference with its CI.
- `ope.png` (with impressions): IPS / SNIPS / DR estimates of each system's click rate with CIs.

Plots use matplotlib's object API with the Agg canvas (no pyplot state, no display needed), so the
report can be written from a server, a thread or a test.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from recsys.abtest.paired import PairedComparison, display_name, format_p

if TYPE_CHECKING:
    from recsys.abtest.ope import Estimate, OPEResult
    from recsys.abtest.segments import LiftBin, SegmentComparison

COLOR_A = "#4C72B0"
COLOR_B = "#DD8452"
COLOR_DIFF = "#55A868"
FILES = ("report.md", "report.json", "metrics_ci.png", "segment_deltas.png", "lift_by_history.png")


@dataclass
class ABResult:
    """Everything an offline A/B comparison found; see `jobs.ab_job.run_ab` for how each part is made."""

    label_a: str
    label_b: str
    system_a: str  # what A is: a baseline name, a file path, a model reference
    system_b: str
    stage: str
    comparison: PairedComparison  # over all target users
    tie_free: PairedComparison | None = None  # the same metrics over the tie-free users (None below 2)
    n_tie_free_users: int = 0
    segments: list[SegmentComparison] = field(default_factory=list)
    segment_info: dict[str, Any] = field(default_factory=dict)
    lift_bins: list[LiftBin] = field(default_factory=list)
    beyond_accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    reference: dict[str, dict[str, float]] = field(default_factory=dict)  # system -> evaluate_topk means
    ope: dict[str, Any] | None = None  # {"results": {label: OPEResult}, "diffs": {...}, "note": str}
    dataset: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def verdicts(self) -> list[str]:
        return self.comparison.verdicts()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (NaN/inf -> None, tuples -> lists), verdicts included."""
        data = asdict(self)
        data["verdicts"] = self.verdicts()
        return _clean(data)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return _clean(value.item())
    return value


# -- formatting ------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _signed(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}"


def _ci(low: float | None, high: float | None, digits: int = 4, signed: bool = True) -> str:
    fmt = _signed if signed else _num
    return f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def _p(value: float | None) -> str:
    """p-values: 4 decimals, scientific below 1e-4 (a t-test p of 1e-25 is not "0.0000")."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.1e}" if value < 1e-4 else f"{value:.4f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.1%}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


# -- plots -----------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig


def plot_metrics(result: ABResult, path: Path) -> Path:
    """Left: each metric's mean for A and B with CIs. Right: B - A with its CI (solid = significant)."""
    rows = result.comparison.metrics
    names = [display_name(m.metric) for m in rows]
    y = np.arange(len(rows))[::-1].astype(float)
    fig = _figure(11, 0.45 * len(rows) + 1.6)
    left, right = fig.subplots(1, 2, sharey=True, width_ratios=(1.2, 1))
    for offset, label, color, mean, ci in (
        (0.18, result.label_a, COLOR_A, [m.mean_a for m in rows], [m.ci_a for m in rows]),
        (-0.18, result.label_b, COLOR_B, [m.mean_b for m in rows], [m.ci_b for m in rows]),
    ):
        mean_arr = np.asarray(mean)
        bounds = np.asarray(ci, dtype=float)
        err = np.vstack([mean_arr - bounds[:, 0], bounds[:, 1] - mean_arr])
        left.barh(y + offset, mean_arr, height=0.34, color=color, alpha=0.85, label=label)
        left.errorbar(
            mean_arr, y + offset, xerr=np.clip(err, 0, None), fmt="none", ecolor="black", elinewidth=0.9, capsize=2.5
        )
    left.set_yticks(y, names)
    left.set_xlabel("mean over target users (95% CI)")
    left.set_title("metric by system")
    left.legend(loc="upper right", fontsize=8)
    left.grid(axis="x", alpha=0.3)
    for m, yy in zip(rows, y, strict=True):
        color = COLOR_DIFF if m.diff >= 0 else "#C44E52"
        face = color if m.significant else "white"
        right.errorbar(
            [m.diff],
            [yy],
            xerr=[[max(m.diff - m.ci_low, 0)], [max(m.ci_high - m.diff, 0)]],
            fmt="o",
            color=color,
            mfc=face,
            ms=6,
            capsize=3,
            elinewidth=1.2,
        )
        right.annotate(
            format_p(m.p_holm),
            (m.ci_high, yy),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
            color="#444444",
        )
    right.axvline(0.0, color="black", lw=0.8)
    right.set_xlabel(f"{result.label_b} - {result.label_a} (95% CI; filled = significant after Holm)")
    right.set_title("paired difference")
    right.grid(axis="x", alpha=0.3)
    lo = min(m.ci_low for m in rows)
    hi = max(m.ci_high for m in rows)
    pad = 0.25 * max(hi - lo, 1e-6)
    right.set_xlim(min(lo, 0) - pad * 0.3, max(hi, 0) + pad)
    n_users = result.comparison.n_users
    fig.suptitle(f"{result.label_b} vs {result.label_a} on {n_users} users ({result.stage})")
    fig.savefig(path)
    return path


def plot_segments(result: ABResult, path: Path) -> Path:
    """A forest plot per segment metric: the paired difference of each segment with its CI."""
    segments = [s for s in result.segments if s.comparison is not None]
    metrics = [m.metric for m in segments[0].comparison.metrics] if segments else []  # type: ignore[union-attr]  # only segments with a comparison
    fig = _figure(5.2 * max(len(metrics), 1), 0.45 * max(len(segments), 1) + 1.8)
    axes = fig.subplots(1, max(len(metrics), 1), sharey=True, squeeze=False)[0]
    if not segments:
        axes[0].text(0.5, 0.5, "no segment with two or more users", ha="center", va="center")
        fig.savefig(path)
        return path
    labels = [f"{'user' if s.kind == 'history' else 'target item'}: {s.segment} (n={s.n_users})" for s in segments]
    y = np.arange(len(segments))[::-1].astype(float)
    for ax, metric in zip(axes, metrics, strict=True):
        for seg, yy in zip(segments, y, strict=True):
            m = seg.comparison.by_metric()[metric]  # type: ignore[union-attr]  # only segments with a comparison
            color = COLOR_A if seg.kind == "history" else COLOR_B
            face = color if m.significant else "white"
            ax.errorbar(
                [m.diff],
                [yy],
                xerr=[[max(m.diff - m.ci_low, 0)], [max(m.ci_high - m.diff, 0)]],
                fmt="o",
                color=color,
                mfc=face,
                ms=6,
                capsize=3,
                elinewidth=1.2,
            )
        overall = result.comparison.by_metric().get(metric)
        if overall is not None:
            ax.axvspan(overall.ci_low, overall.ci_high, color="grey", alpha=0.15, lw=0, label="all users (95% CI)")
            ax.legend(loc="lower right", fontsize=7)
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_title(display_name(metric))
        ax.set_xlabel(f"{result.label_b} - {result.label_a} (95% CI)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels)
    fig.suptitle(
        "per-segment differences (blue: user history length; orange: target-item popularity; "
        "filled: significant after Holm)"
    )
    fig.savefig(path)
    return path


def plot_lift_by_history(result: ABResult, path: Path) -> Path:
    """Top: A's and B's metric per history-length bin. Bottom: B - A with its CI per bin."""
    bins = result.lift_bins
    fig = _figure(8, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1))
    if not bins:
        top.text(0.5, 0.5, "no history-length bins", ha="center", va="center")
        fig.savefig(path)
        return path
    x = np.arange(len(bins))
    top.plot(x, [b.mean_a for b in bins], "o-", color=COLOR_A, label=result.label_a)
    top.plot(x, [b.mean_b for b in bins], "s-", color=COLOR_B, label=result.label_b)
    top.set_ylabel(display_name(bins[0].metric))
    top.legend(fontsize=8)
    top.grid(alpha=0.3)
    top.set_title(f"{display_name(bins[0].metric)} by user history length")
    diffs = np.array([b.diff for b in bins])
    err = np.array([[max(b.diff - b.ci_low, 0) for b in bins], [max(b.ci_high - b.diff, 0) for b in bins]])
    bottom.bar(x, diffs, color=[COLOR_DIFF if d >= 0 else "#C44E52" for d in diffs], alpha=0.7)
    bottom.errorbar(x, diffs, yerr=err, fmt="none", ecolor="black", capsize=3, elinewidth=1)
    bottom.axhline(0.0, color="black", lw=0.8)
    bottom.set_ylabel(f"{result.label_b} - {result.label_a} (95% CI)")
    bottom.set_xticks(x, [f"{b.label}\n(n={b.n_users})" for b in bins], fontsize=8)
    bottom.set_xlabel("interactions in the user's history")
    bottom.grid(axis="y", alpha=0.3)
    fig.align_ylabels([top, bottom])
    fig.savefig(path)
    return path


def plot_ope(result: ABResult, path: Path) -> Path:
    """Each estimator's click-rate estimate for A and B with its CI, and the logged click rate."""
    assert result.ope is not None
    estimators = ("ips", "snips", "dr")
    results: dict[str, OPEResult] = result.ope["results"]
    fig = _figure(7, 3.6)
    ax = fig.subplots()
    x = np.arange(len(estimators)).astype(float)
    for offset, (label, res), color in zip((-0.15, 0.15), results.items(), (COLOR_A, COLOR_B), strict=False):
        for xi, name in zip(x, estimators, strict=True):
            est = res.estimates[name]
            if est.value is None:
                continue
            low = est.ci_low if est.ci_low is not None else est.value
            high = est.ci_high if est.ci_high is not None else est.value
            ax.errorbar(
                [xi + offset],
                [est.value],
                yerr=[[est.value - low], [high - est.value]],
                fmt="o",
                color=color,
                capsize=3,
                label=label if name == estimators[0] else None,
            )
    observed = next(iter(results.values())).settings.get("observed_click_rate")
    if observed is not None:
        ax.axhline(observed, color="grey", ls="--", lw=0.9, label="logging policy (observed)")
    ax.set_xticks(x, [e.upper() for e in estimators])
    ax.set_ylabel("estimated click rate at the slot (95% CI)")
    ax.set_title("off-policy estimates from the impression log")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path)
    return path


# -- markdown --------------------------------------------------------------------------------------


def _metrics_section(result: ABResult) -> list[str]:
    comp = result.comparison
    a, b = result.label_a, result.label_b
    header = [
        "metric",
        a,
        b,
        f"{b} - {a}",
        f"{comp.confidence:.0%} CI",
        "lift",
        "p t-test",
        "p randomization",
        f"p Holm ({comp.primary})",
        "d_z",
    ]
    rows = [
        [
            display_name(m.metric),
            _num(m.mean_a),
            _num(m.mean_b),
            _signed(m.diff),
            _ci(m.ci_low, m.ci_high),
            _pct(m.lift),
            _p(m.p_ttest),
            _p(m.p_randomization),
            _p(m.p_holm),
            _num(m.effect_size, 3),
        ]
        for m in comp.metrics
    ]
    return ["## Metrics", "", *_table(header, rows), "![metrics with CIs](metrics_ci.png)", ""]


def _tie_free_section(result: ABResult) -> list[str]:
    """Each metric over all target users and over the tie-free users, side by side (`recsys.ties`)."""
    comp, tie_free = result.comparison, result.tie_free
    a, b = result.label_a, result.label_b
    n_all, n_free = comp.n_users, result.n_tie_free_users
    share = f" ({n_free / n_all:.0%})" if n_all else ""
    header = ["metric"]
    for who, n in (("all", n_all), ("tie-free", n_free)):
        header += [f"{a} {who} (n={n})", f"{b} {who}", f"{b} - {a} {who} ({comp.confidence:.0%} CI)", f"p Holm {who}"]
    free = tie_free.by_metric() if tie_free is not None else {}
    rows = []
    for m in comp.metrics:
        row = [display_name(m.metric)]
        for c in (m, free.get(m.metric)):
            row += (
                ["n/a"] * 4
                if c is None
                else [_num(c.mean_a), _num(c.mean_b), f"{_signed(c.diff)} {_ci(c.ci_low, c.ci_high)}", _p(c.p_holm)]
            )
        rows.append(row)
    lines = [
        "## All users and tie-free users",
        "",
        f"{n_free} of {n_all} target users{share} are tie-free: their {result.stage} target is not in the "
        "same second as the last event of their history, so the order within a second (item id order, "
        "which a model can learn) does not decide it. A claim that B beats A should hold in both columns; "
        "Holm corrects across the metrics within each column."
        + ("" if tie_free is not None else " Fewer than 2 tie-free users: no tie-free comparison."),
        "",
        *_table(header, rows),
    ]
    return lines


def _segments_section(result: ABResult) -> list[str]:
    if not result.segments:
        return []
    lines = ["## Segments", ""]
    info = result.segment_info
    if info:
        t1, t2 = info.get("history_thresholds", [None, None])
        lines += [
            f"User segments by history length ({info.get('thresholds_from', '')}): cold <= {t1} < medium <= "
            f"{t2} < heavy. Item segments by the target's popularity in the history: head = top "
            f"{info.get('head_share', 0):.0%} of items ({info.get('items_head')} items, "
            f"{info.get('head_interaction_share', 0):.0%} of interactions), tail = the other "
            f"{info.get('items_tail')} seen items, cold = targets never seen in the history.",
            "",
        ]
    a, b = result.label_a, result.label_b
    metrics = next((s.comparison.metrics for s in result.segments if s.comparison is not None), [])
    header = ["kind", "segment", "users", "targets"]
    for m in metrics:
        name = display_name(m.metric)
        header += [f"{name} {a}", f"{name} {b}", f"{name} {b} - {a} (CI)", "p Holm"]
    rows = []
    for seg in result.segments:
        row = [
            "user history" if seg.kind == "history" else "target item",
            seg.segment,
            str(seg.n_users),
            str(seg.n_targets),
        ]
        if seg.comparison is None:
            row += ["n/a"] * (4 * len(metrics))
        else:
            for m in seg.comparison.metrics:
                row += [_num(m.mean_a), _num(m.mean_b), f"{_signed(m.diff)} {_ci(m.ci_low, m.ci_high)}", _p(m.p_holm)]
        rows.append(row)
    lines += _table(header, rows)
    lines += [
        "Holm corrects across the segment's metrics within each segment; the segments themselves are "
        "descriptive (not corrected across segments).",
        "",
        "![per-segment differences](segment_deltas.png)",
        "",
    ]
    return lines


def _lift_section(result: ABResult) -> list[str]:
    if not result.lift_bins:
        return []
    metric = display_name(result.lift_bins[0].metric)
    a, b = result.label_a, result.label_b
    rows = [
        [bn.label, str(bn.n_users), _num(bn.mean_a), _num(bn.mean_b), _signed(bn.diff), _ci(bn.ci_low, bn.ci_high)]
        for bn in result.lift_bins
    ]
    return [
        "## Lift by history length",
        "",
        *_table(["history length", "users", f"{metric} {a}", f"{metric} {b}", f"{b} - {a}", "95% CI"], rows),
        "![lift by history length](lift_by_history.png)",
        "",
    ]


def _reference_section(result: ABResult) -> list[str]:
    if not result.reference:
        return []
    wanted = [*result.comparison.by_metric(), "coverage@10"]
    columns = [c for c in wanted if any(c in scores for scores in result.reference.values())]
    rows = [[name, *[_num(scores.get(c)) for c in columns]] for name, scores in result.reference.items()]
    return [
        "## All systems and reference baselines",
        "",
        "Means over the same target users, unpaired (the paired comparison above is the decision); "
        "the baselines are fitted on the same history and ranked over the same catalog.",
        "",
        *_table(["system", *[display_name(c) for c in columns]], rows),
    ]


def _beyond_section(result: ABResult) -> list[str]:
    if not result.beyond_accuracy:
        return []
    labels = list(result.beyond_accuracy)
    keys = sorted(
        {k for v in result.beyond_accuracy.values() for k in v},
        key=lambda k: (k.split("@")[0], int(k.split("@")[1]) if "@" in k else 0),
    )
    rows = [[k, *[_num(result.beyond_accuracy[label].get(k)) for label in labels]] for k in keys]
    return [
        "## Coverage, novelty, popularity bias",
        "",
        "Coverage = share of the catalog recommended in someone's top K; novelty = mean self-information "
        "-log2 p(item) of the recommended slots (higher = less obvious); popularity bias = mean "
        "popularity percentile of the recommended slots (1 = always the most popular item).",
        "",
        *_table(["metric", *labels], rows),
    ]


def _cell(value: Any) -> str:
    return _num(value) if isinstance(value, float) else str(value)


def _estimate_cell(est: Estimate, signed: bool = False) -> str:
    if est.value is None:
        return "undefined"
    value = _signed(est.value) if signed else _num(est.value)
    if est.ci_low is None:
        return value
    return f"{value} {_ci(est.ci_low, est.ci_high, signed=signed)}"


def _ope_section(result: ABResult) -> list[str]:
    if not result.ope:
        return []
    results: dict[str, OPEResult] = result.ope["results"]
    diffs: dict[str, dict[str, Estimate]] = result.ope.get("diffs", {})
    labels = list(results)
    header = ["estimator", *[f"{label} (95% CI)" for label in labels], *[f"{k} (95% CI)" for k in diffs]]
    rows = []
    for name in ("ips", "snips", "dr", "dm"):
        row = [name.upper()] + [_estimate_cell(results[label].estimates[name]) for label in labels]
        row += [_estimate_cell(d[name], signed=True) for d in diffs.values()]
        rows.append(row)
    settings = next(iter(results.values())).settings
    diag_header = ["diagnostic", *labels]
    keys = list(next(iter(results.values())).diagnostics)
    diag_rows = [[k, *[_cell(results[label].diagnostics.get(k)) for label in labels]] for k in keys]
    lines = ["## Off-policy estimates (impression log)", ""]
    if result.ope.get("note"):
        lines += [str(result.ope["note"]), ""]
    lines += [
        f"Click rate at position {settings.get('position')} each system would get, estimated from the log "
        f"(observed click rate of the logging policy: {_num(settings.get('observed_click_rate'))}; "
        f"weight clipping: {settings.get('clip') or 'off'}; "
        f"DR reward model: {settings.get('reward_model')}). "
        "DM is the reward model alone, shown for reference (biased).",
        "",
        *_table(header, rows),
        *_table(diag_header, diag_rows),
        "![off-policy estimates](ope.png)",
        "",
    ]
    return lines


def render_markdown(result: ABResult) -> str:
    """The report as markdown (plots referenced by file name, as `write_report` writes them)."""
    comp = result.comparison
    a, b = result.label_a, result.label_b
    lines = [
        f"# Offline A/B: {b} vs {a}",
        "",
        f"- **{a}**: {result.system_a}",
        f"- **{b}**: {result.system_b}",
        f"- stage `{result.stage}`, {comp.n_users} target users ({result.n_tie_free_users} tie-free)"
        + (f", {result.dataset.get('kind')} split" if result.dataset.get("kind") else ""),
        f"- paired percentile bootstrap ({comp.n_bootstrap} resamples) for CIs, paired t-test and sign-flip "
        f"randomization test ({comp.n_permutations} flips), Holm across {len(comp.metrics)} metrics on the "
        f"{comp.primary} p-values, alpha {comp.alpha}, seed {comp.seed}",
        f"- run time {result.seconds:.1f} s",
        "",
        "## Verdicts",
        "",
        *[f"- {line}" for line in result.verdicts()],
        "",
    ]
    lines += _tie_free_section(result)
    lines += _metrics_section(result)
    lines += _segments_section(result)
    lines += _lift_section(result)
    lines += _reference_section(result)
    lines += _beyond_section(result)
    lines += _ope_section(result)
    if result.diagnostics:
        lines += ["## Diagnostics", "", "```", json.dumps(_clean(result.diagnostics), indent=2), "```", ""]
    lines += [
        "## How to read this",
        "",
        f"Differences are {b} - {a} per target user (users without a list score 0), averaged. The CI is a "
        "percentile bootstrap over users; p-values are two-sided; d_z is the mean paired difference over its "
        "standard deviation (0.2 small, 0.5 medium, 0.8 large). A verdict names a winner only when the "
        "Holm-corrected p-value is below alpha.",
        "",
    ]
    return "\n".join(lines)


def write_report(result: ABResult, folder: str | Path) -> Path:
    """Write report.md, report.json and the PNGs into `folder` (created); returns the report.md path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plot_metrics(result, folder / "metrics_ci.png")
    plot_segments(result, folder / "segment_deltas.png")
    plot_lift_by_history(result, folder / "lift_by_history.png")
    if result.ope:
        plot_ope(result, folder / "ope.png")
    (folder / "report.json").write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    path = folder / "report.md"
    path.write_text(render_markdown(result))
    return path
