"""recsys against a real `mlflow server`: train, register, load by alias, all over the HTTP tracking URI.

The embedded SQLite store is what every other test uses; a team runs one MLflow server (a backend
database plus an artifact store it proxies) and points every command at it with MLFLOW_TRACKING_URI.
Here a real server subprocess is started on a free loopback port with its own SQLite backend and
`--artifacts-destination`, and a tiny encoder goes through it end to end. Nothing is mocked: the
client sees only `http://127.0.0.1:<port>`, and the files must land under the server's folders,
not under recsys' work dir or the current folder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest
from mlflow import MlflowClient

from jobs.log_encoder import log_encoder_run
from jobs.testing import train_tiny_encoder
from recsys.config import load_settings
from recsys.registry import ensure_experiment, resolve

START_TIMEOUT_S = 180.0  # usually ~8 s; one start took over 90 s on a 2-core box busy training


@dataclass(frozen=True)
class Server:
    """A running `mlflow server`: its URI and the folders it owns."""

    uri: str
    database: Path
    artifacts: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(uri: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll GET /health until it answers OK; fail with the server's log if it exits or never does."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server not healthy after {START_TIMEOUT_S:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and its workers (its own process group, started for it), politely then firmly."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("mlflow-server")
    database, artifacts, log = root / "mlflow.db", root / "artifacts", root / "server.log"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{database.as_posix()}",
        # Artifact proxying is on by default: new experiments get `mlflow-artifacts:/<id>`, which the
        # server maps to this folder, so clients need no access to the server's disk.
        "--artifacts-destination",
        str(artifacts),
    ]
    with log.open("wb") as out:
        # A session of its own, so that teardown stops the workers the server forks, and only them.
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        uri = f"http://127.0.0.1:{port}"
        _wait_healthy(uri, process, log)
        yield Server(uri=uri, database=database, artifacts=artifacts)
    finally:
        _stop(process)


@pytest.mark.slow
def test_train_register_and_load_by_alias_through_a_tracking_server(
    server: Server, client_cwd: Path, tmp_path: Path, tiny_path: Path, small_data
) -> None:
    dataset, _ = small_data
    settings = load_settings(home=tmp_path / "home", environ={"MLFLOW_TRACKING_URI": server.uri})
    assert not settings.embedded and settings.artifact_root is None  # the server owns artifact locations
    run = train_tiny_encoder(dataset, tmp_path / "encoder", tiny_path)

    model = log_encoder_run(run, settings, alias="champion")

    # Registered on the server: a second client that knows only the URI sees version 1 as champion.
    client = MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
    by_alias = client.get_model_version_by_alias("recsys-encoder", "champion")
    assert (model.name, model.version, model.alias) == ("recsys-encoder", 1, "champion")
    assert int(by_alias.version) == 1 and by_alias.run_id == model.run_id
    assert resolve("models:/recsys-encoder@champion", settings=settings) == model
    assert server.database.is_file()

    # Artifacts went through the server's proxy into its artifact folder, and nowhere on the client side.
    experiment = client.get_experiment_by_name("recsys-encoder")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    assert ensure_experiment("recsys-encoder", settings) == experiment.experiment_id
    stored = {p.relative_to(server.artifacts).as_posix() for p in server.artifacts.rglob("*") if p.is_file()}
    assert any(path.endswith("/MLmodel") for path in stored), sorted(stored)[:20]
    assert any(path.endswith("artifacts/bundle/bundle.json") for path in stored), sorted(stored)[:20]
    assert any(path.endswith("training/run.json") for path in stored), sorted(stored)[:20]
    assert not (settings.home / "mlartifacts").exists() and not (settings.home / "mlflow.db").exists()

    # Loaded by alias over HTTP, the model reproduces the training run's item vectors.
    loaded = mlflow.pyfunc.load_model("models:/recsys-encoder@champion", model_config={"device": "cpu"})
    items = pl.read_parquet(run / "items.parquet")
    vectors = loaded.predict(pd.DataFrame({"text": items["text"].to_list()}))
    expected = np.load(run / "item_vectors.npy")
    assert vectors.shape == expected.shape and np.allclose(vectors, expected, atol=1e-6)
    assert sorted(p.name for p in client_cwd.iterdir()) == []  # nothing written where the user stands
