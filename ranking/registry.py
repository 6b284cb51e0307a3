"""`load_ranker`: a ranker by registry reference or local folder, bound to a behavior context.

Registry rankers (`champion`, `models:/recsys-ranker@champion`, `models:/recsys-ranker/3`) are
pinned to one version first, and their `ranker_bundle` artifact (model.txt + ranker.json, logged by
`jobs/log_ranker.py`) is downloaded once into `cache_dir/<name>/<version>` (atomically: a killed
download leaves nothing that looks complete). The version string is `<name>/<version>`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ranking.context import BehaviorContext
from ranking.model import META_FILE, RankerModel, read_meta
from recsys.errors import ConfigError
from recsys.registry import configure_mlflow, resolve

if TYPE_CHECKING:
    from recsys.config import Settings
    from recsys.data.dataset import Dataset

BUNDLE_ARTIFACT = "ranker_bundle"


def load_ranker(
    ref: str | Path,
    *,
    dataset: Dataset | None = None,
    context: BehaviorContext | None = None,
    settings: Settings | None = None,
    cache_dir: str | Path | None = None,
) -> RankerModel:
    """Load the ranker named by `ref` against `context` (built from `dataset` when not given)."""
    text = str(ref).strip()
    if not text:
        raise ConfigError("ranker reference is empty; use e.g. 'champion' or a ranker folder")
    path = Path(text).expanduser()
    version = None
    if path.is_dir():
        folder = path / "ranker" if (path / "ranker" / META_FILE).is_file() else path
    else:
        if text.startswith(("/", ".", "~")):
            raise ConfigError(f"ranker {text}: no such folder (and not a registry reference such as champion)")

        configure_mlflow(settings)
        resolved = resolve(text, kind="ranker", settings=settings)
        folder = _download(resolved.run_id, resolved.name, resolved.version, cache_dir)
        version = f"{resolved.name}/{resolved.version}"
    meta = read_meta(folder)
    if context is None:
        if dataset is None:
            raise ConfigError("load_ranker needs the dataset (or a prebuilt BehaviorContext) it serves")
        window = int((meta.get("config") or {}).get("covisit_window", 20))
        context = BehaviorContext.build(dataset, covisit_window=window)
    return RankerModel.load(folder, context, version=version)


def _download(run_id: str | None, name: str, version: int, cache_dir: str | Path | None) -> Path:
    # local (c): only a registry download needs mlflow; importing it starts MLflow telemetry
    import mlflow

    if not run_id:
        raise ConfigError(f"{name} version {version} has no source run; it was not logged by recsys")
    root = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="recsys-ranker-"))
    target = root.resolve() / name / str(version)
    if not (target / "ranker.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        work = target.parent / f".{version}.{os.getpid()}.download"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=BUNDLE_ARTIFACT, dst_path=str(work))
            )
        except Exception as exc:  # MLflow raises several types for a missing artifact
            shutil.rmtree(work, ignore_errors=True)
            raise ConfigError(
                f"{name} version {version}: no '{BUNDLE_ARTIFACT}' artifact ({exc}); "
                "log rankers with jobs/log_ranker.py"
            ) from exc
        shutil.rmtree(target, ignore_errors=True)
        os.replace(local, target)
        shutil.rmtree(work, ignore_errors=True)
    return target
