"""`recsys quickstart` refuses to reuse a work folder made with other settings (before doing any work)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from jobs.budgets import pick_budgets
from jobs.quickstart import CHOICES_FILE, QuickstartConfig, run_quickstart
from recsys.data.dataset import Dataset
from recsys.data.readiness import DataProfile
from recsys.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]


def test_a_work_folder_from_another_dataset_or_budget_is_refused(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / CHOICES_FILE).write_text(json.dumps({"dataset": "synthetic", "path": None, "lora_steps": 30}))
    with pytest.raises(ConfigError, match=r"dataset 'synthetic' -> 'movielens-small'.*--fresh"):
        run_quickstart(QuickstartConfig(work=work, dataset="movielens-small", path=tmp_path, serve=False))
    with pytest.raises(ConfigError, match=r"lora_steps 30 -> 5"):
        run_quickstart(QuickstartConfig(work=work, steps=5, serve=False))
    assert sorted(p.name for p in work.iterdir()) == [CHOICES_FILE]  # nothing was started


def test_unknown_dataset_is_one_clear_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys.cli",
            "quickstart",
            "--work",
            str(tmp_path / "w"),
            "--dataset",
            "imagenet",
            "--no-serve",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2 and "unknown --dataset 'imagenet'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "w").exists()


# --------------------------------------------------------------------------- your own data (--data DIR)
def _folder(root: Path, users: list[str], items: list[str], seconds: list[int]) -> Path:
    """A canonical dataset folder written by the real `Dataset.save`."""
    catalog = sorted(set(items))
    ts = pl.from_epoch(pl.Series(seconds), time_unit="s").dt.replace_time_zone("UTC").dt.cast_time_unit("us")
    dataset = Dataset(
        items=pl.DataFrame({"item_id": catalog, "title": [f"Item {i}" for i in catalog]}),
        interactions=pl.DataFrame({"user_id": users, "item_id": items, "ts": ts}),
        text_template="{title}",
    )
    return dataset.save(root / "data")


@pytest.mark.parametrize(
    ("users", "items", "seconds", "message"),
    [
        (["u1", "u1", "u2", "u2"], ["a", "b", "a", "c"], [1, 2, 3, 4], "no user has 3 or more interactions"),
        (["u1", "u1", "u1", "u2"], ["a", "a", "a", "a"], [1, 2, 3, 4], "only 1 item has interactions"),
        (["u1", "u1", "u1", "u2"], ["a", "b", "c", "a"], [5, 5, 5, 5], "same timestamp"),
    ],
)
def test_thin_data_is_refused_before_anything_runs(tmp_path, users, items, seconds, message):
    folder = _folder(tmp_path, users, items, seconds)
    work = tmp_path / "work"
    with pytest.raises(DataError, match=message) as info:
        run_quickstart(QuickstartConfig(work=work, data=folder, serve=False))
    assert str(folder) in str(info.value)
    assert not work.exists()  # nothing was written, let alone trained


def test_thin_data_is_one_clear_line_on_the_command_line(tmp_path):
    folder = _folder(tmp_path, ["u1", "u1", "u2"], ["a", "b", "a"], [1, 2, 3])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys.cli",
            "quickstart",
            "--work",
            str(tmp_path / "w"),
            "--data",
            str(folder),
            "--no-serve",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 2 and "no user has 3 or more interactions" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "w").exists()


def test_data_and_dataset_together_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="either --dataset or --data"):
        QuickstartConfig(work=tmp_path, dataset="movielens-small", data=tmp_path)


def _profile(users: int, interactions: int) -> DataProfile:
    return DataProfile(
        users=users,
        items=1000,
        items_with_interactions=900,
        interactions=interactions,
        eligible_users=users,
        distinct_times=interactions,
        median_history=interactions / users,
    )


def test_budgets_grow_with_the_data_and_stop_at_their_caps():
    small, medium, large = (
        pick_budgets(_profile(300, 4_000)),
        pick_budgets(_profile(610, 100_000)),
        pick_budgets(_profile(60_000, 1_000_000)),
    )
    assert (small.lora_steps, small.history_tokens, small.ranker_cuts, small.sequence_seconds) == (30, 64, 8, None)
    assert (medium.lora_steps, medium.history_tokens, medium.ranker_cuts) == (200, 128, 8)
    assert (large.lora_steps, large.history_tokens, large.ranker_cuts) == (300, 128, 2)
    assert large.sequence_seconds == 900.0
    assert 60_000 * (large.ranker_cuts + 1) <= 200_000
    assert "LoRA steps 300" in large.line(60_000) and "ranker training queries" in large.line(60_000)


def test_a_folder_gets_budgets_from_its_size_and_steps_override(tmp_path):
    users = [f"u{i // 4}" for i in range(40)]
    items = [f"i{i % 7}" for i in range(40)]
    folder = _folder(tmp_path, users, items, list(range(40)))
    lines: list[str] = []
    config = QuickstartConfig(work=tmp_path / "w", data=folder, echo=lines.append)
    assert config.dataset == "folder" and config.budgets().lora_steps == 30
    assert any("10 users (10 with >= 3 interactions)" in line for line in lines)
    assert QuickstartConfig(work=tmp_path / "w", data=folder, steps=5).lora_steps() == 5
    assert QuickstartConfig(work=tmp_path / "w").budgets().sequence_epochs == 15  # the demo keeps its budget
