"""Log a finished ranker training run to MLflow and register it as `<prefix>-ranker` (docs/architecture.md, the ranker).

One MLflow run (experiment `<prefix>-ranker`) records:
- params: every `RankerConfig` setting (`candidates.*` included), the encoder version, label rule;
- metrics: valid/test ranking metrics of the ranker and test metrics of the encoder alone, the
  early-stopping curve (`valid_curve.ndcg_at_10` by iteration), timings, candidate recall;
- artifacts: run.json, importance.png/.csv, the test top-K parquets, and `ranker_bundle/`
  (model.txt + ranker.json: what `ranking.registry.load_ranker` needs to serve it);
- the model: the native LightGBM booster through `mlflow.lightgbm.log_model` (text model file, no
  pickled sklearn wrapper), with the feature list as its signature; registered as a new version of
  `<prefix>-ranker`, tagged with the encoder version, and given `alias` when asked.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.models import infer_signature

from jobs.log_encoder import _flatten, _log_metrics, _log_params
from ranking.features import FEATURE_NAMES
from ranking.model import MODEL_FILE, read_meta
from ranking.registry import BUNDLE_ARTIFACT
from recsys.config import Settings
from recsys.errors import ConfigError
from recsys.registry import ResolvedModel, active_settings, check_alias, configure_mlflow, ensure_experiment, set_alias

MODEL_ARTIFACT_NAME = "ranker"


def log_ranker_run(
    run_folder: Path,
    settings: Settings | None = None,
    alias: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
) -> ResolvedModel:
    """Log `run_folder` (a `jobs.train_ranker.train_ranker` output) and register its booster."""
    run_folder = Path(run_folder)
    if alias is not None:
        check_alias(alias)
    meta = read_meta(run_folder / "ranker")
    run = json.loads((run_folder / "run.json").read_text(encoding="utf-8"))
    booster = lgb.Booster(model_file=str(run_folder / "ranker" / MODEL_FILE))
    settings = settings or active_settings()
    uri = configure_mlflow(settings)
    name = settings.model_name("ranker")
    experiment_id = ensure_experiment(experiment or name, settings)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    example = pd.DataFrame(np.zeros((2, len(FEATURE_NAMES))), columns=FEATURE_NAMES)

    nested = mlflow.active_run() is not None
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=nested) as active:
        run_id = active.info.run_id
        params = {
            **_flatten(run.get("config") or {}),
            "encoder_version": str(run.get("encoder_version")),
            "encoder_ref": str(run.get("encoder_ref")),
            "labels": str(run.get("labels")),
            "features": ",".join(FEATURE_NAMES),
        }
        _log_params(client, run_id, params)
        curve = (run.get("report") or {}).get("valid_curve") or []
        metrics: dict[str, Any] = {
            "test_encoder": run.get("test_encoder") or {},
            "candidate_recall": run.get("candidate_recall") or {},
            "report": {k: v for k, v in (run.get("report") or {}).items() if k != "valid_curve"},
        }
        _log_metrics(client, run_id, run, metrics)
        _log_curve(client, run_id, curve)
        client.set_tag(run_id, "recsys.kind", "ranker")
        client.set_tag(run_id, "recsys.encoder_version", str(run.get("encoder_version")))
        for extra in ("run.json", "importance.png", "importance.csv", "topk_test.parquet", "topk_test_encoder.parquet"):
            if (run_folder / extra).is_file():
                mlflow.log_artifact(str(run_folder / extra), artifact_path="training")
        mlflow.log_artifacts(str(run_folder / "ranker"), artifact_path=BUNDLE_ARTIFACT)
        info = mlflow.lightgbm.log_model(
            booster,
            name=MODEL_ARTIFACT_NAME,
            registered_model_name=name,
            signature=infer_signature(example, np.zeros(2)),
            pip_requirements=["lightgbm", "numpy", "pandas"],
            metadata={
                "features": FEATURE_NAMES,
                "encoder_version": meta.get("encoder_version"),
                "bundle_artifact": BUNDLE_ARTIFACT,
            },
        )
    version = info.registered_model_version
    if version is None:  # pragma: no cover - registration is synchronous for the stores recsys uses
        raise ConfigError(f"MLflow did not register '{name}' for run {run_id}")
    for key, value in (
        ("encoder_version", str(meta.get("encoder_version"))),
        ("run_id", run_id),
        ("test_ndcg_at_10", f"{(run.get('test') or {}).get('ndcg@10', float('nan')):.5f}"),
    ):
        client.set_model_version_tag(name, str(version), key, value)
    resolved = ResolvedModel(name, int(version), f"models:/{name}/{version}", run_id)
    if alias is not None:
        resolved = set_alias(name, version, alias, settings)
    return resolved


def _log_curve(client: Any, run_id: str, curve: list[float]) -> None:
    now = int(time.time() * 1000)
    points = [Metric("valid_curve.ndcg_at_10", float(v), now, i + 1) for i, v in enumerate(curve)]
    for start in range(0, len(points), 1000):
        client.log_batch(run_id, metrics=points[start : start + 1000])
