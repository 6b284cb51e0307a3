"""The README's MLflow snippets, run as written, and the embedded store staying embedded.

A newcomer pasted `mlflow.pyfunc.load_model("models:/recsys-encoder@champion")` into a plain Python
session and got "Registered Model ... not found" plus a stray ./mlflow.db. The README now says how
to point MLflow at recsys' store; this test runs that very block, in a fresh process, in a folder
of its own, against a store where a tiny encoder is registered as champion.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.log_encoder import log_encoder_run
from jobs.testing import train_tiny_encoder
from recsys.config import load_settings

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## MLflow") :]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    found = [block for block in blocks if "pyfunc.load_model" in block]
    assert found, "the README's MLflow section lost its load_model snippet"
    return re.sub(r"^ {2}", "", found[0], flags=re.M)  # the block is indented under a list item


@pytest.mark.slow
def test_readme_pyfunc_snippet_runs_as_written(tmp_path, tiny_path, small_data, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    dataset, _ = small_data
    settings = load_settings(home=tmp_path / "home", prefix="recsys", tracking_uri="")
    run = train_tiny_encoder(dataset, tmp_path / "encoder", tiny_path)
    log_encoder_run(run, settings, alias="champion")
    session = tmp_path / "session"
    session.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(RECSYS_HOME=str(settings.home), MLFLOW_DISABLE_TELEMETRY="true")
    result = subprocess.run(
        [sys.executable, "-c", _snippet()], cwd=session, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"\(1, \d+\)", result.stdout)  # one text, one vector
    assert not (session / "mlflow.db").exists() and not (session / "mlruns").exists()


def test_settings_stay_embedded_after_configure_mlflow(tmp_path):
    code = (
        "from recsys.registry import configure_mlflow, tracking_uri; from recsys.config import load_settings; "
        "uri = configure_mlflow(); print(load_settings().embedded, uri == tracking_uri())"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(RECSYS_HOME=str(tmp_path / "h"), MLFLOW_DISABLE_TELEMETRY="true")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "True"]
    external = load_settings(home=tmp_path / "h", tracking_uri="http://mlflow.internal:5000")
    assert not external.embedded  # a real server stays external
