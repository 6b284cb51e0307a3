"""The Amazon Reviews adapter (`--format amazon`): both releases, written here as small JSON-lines files.

The 2018 pair reproduces what a user met on a real category: repeated products in the metadata, HTML
in titles, list fields with empty elements, reviews of products missing from the metadata, a repeated
review, and gzip compression.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from recsys.data.amazon import DEFAULT_TEMPLATE, load_amazon
from recsys.data.dataset import Dataset
from recsys.errors import DataError

RECSYS = [sys.executable, "-m", "recsys.cli"]

META_2018 = [
    {
        "asin": "B001",
        "title": '<span class="a-size-medium">Heat &amp; Dust</span>',
        "brand": "Penguin",
        "category": ["Books", "", "Literature &amp; Fiction"],
        "description": ["A <b>novel</b>.", ""],
        "feature": [],
        "main_cat": "Books",
        "price": "$4.99",
        "imageURL": ["http://x/1.jpg"],
    },
    {
        "asin": "B002",
        "title": "Up",
        "brand": "",
        "category": ["Books", "Children's Books"],
        "description": "A short\n\tstory.",
        "main_cat": "Books",
    },
    {"asin": "B001", "title": "Heat & Dust (copy)", "brand": "Penguin", "category": ["Books"]},  # repeated product
    {"asin": "B003", "title": "Alien", "category": [], "description": [], "main_cat": "Movies"},
]
REVIEWS_2018 = [
    {
        "reviewerID": "U1",
        "asin": "B001",
        "overall": 5.0,
        "unixReviewTime": 1445040000,
        "reviewText": "SECRET review words",
        "summary": "great",
        "style": {"Format:": " Paperback"},
    },
    {"reviewerID": "U1", "asin": "B002", "overall": 4.0, "unixReviewTime": 1445140000, "vote": "2"},
    {"reviewerID": "U1", "asin": "B003", "overall": 3.0, "unixReviewTime": 1445240000},
    {"reviewerID": "U2", "asin": "B002", "overall": 2.0, "unixReviewTime": 1445040000},
    {"reviewerID": "U2", "asin": "B002", "overall": 2.0, "unixReviewTime": 1445040000},  # repeated review
    {"reviewerID": "U2", "asin": "B999", "overall": 1.0, "unixReviewTime": 1445050000},  # not in the metadata
]
META_2023 = [
    {
        "main_category": "All Beauty",
        "title": "Soap &#x26; Co",
        "average_rating": 4.8,
        "rating_number": 10,
        "features": ["Mild", ""],
        "description": [],
        "price": None,
        "images": [{"large": "http://x"}],
        "videos": [],
        "store": "Howard",
        "categories": [],
        "details": {"Brand": "Howard"},
        "parent_asin": "P1",
        "bought_together": None,
    },
    {
        "main_category": "All Beauty",
        "title": "Brush",
        "features": [],
        "description": ["Soft."],
        "store": None,
        "categories": ["Beauty", "Tools"],
        "details": {"Brand": "Kent"},
        "parent_asin": "P2",
    },
]
REVIEWS_2023 = [
    {
        "rating": 5.0,
        "title": "Love it",
        "text": "SECRET",
        "images": [],
        "asin": "A1",
        "parent_asin": "P1",
        "user_id": "AG1",
        "timestamp": 1588687728923,
        "helpful_vote": 0,
        "verified_purchase": True,
    },
    {
        "rating": 3.0,
        "title": "ok",
        "text": "fine",
        "images": [],
        "asin": "A2",
        "parent_asin": "P2",
        "user_id": "AG1",
        "timestamp": 1588787728923,
        "helpful_vote": 1,
        "verified_purchase": False,
    },
]


def write(path: Path, rows: list[dict]) -> Path:
    text = "".join(json.dumps(row) + "\n" for row in rows).encode()
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)
    return path


def test_2018_gzipped_pair_converts_with_clean_text_and_counted_drops(tmp_path: Path) -> None:
    dataset = load_amazon(
        write(tmp_path / "Books.json.gz", REVIEWS_2018), write(tmp_path / "meta_Books.json.gz", META_2018)
    )
    items = dataset.items
    assert items["item_id"].to_list() == ["B001", "B002", "B003"]
    assert items["title"].to_list() == ["Heat & Dust", "Up", "Alien"]  # first copy kept, HTML gone
    assert items["category"].to_list() == [["Books", "Literature & Fiction"], ["Books", "Children's Books"], ["Movies"]]
    assert dataset.text_template == DEFAULT_TEMPLATE
    assert dataset.item_text()["text"].to_list() == [
        "Heat & Dust | Penguin | Books, Literature & Fiction | A novel.",
        "Up | Books, Children's Books | A short story.",
        "Alien | Movies",
    ]
    assert not any("SECRET" in text for text in dataset.item_text()["text"].to_list())  # no review text
    inter = dataset.interactions
    assert inter.height == 4 and inter.columns == ["user_id", "item_id", "ts", "weight"]
    assert inter["ts"].dtype == pl.Datetime("us", "UTC") and inter["ts"][0].year == 2015
    notes = dataset.notes
    assert notes["format"] == "amazon-2018"
    assert (notes["duplicate_items_dropped"], notes["dropped_unknown_items"], notes["duplicate_reviews_dropped"]) == (
        1,
        1,
        1,
    )


def test_2023_pair_keys_items_by_parent_asin(tmp_path: Path) -> None:
    dataset = load_amazon(
        write(tmp_path / "All_Beauty.jsonl", REVIEWS_2023), write(tmp_path / "meta_All_Beauty.jsonl", META_2023)
    )
    assert dataset.items["item_id"].to_list() == ["P1", "P2"]
    assert dataset.items["brand"].to_list() == ["Howard", "Kent"]  # store, else details.Brand
    assert dataset.items["category"].to_list() == [["All Beauty"], ["Beauty", "Tools"]]
    assert dataset.item_text()["text"].to_list() == [
        "Soap & Co | Howard | All Beauty",
        "Brush | Kent | Beauty, Tools | Soft.",
    ]
    assert dataset.interactions["item_id"].to_list() == ["P1", "P2"]
    assert dataset.interactions["ts"][0].year == 2020  # milliseconds read as such
    assert dataset.notes["format"] == "amazon-2023"


def test_mixed_releases_and_foreign_files_are_refused(tmp_path: Path) -> None:
    meta = write(tmp_path / "meta.jsonl", META_2018)
    with pytest.raises(DataError, match="2023 release but the metadata"):
        load_amazon(write(tmp_path / "reviews.jsonl", REVIEWS_2023), meta)
    with pytest.raises(DataError, match="Amazon metadata") as info:
        load_amazon(write(tmp_path / "r.jsonl", REVIEWS_2018), write(tmp_path / "m.jsonl", [{"id": 1}]))
    assert info.value.file == str(tmp_path / "m.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(META_2018[0]) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_amazon(write(tmp_path / "r2.jsonl", REVIEWS_2018), bad)


def test_cli_converts_an_amazon_pair_in_one_command(tmp_path: Path) -> None:
    reviews = write(tmp_path / "Books.json.gz", REVIEWS_2018)
    meta = write(tmp_path / "meta_Books.json.gz", META_2018)
    out = tmp_path / "data"
    result = subprocess.run(
        [
            *RECSYS,
            "data",
            "convert",
            "--format",
            "amazon",
            "--reviews",
            str(reviews),
            "--metadata",
            str(meta),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "1 repeated item" in result.stdout + result.stderr
    dataset = Dataset.load(out)
    assert dataset.items.height == 3 and dataset.interactions.height == 4
    assert dataset.items.schema["category"] == pl.List(pl.String)
