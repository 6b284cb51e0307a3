"""Log an offline A/B result to MLflow as an evaluation run tagged with both system references."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.config import Settings

if TYPE_CHECKING:
    from recsys.abtest.report import ABResult

EXPERIMENT = "ab-evaluations"


def _metric_key(name: str) -> str:
    """MLflow refuses '@' in metric names: ndcg@10 -> ndcg_at_10."""
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", name.replace("@", "_at_"))


def log_ab_result(result: ABResult, report_folder: Path, settings: Settings | None = None) -> str:
    """One MLflow run per comparison: means, differences, CIs, Holm p-values (all and tie-free users), the report."""
    import mlflow

    from recsys.registry import configure_mlflow, ensure_experiment

    configure_mlflow(settings)
    experiment_id = ensure_experiment(EXPERIMENT, settings)
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{result.label_a} vs {result.label_b}",
        nested=mlflow.active_run() is not None,
    ) as run:
        mlflow.set_tags(
            {
                "recsys.kind": "ab",
                "recsys.system_a": result.system_a,
                "recsys.system_b": result.system_b,
                "recsys.stage": result.stage,
            }
        )
        mlflow.log_params(
            {
                "system_a": result.system_a[:500],
                "system_b": result.system_b[:500],
                "stage": result.stage,
                **{k: str(v)[:500] for k, v in result.settings.items()},
            }
        )
        metrics: dict[str, float] = {"n_users": result.comparison.n_users, "n_tie_free_users": result.n_tie_free_users}
        for prefix, comparison in (("", result.comparison), ("tie_free.", result.tie_free)):
            for m in comparison.metrics if comparison is not None else []:
                key = _metric_key(m.metric)
                metrics.update(
                    {
                        f"{prefix}a.{key}": m.mean_a,
                        f"{prefix}b.{key}": m.mean_b,
                        f"{prefix}diff.{key}": m.diff,
                        f"{prefix}diff_ci_low.{key}": m.ci_low,
                        f"{prefix}diff_ci_high.{key}": m.ci_high,
                        f"{prefix}p_holm.{key}": m.p_holm,
                    }
                )
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})  # NaN-free
        mlflow.log_artifacts(str(report_folder), artifact_path="report")
        return run.info.run_id
