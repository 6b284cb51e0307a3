"""`recsys quickstart` refuses to reuse a work folder made with other settings (before doing any work)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.quickstart import CHOICES_FILE, QuickstartConfig, run_quickstart
from recsys.errors import ConfigError

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
    result = subprocess.run([sys.executable, "-m", "recsys.cli", "quickstart", "--work", str(tmp_path / "w"),
                             "--dataset", "imagenet", "--no-serve"], capture_output=True, text=True, cwd=REPO,
                            timeout=120)
    assert result.returncode == 2 and "unknown --dataset 'imagenet'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "w").exists()
