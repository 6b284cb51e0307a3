"""Catalog hygiene in `data convert`: list categories, type checks, duplicates, HTML, compression, dotted maps.

Files are written by the tests themselves; the ranker test trains a real LightGBM booster over a tiny
random-BERT encoder on a catalog whose `category` is a list of strings.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from encoders.registry import resolve_encoder
from encoders.text_training import TextTrainConfig
from jobs.train_encoder import train_encoder
from jobs.train_ranker import train_ranker
from ranking.candidates import CandidateConfig
from ranking.context import BehaviorContext
from ranking.training import RankerConfig
from recsys.data.clean import clean_items
from recsys.data.dataset import Dataset
from recsys.data.generic import load_generic
from recsys.data.readers import read_raw
from recsys.data.synthetic import generate
from recsys.data.text import render_item_text
from recsys.errors import DataError
from recsys.splits import leave_last_out

INTERACTIONS = "user_id,item_id,ts\nu1,a,1700000000\nu1,b,1700000100\nu2,a,1700000200\n"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    elif path.suffix == ".zst":
        with pa.CompressedOutputStream(str(path), "zstd") as sink:
            sink.write(text.encode())
    else:
        path.write_text(text, encoding="utf-8")
    return path


def inter_csv(folder: Path) -> Path:
    path = folder / "inter.csv"
    path.write_text(INTERACTIONS, encoding="utf-8")
    return path


# --- list categories -------------------------------------------------------------------------
def test_list_category_is_kept_as_clean_list_and_primary_is_first_non_empty(tmp_path: Path) -> None:
    items = write_jsonl(
        tmp_path / "items.jsonl",
        [
            {"item_id": "a", "title": "Heat", "category": ["", " Books ", None, "Crime"]},
            {"item_id": "b", "title": "Up", "category": ["Kids"]},
        ],
    )
    dataset = load_generic(items, inter_csv(tmp_path), text_template="{title} | {category}")
    assert dataset.items.schema["category"] == pl.List(pl.String)
    assert dataset.items["category"].to_list() == [["Books", "Crime"], ["Kids"]]
    assert dataset.item_text()["text"].to_list() == ["Heat | Books, Crime", "Up | Kids"]
    context = BehaviorContext.build(dataset)
    assert [context.categories[c] for c in context.category] == ["Books", "Kids"]
    assert [{context.categories[g] for g in gs} for gs in context.genres] == [{"Books", "Crime"}, {"Kids"}]


@pytest.fixture(scope="module")
def list_category_world(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str):
    """The small synthetic catalog converted from JSON lines whose category is [category, "", "all"]."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("list-category")
    source = generate(n_interactions=1500, n_users=60, n_items=120, seed=3)
    rows = source.items.with_columns(
        pl.concat_list(pl.col("category"), pl.lit(""), pl.lit("all")).alias("category"),
        pl.col("created_at").dt.to_string("%Y-%m-%dT%H:%M:%SZ"),
    )
    write_jsonl(root / "items.jsonl", rows.to_dicts())
    source.interactions.select("user_id", "item_id", pl.col("ts").dt.epoch("s")).write_csv(root / "inter.csv")
    dataset = load_generic(root / "items.jsonl", root / "inter.csv", text_template=source.text_template)
    dataset.save(root / "data")
    dataset = Dataset.load(root / "data")
    split = leave_last_out(dataset.interactions)
    config = TextTrainConfig(
        method="frozen", max_steps=1, batch_size=8, eval_every=1, history_tokens=48, item_tokens=16, threads=1
    )
    train_encoder(
        dataset, split, root / "encoder", tower="text", base_model=tiny_bert, text_config=config, progress=False
    )
    return root, dataset, split, source


def test_train_ranker_runs_on_a_list_typed_category(list_category_world) -> None:
    root, dataset, split, source = list_category_world
    assert dataset.items.schema["category"] == pl.List(pl.String)
    context = BehaviorContext.build(dataset)
    primary = [context.categories[c] for c in context.category]
    assert primary == source.items["category"].to_list()  # the first element, not "all"
    ranker = RankerConfig(
        candidates=CandidateConfig(retrieval_k=40, covisit_k=20, popular_k=10),
        min_data_in_leaf=5,
        max_rounds=30,
        early_stopping_rounds=10,
        extra_cuts=2,
        covisit_window=5,
        threads=1,
    )
    loaded = resolve_encoder(root / "encoder", device="cpu")
    run = train_ranker(dataset, split, loaded, root / "ranker", ranker, progress=False)
    assert 0.0 <= run.test["ndcg@10"] <= 1.0
    assert np.isfinite(run.test["ndcg@10"])


# --- types the pipeline cannot use ----------------------------------------------------------------
def test_unusable_contract_column_type_is_refused_naming_the_column(tmp_path: Path) -> None:
    items = write_jsonl(
        tmp_path / "items.jsonl", [{"item_id": "a", "title": ["Heat", "Alt"]}, {"item_id": "b", "title": ["Up"]}]
    )
    with pytest.raises(DataError) as info:
        load_generic(items, inter_csv(tmp_path), text_template="{title}")
    assert info.value.column == "title" and str(items) in str(info.value)
    nested = write_jsonl(
        tmp_path / "nested.jsonl",
        [
            {"item_id": "a", "title": "Heat", "category": [{"x": 1}]},
            {"item_id": "b", "title": "Up", "category": [{"x": 2}]},
        ],
    )
    with pytest.raises(DataError) as info:
        load_generic(nested, inter_csv(tmp_path), text_template="{title}")
    assert info.value.column == "category" and "list of" in str(info.value)


def test_unusable_template_column_is_refused_and_unused_one_dropped(tmp_path: Path) -> None:
    rows = [{"item_id": "a", "title": "Heat", "images": [{"url": "x"}]}, {"item_id": "b", "title": "Up", "images": []}]
    items = write_jsonl(tmp_path / "items.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_generic(items, inter_csv(tmp_path), text_template="{title} | {images}")
    assert info.value.column == "images" and "template" in str(info.value)
    dataset = load_generic(items, inter_csv(tmp_path), text_template="{title}")
    assert "images" not in dataset.items.columns


# --- duplicates ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("rule", "title"), [("first", "Heat"), ("last", "Heat (1995)")])
def test_dedupe_items_keeps_one_copy_and_counts_the_rest(tmp_path: Path, rule: str, title: str) -> None:
    items = write_jsonl(
        tmp_path / "items.jsonl",
        [{"item_id": "a", "title": "Heat"}, {"item_id": "b", "title": "Up"}, {"item_id": " a", "title": "Heat (1995)"}],
    )
    dataset = load_generic(items, inter_csv(tmp_path), text_template="{title}", duplicates=rule)  # type: ignore[arg-type]
    assert dataset.items["item_id"].to_list() in (["a", "b"], ["b", "a"])
    assert dataset.items.filter(pl.col("item_id") == "a")["title"].item() == title
    assert dataset.notes["duplicate_items_dropped"] == 1


def test_dedupe_items_error_is_the_default(tmp_path: Path) -> None:
    items = write_jsonl(tmp_path / "items.jsonl", [{"item_id": "a", "title": "Heat"}, {"item_id": "a", "title": "X"}])
    with pytest.raises(DataError, match="duplicate key"):
        load_generic(items, inter_csv(tmp_path), text_template="{title}")


# --- list / struct rendering ------------------------------------------------------------------------
def test_lists_and_structs_render_without_empty_elements_and_with_a_joiner() -> None:
    frame = pl.DataFrame(
        {
            "item_id": ["1", "2"],
            "title": ["Heat", "Up"],
            "tags": [["crime", "", None, " la "], []],
            "details": [
                {"Publisher": "Penguin", "Language": None, "Pages": 300},
                {"Publisher": "", "Language": "en", "Pages": None},
            ],
        }
    )
    assert render_item_text(frame, "{title} | {tags} | {details}").to_list() == [
        "Heat | crime, la | Publisher: Penguin, Pages: 300",
        "Up | Language: en",
    ]
    assert render_item_text(frame, "{title} | {tags}", joiner=" / ").to_list() == ["Heat | crime / la", "Up"]


def test_list_joiner_is_kept_with_the_dataset(tmp_path: Path) -> None:
    items = write_jsonl(
        tmp_path / "items.jsonl",
        [{"item_id": "a", "title": "Heat", "tags": ["x", "y"]}, {"item_id": "b", "title": "Up", "tags": ["z"]}],
    )
    dataset = load_generic(items, inter_csv(tmp_path), text_template="{title} - {tags}", list_joiner="; ")
    again = Dataset.load(dataset.save(tmp_path / "out"))
    assert again.item_text()["text"].to_list() == ["Heat - x; y", "Up - z"]


# --- HTML and whitespace ---------------------------------------------------------------------------
def test_html_is_stripped_and_entities_unescaped_by_default_for_json(tmp_path: Path) -> None:
    items = write_jsonl(
        tmp_path / "items.jsonl",
        [
            {
                "item_id": "a",
                "title": '<span class="a-size-medium">Rock &amp; Roll</span>',
                "description": ["<p>Loud.<br>Fun&#39;s here&nbsp;now</p>", "<b></b>"],
            },
            {"item_id": "b", "title": "Up", "description": []},
        ],
    )
    dataset = load_generic(items, inter_csv(tmp_path), text_template="{title} | {description}")
    assert dataset.items["title"].to_list() == ["Rock & Roll", "Up"]
    assert dataset.items["description"].to_list() == [["Loud. Fun's here now"], []]
    assert dataset.notes["clean_html"] == "true"
    kept = load_generic(items, inter_csv(tmp_path), text_template="{title}", clean_html=False)
    assert kept.items["title"][0].startswith("<span")


def test_plain_text_is_untouched_by_html_cleaning() -> None:
    plain = ["AT&T: a < b and 5 > 3", "Fish & Chips; R&D", "x <- y (R code)", "100% <3", 'Tom\'s "quote"']
    frame = pl.DataFrame({"item_id": [str(i) for i in range(len(plain))], "title": plain})
    assert clean_items(frame, strip_html=True)["title"].to_list() == plain


def test_whitespace_is_normalised_even_without_html_cleaning(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text('item_id,title\na,"  Heat\n\t(1995)  "\nb,Up\n', encoding="utf-8")
    dataset = load_generic(path, inter_csv(tmp_path), text_template="{title}")
    assert dataset.items["title"].to_list() == ["Heat (1995)", "Up"]
    assert dataset.notes["clean_html"] == "false"


# --- compressed inputs ----------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_compressed_jsonl_is_read_directly(tmp_path: Path, suffix: str) -> None:
    rows = [{"item_id": "a", "title": "Heat"}, {"item_id": "b", "title": "Up"}]
    path = write_jsonl(tmp_path / f"items{suffix}", rows)
    assert read_raw(path).to_dicts() == rows
    dataset = load_generic(path, inter_csv(tmp_path), text_template="{title}")
    assert dataset.notes["clean_html"] == "true"  # JSON under the compression suffix


def test_errors_in_a_compressed_file_name_the_compressed_file(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"item_id": "a"}\n{not json}\n'))
    with pytest.raises(DataError) as info:
        read_raw(path)
    assert info.value.file == str(path) and info.value.row == 2
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"item_id": "a"}\n')[:12])
    with pytest.raises(DataError, match="decompress"):
        read_raw(broken)


# --- dotted paths --------------------------------------------------------------------------------
def test_dotted_map_reads_nested_fields(tmp_path: Path) -> None:
    items = write_jsonl(
        tmp_path / "items.jsonl",
        [
            {"product": {"id": "a"}, "title": "Heat", "details": {"Publisher": "Penguin", "Pages": 300}},
            {"product": {"id": "b"}, "title": "Up", "details": {"Publisher": None, "Pages": 90}},
        ],
    )
    dataset = load_generic(
        items,
        inter_csv(tmp_path),
        mapping=["product.id=item_id", "details.publisher=brand"],
        text_template="{title} | {brand}",
    )
    assert dataset.items["item_id"].to_list() == ["a", "b"]
    assert dataset.items["brand"].to_list() == ["Penguin", None]
    assert dataset.item_text()["text"].to_list() == ["Heat | Penguin", "Up"]
    with pytest.raises(DataError) as info:
        load_generic(items, inter_csv(tmp_path), mapping=["product.id=item_id", "details.isbn=isbn"])
    assert info.value.column == "details.isbn"
