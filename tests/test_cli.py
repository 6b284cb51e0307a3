"""The `recsys` CLI as a user runs it: a real subprocess, real files, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

RECSYS = [sys.executable, "-m", "recsys.cli"]
MOVIELENS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movielens" / "ml-latest-small"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RECSYS, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_is_fast_and_lists_commands():
    started = time.perf_counter()
    result = run("--help")
    elapsed = time.perf_counter() - started
    assert result.returncode == 0
    for command in ("data", "baselines"):
        assert command in result.stdout
    # Startup must not import torch/mlflow/polars: check what the CLI module pulls in.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, recsys.cli; print(','.join(sorted(m for m in "
            "('torch','mlflow','polars','transformers','faiss','lightgbm') if m in sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "", f"heavy modules imported at CLI start: {probe.stdout}"
    assert elapsed < 10  # generous: the real budget (<1 s) is measured in benchmarks, not asserted here


def test_synth_split_baselines_pipeline(tmp_path):
    data, split, out = tmp_path / "data", tmp_path / "split", tmp_path / "base"
    assert run("data", "synth", "--out", str(data), "--interactions", "3000", "--seed", "1").returncode == 0
    assert run("data", "validate", "--path", str(data)).returncode == 0
    result = run("data", "split", "--data", str(data), "--out", str(split))
    assert result.returncode == 0, result.stderr
    result = run("baselines", "--split", str(split), "--out", str(out))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"mostpop", "itemknn"}
    assert 0.0 <= metrics["itemknn"]["ndcg@10"] <= 1.0
    assert (out / "topk_itemknn.parquet").exists()


def test_ab_writes_a_report_with_all_and_tie_free_users(tmp_path):
    """`recsys ab`: the CLI's options reach run_ab's configs; the report shows both user groups."""
    data, split, report = tmp_path / "data", tmp_path / "split", tmp_path / "report"
    assert run("data", "synth", "--out", str(data), "--interactions", "3000", "--seed", "1").returncode == 0
    assert run("data", "split", "--data", str(data), "--out", str(split)).returncode == 0
    result = run(
        "ab",
        "--split",
        str(split),
        "--a",
        "mostpop",
        "--b",
        "itemknn",
        "--out",
        str(report),
        "--bootstrap",
        "300",
        "--test",
        "ttest",
        "--seed",
        "3",
        "--impressions",
        str(data),
        "--clip",
        "20",
        "--no-log",
    )
    assert result.returncode == 0, result.stderr
    assert "NDCG@10" in result.stdout and "report.md" in result.stdout
    saved = json.loads((report / "report.json").read_text())
    settings = saved["settings"]
    assert (settings["n_bootstrap"], settings["primary"], settings["seed"], settings["clip"]) == (300, "ttest", 3, 20)
    assert saved["n_tie_free_users"] == saved["tie_free"]["n_users"] > 0
    assert "## All users and tie-free users" in (report / "report.md").read_text()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "file is empty"),
        (b"user_id;item_id;ts\r\nu1;i1;2020-01-01\r\n", "--delimiter"),
        (b"user_id,item_id,ts\nu1,i1,not-a-time\n", "unparsable timestamp"),
        (b"user_id,item_id\nu1,i1\n", "missing required column"),
    ],
)
def test_bad_data_gives_one_line_and_exit_2(tmp_path, content, expected):
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\ni1,Heat\n")
    events = tmp_path / "events.csv"
    events.write_bytes(content)
    result = run("data", "validate", "--format", "generic", "--items", str(items), "--interactions", str(events))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert str(events) in lines[0]


def test_missing_dataset_folder_is_a_clear_error(tmp_path):
    result = run("data", "split", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "s"))
    assert result.returncode == 2
    assert "dataset.json" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.movielens
def test_movielens_convert_and_split(tmp_path):
    if not MOVIELENS.exists():
        pytest.skip(f"MovieLens data not found at {MOVIELENS} (../shared is absent)")
    data, split = tmp_path / "ml", tmp_path / "split"
    result = run("data", "convert", "--format", "movielens", "--path", str(MOVIELENS), "--out", str(data))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((data / "dataset.json").read_text())
    assert manifest["interactions"] == 100_836 and manifest["users"] == 610
    assert run("data", "split", "--data", str(data), "--out", str(split)).returncode == 0
    counts = json.loads((split / "split.json").read_text())["counts"]
    assert counts["test_users"] == 610 and counts["catalog"] == 9_724
