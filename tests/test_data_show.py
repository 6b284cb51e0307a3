"""`recsys data show`: the rendered item text, token counts and one history, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl

from jobs.data_show import ShowOptions, show_dataset
from recsys.data.dataset import Dataset

RECSYS = [sys.executable, "-m", "recsys.cli"]


def _dataset(root: Path) -> Path:
    long = "word " * 80
    items = pl.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "title": ["Heat", "Up", "Alien"],
            "tags": [["crime", ""], [], ["space"]],
            "description": ["", long.strip(), None],
        }
    )
    ts = pl.Series([1, 2, 3, 4], dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))
    interactions = pl.DataFrame({"user_id": ["u1", "u1", "u1", "u2"], "item_id": ["a", "b", "c", "a"], "ts": ts})
    return Dataset(items, interactions, text_template="{title} | {tags} | {description}").save(root / "data")


def test_show_prints_items_with_token_counts_and_a_cut_history(tmp_path: Path) -> None:
    lines: list[str] = []
    show_dataset(_dataset(tmp_path), ShowOptions(items=3, user="u1", history_tokens=16), echo=lines.append)
    text = "\n".join(lines)
    assert "item a (" in text and "Heat | crime" in text
    assert "the item tower reads the first 32" in text  # item b's 80-word description is cut
    assert "user u1: 3 interactions" in text and "Alien | space [SEP] Up" in text  # newest first
    assert "‖" in text  # where the model stops reading


def test_cli_show_runs_on_a_converted_folder(tmp_path: Path) -> None:
    folder = _dataset(tmp_path)
    result = subprocess.run(
        [*RECSYS, "data", "show", "--data", str(folder), "--items", "2"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\nitem ") == 2 and "user " in result.stdout
