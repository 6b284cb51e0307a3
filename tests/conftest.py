"""Fixtures shared by the test modules.

- `tiny_path` / `tiny_bert`: a tiny random BERT folder (`encoders.testing.make_tiny_bert`, seed 0) as a
  `Path` / `str`; module-scoped, so each test module gets its own folder (a test that rewrites it cannot
  reach another module);
- `small_data`: the small synthetic `(dataset, split)` the encoder, nightly and Ray tests train on
  (1,500 interactions, 60 users, 120 items, seed 3; temporal leave-last-out); module-scoped;
- `mlflow_store`: an embedded SQLite MLflow store under a temporary home, configured as this process's
  tracking and registry store, with telemetry off; module-scoped (creating the schema takes seconds);
- `mlflow_settings`: the settings of a fresh embedded store for one test (`tmp_path / "home"`), with
  telemetry off; the code under test configures MLflow from them itself;
- `client_cwd`: an empty current folder for one test (to check nothing is written where a user stands),
  with MLflow's process-wide URIs and recsys' active settings restored afterwards.

Heavier, module-specific worlds (trained encoders, published indexes, servers) stay in their modules
or come from `jobs.testing.build_world`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from encoders.testing import make_tiny_bert
from recsys import registry
from recsys.config import Settings, load_settings
from recsys.data.synthetic import generate
from recsys.registry import configure_mlflow
from recsys.splits import leave_last_out

# MLflow reads this when it is first imported, and collecting a test module already imports it (modules
# that log to MLflow import it at the top): telemetry stays off for the session, not only in the fixtures.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

SMALL_DATA = {"n_interactions": 1500, "n_users": 60, "n_items": 120, "seed": 3}


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def tiny_bert(tiny_path: Path) -> str:
    return str(tiny_path)


@pytest.fixture(scope="module")
def small_data():
    dataset = generate(**SMALL_DATA)
    return dataset, leave_last_out(dataset.interactions)


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        settings = load_settings(home=tmp_path_factory.mktemp("recsys-home"), prefix="recsys", tracking_uri="")
        configure_mlflow(settings)
        yield settings


@pytest.fixture
def mlflow_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return load_settings(home=tmp_path / "home", prefix="recsys", tracking_uri="")


@pytest.fixture
def client_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty folder to run from, as a user in a shell would; process-wide MLflow state restored after.

    `configure_mlflow` sets MLflow's URIs, exports MLFLOW_TRACKING_URI and remembers the active settings:
    later test modules must not inherit this test's store (or a stopped server's URI).
    """
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(registry, "_active", registry._active)
    tracking, registry_uri = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield folder
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry_uri)
