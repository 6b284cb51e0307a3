"""Settings, MLflow store set-up, aliases and model references, on a real SQLite store in tmp_path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from recsys.config import Settings, load_settings
from recsys.errors import ConfigError
from recsys.registry import (
    ResolvedModel,
    check_alias,
    ensure_experiment,
    model_name,
    resolve,
    resolve_alias,
    set_alias,
)

REPO = Path(__file__).resolve().parents[1]


def _register(settings: Settings, name: str, versions: int) -> list[str]:
    """Create `versions` real model versions of `name`, each from its own run's artifact folder."""
    client = MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)
    experiment_id = ensure_experiment("registry-tests", settings)
    client.create_registered_model(name)
    run_ids = []
    for _ in range(versions):
        run = client.create_run(experiment_id)
        client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        run_ids.append(run.info.run_id)
    return run_ids


# ------------------------------------------------------------------------------------ settings
def test_settings_defaults_environment_and_explicit_values(tmp_path):
    default = load_settings(environ={})
    assert default.home == (Path.cwd() / ".recsys").resolve()
    assert default.prefix == "recsys" and default.embedded
    assert default.mlflow_uri == f"sqlite:///{default.home.as_posix()}/mlflow.db"
    assert default.mlflow_uri.startswith("sqlite:////")  # absolute path: four slashes

    env = {"RECSYS_HOME": str(tmp_path / "h"), "RECSYS_PREFIX": "shop", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    from_env = load_settings(environ=env)
    assert from_env.home == (tmp_path / "h").resolve()
    assert from_env.prefix == "shop" and not from_env.embedded
    assert from_env.mlflow_uri == "http://mlflow:5000"
    assert from_env.model_name("ranker") == "shop-ranker"

    explicit = load_settings(home=tmp_path / "x", prefix="news", tracking_uri="", environ=env)
    assert explicit.home == (tmp_path / "x").resolve() and explicit.prefix == "news" and explicit.embedded


def test_bad_prefix_and_kind_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="prefix 'my/models'"):
        Settings(home=tmp_path, prefix="my/models")
    with pytest.raises(ConfigError, match="unknown model kind 'index'"):
        model_name("index", "recsys")
    assert model_name("encoder", "recsys") == "recsys-encoder"


def test_configure_mlflow_points_at_the_embedded_store(mlflow_store):
    assert mlflow.get_tracking_uri() == mlflow_store.mlflow_uri
    assert mlflow.get_registry_uri() == mlflow_store.mlflow_uri
    assert mlflow_store.artifact_root.is_dir()  # the SQLite file itself appears on first use


def test_ensure_experiment_keeps_artifacts_under_the_work_dir(mlflow_store):
    first = ensure_experiment("recsys encoder/tests", mlflow_store)
    assert mlflow_store.db_path.is_file()
    assert ensure_experiment("recsys encoder/tests", mlflow_store) == first  # idempotent
    location = MlflowClient(tracking_uri=mlflow_store.mlflow_uri).get_experiment(first).artifact_location
    assert location == (mlflow_store.artifact_root / "recsys_encoder_tests").as_uri()
    with pytest.raises(ConfigError, match="empty"):
        ensure_experiment("  ", mlflow_store)


# ------------------------------------------------------------------------------ aliases, refs
def test_every_reference_form_resolves_to_a_pinned_version(mlflow_store):
    settings = Settings(home=mlflow_store.home, prefix="forms")
    name = settings.model_name("encoder")
    run_ids = _register(settings, name, versions=3)
    champion = set_alias(name, 2, "champion", settings)
    assert champion == ResolvedModel(name, 2, f"models:/{name}/2", run_ids[1], "champion")
    set_alias(name, "3", "challenger", settings)

    assert resolve(f"models:/{name}@champion", settings=settings).version == 2
    assert resolve(f"{name}@challenger", settings=settings).version == 3
    assert resolve(f"models:/{name}/1", settings=settings).run_id == run_ids[0]
    assert resolve(f"{name}/1", settings=settings).uri == f"models:/{name}/1"
    assert resolve(f"models:/{name}/latest", settings=settings).version == 3
    assert resolve("champion", kind="encoder", settings=settings).uri == f"models:/{name}/2"
    assert resolve("1", kind="encoder", settings=settings).version == 1
    assert resolve_alias("encoder", "challenger", settings).version == 3


def test_set_alias_moves_the_alias(mlflow_store):
    settings = Settings(home=mlflow_store.home, prefix="moves")
    name = settings.model_name("ranker")
    _register(settings, name, versions=2)
    set_alias(name, 1, "champion", settings)
    assert resolve_alias("ranker", "champion", settings).version == 1
    set_alias(name, 2, "champion", settings)
    assert resolve_alias("ranker", "champion", settings).version == 2
    assert resolve(f"models:/{name}/1", settings=settings).version == 1  # the old version stays


def test_missing_models_aliases_and_versions_say_what_exists(mlflow_store):
    settings = Settings(home=mlflow_store.home, prefix="errs")
    name = settings.model_name("encoder")
    _register(settings, name, versions=2)
    set_alias(name, 1, "challenger", settings)

    with pytest.raises(ConfigError, match=r"'errs-ranker' does not exist .*registered models: .*errs-encoder"):
        resolve_alias("ranker", "champion", settings)
    with pytest.raises(ConfigError, match=r"no alias 'champion'.*aliases: challenger -> v1; versions: 1, 2"):
        resolve(f"models:/{name}@champion", settings=settings)
    with pytest.raises(ConfigError, match=r"no version 7; aliases: challenger -> v1; versions: 1, 2"):
        resolve(f"models:/{name}/7", settings=settings)
    with pytest.raises(ConfigError, match="no version 9"):
        set_alias(name, 9, "champion", settings)
    with pytest.raises(ConfigError, match="say which model"):
        resolve("champion", settings=settings)
    with pytest.raises(ConfigError, match="positive integer"):
        resolve(f"models:/{name}/one", settings=settings)
    with pytest.raises(ConfigError, match="empty"):
        resolve(" ", kind="encoder", settings=settings)


def test_unreachable_server_is_a_config_error_without_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    remote = Settings(home=tmp_path, tracking_uri="http://user:secret@127.0.0.1:9")
    with pytest.raises(ConfigError, match=r"MLflow at http://127\.0\.0\.1:9 failed") as caught:
        resolve("champion", kind="encoder", settings=remote)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("alias", ["latest", "v3", "V12", "has space", "9lives", ""])
def test_reserved_or_malformed_aliases_are_refused(alias):
    with pytest.raises(ConfigError):
        check_alias(alias)
    assert check_alias("champion") == "champion" and check_alias("shadow_2") == "shadow_2"


# ------------------------------------------------------------------------------- repo hygiene
def test_mlflow_project_folder_never_shadows_the_library():
    assert (REPO / "mlflow" / "MLproject").is_file()
    assert not (REPO / "mlflow" / "__init__.py").exists()
    # Run from the repository root, where '' (the cwd) is first on sys.path; find_spec resolves the
    # name exactly as `import mlflow` does, without paying for mlflow's import time.
    code = "import importlib.util as u; s = u.find_spec('mlflow'); print(s.origin)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    location = Path(out.stdout.strip())
    assert location.name == "__init__.py" and "site-packages" in location.parts
    assert location.parent.resolve() != (REPO / "mlflow").resolve()


def test_ground_floor_imports_stay_light():
    code = (
        "import recsys.registry, recsys.config, sys; print(sorted(m for m in ('mlflow', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
