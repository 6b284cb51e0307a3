"""Experiments recsys creates keep their artifacts under the configured root, never in the current folder.

A user ran `recsys embed` by hand with `MLFLOW_TRACKING_URI` naming a SQLite file, and MLflow created
the `nightly-embed` experiment with artifact location `<current folder>/mlruns/<id>`: every folder the
job was started from got an `mlruns/`. These tests create every experiment the jobs use, log a run
with an artifact into each, from an empty temporary current folder, and check that the folder stays
empty and the files land under `Settings.artifact_root` (beside the SQLite file).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from jobs.log_ab import EXPERIMENT as AB_EXPERIMENT
from jobs.nightly_embed import EXPERIMENT as EMBED_EXPERIMENT
from recsys.config import Settings, load_settings, sqlite_file
from recsys.registry import configure_mlflow, ensure_experiment

# The experiments the jobs create: the nightly job, the A/B scripts, and the two model experiments.
EXPERIMENTS = (EMBED_EXPERIMENT, AB_EXPERIMENT, "recsys-encoder", "recsys-ranker")


@pytest.mark.slow
@pytest.mark.parametrize("store", ["embedded", "sqlite-elsewhere"])
def test_experiments_and_their_artifacts_stay_out_of_the_current_folder(client_cwd: Path, tmp_path: Path, store: str):
    environ = {"RECSYS_HOME": str(tmp_path / "home")}
    if store == "sqlite-elsewhere":
        environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{(tmp_path / 'team' / 'mlflow.db').as_posix()}"
    settings = load_settings(environ=environ)
    expected_root = tmp_path / ("home" if store == "embedded" else "team") / "mlartifacts"
    assert settings.artifact_root == expected_root.resolve()

    configure_mlflow(settings)
    client = MlflowClient(tracking_uri=settings.mlflow_uri)
    (tmp_path / "note.txt").write_text("artifact\n", encoding="utf-8")
    for name in EXPERIMENTS:
        experiment_id = ensure_experiment(name, settings)
        location = client.get_experiment(experiment_id).artifact_location
        assert location == (expected_root / name.replace(" ", "_")).resolve().as_uri()
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_artifact(str(tmp_path / "note.txt"), artifact_path="logged")
        assert (expected_root / name / run.info.run_id / "artifacts" / "logged" / "note.txt").is_file()
    # MLflow's own 'Default' experiment (mlflow run / a bare start_run log there) sits beside them too.
    assert client.get_experiment("0").artifact_location == (expected_root / "0").resolve().as_uri()
    assert sorted(p.name for p in client_cwd.iterdir()) == []


def test_the_mlflow_ui_form_of_the_embedded_uri_is_the_embedded_store(tmp_path: Path, monkeypatch):
    # `mlflow ui --backend-store-uri sqlite:///.recsys/mlflow.db` (the README's form), exported by a user
    # who then runs a command from the same folder: still the embedded store, artifacts under .recsys.
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={"MLFLOW_TRACKING_URI": "sqlite:///.recsys/mlflow.db"})
    assert settings.embedded and settings.artifact_root == tmp_path.resolve() / ".recsys" / "mlartifacts"


def test_artifact_root_by_kind_of_store(tmp_path: Path):
    home = tmp_path / "home"
    team = tmp_path / "team.db"
    assert Settings(home=home, tracking_uri=f"sqlite:///{team}").artifact_root == tmp_path.resolve() / "mlartifacts"
    assert sqlite_file(f"sqlite:///{team}?timeout=30") == team.resolve()
    for database in ("postgresql+psycopg2://u:p@db/mlflow", "mysql://db/mlflow", "sqlite://", "sqlite:///:memory:"):
        assert Settings(home=home, tracking_uri=database).artifact_root == home.resolve() / "mlartifacts", database
    for server in ("http://127.0.0.1:5000", "https://mlflow.internal", "databricks", "file:///srv/mlruns"):
        assert Settings(home=home, tracking_uri=server).artifact_root is None, server  # the server decides
