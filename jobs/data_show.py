"""`recsys data show`: the text the model will read, before any training.

A template that renders `"Heat | | "` or drowns the title under a 400-word description is only found
out after an hour of fine-tuning, unless the user looks first. This prints a few items' rendered text
with their token counts against the item tower's budget, and one user's history as the text tower
reads it (newest first, joined with the tokenizer's separator, cut at the history budget), marking
where the model stops reading.

Only the base model's tokenizer is loaded (no weights), so it takes a second or two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from encoders.base_model import resolve_base_model
from recsys.data.dataset import Dataset
from recsys.data.order import chronological
from recsys.data.readiness import empty_text_items
from recsys.errors import ConfigError


@dataclass(frozen=True)
class ShowOptions:
    items: int = 3
    user: str | None = None
    item_tokens: int = 32
    history_tokens: int = 128
    base_model: str | None = None
    seed: int = 0


def _tokenizer(base_model: str | None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_base_model(base_model), local_files_only=True)


def _cut(tokenizer, text: str, budget: int) -> tuple[int, str, str]:
    """(token count, the part within `budget` tokens, the part past it)."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    if len(offsets) <= budget:
        return len(offsets), text, ""
    end = offsets[budget - 1][1]
    return len(offsets), text[:end], text[end:]


def _median_user(interactions: pl.DataFrame) -> str:
    counts = interactions.group_by("user_id").len().sort(["len", "user_id"])
    return str(counts["user_id"][counts.height // 2])


def show_dataset(folder: Path, options: ShowOptions, echo: Callable[[str], None] = print) -> None:
    """Print the rendered text of a few items and one user's history (module doc)."""
    dataset = Dataset.load(folder)
    tokenizer = _tokenizer(options.base_model)
    texts = dataset.item_text()
    echo(
        f"dataset {folder}: {dataset.items.height:,} items, template {dataset.text_template!r}, "
        f"lists joined with {dataset.list_joiner!r}"
    )
    empty = empty_text_items(dataset)
    if empty:
        echo(f"warning: {empty:,} items render to empty text (the model ranks them by behaviour alone)")
    sample = texts.sample(n=min(options.items, texts.height), seed=options.seed) if options.items > 0 else texts.head(0)
    item_budget = options.item_tokens
    for item_id, text in sample.iter_rows():
        count, seen, unseen = _cut(tokenizer, text, item_budget)
        note = f", the item tower reads the first {item_budget}" if unseen else ""
        echo(f"\nitem {item_id} ({count} tokens{note}):\n  {seen}" + (f" ‖ {unseen}" if unseen else ""))
    user = options.user or _median_user(dataset.interactions)
    history = chronological(dataset.interactions.filter(pl.col("user_id") == user))["item_id"].to_list()
    if not history:
        raise ConfigError(f"user {user!r} has no interactions in {folder}")
    text_of = dict(texts.iter_rows())
    separator = f" {tokenizer.sep_token} " if tokenizer.sep_token else " | "
    joined = separator.join(text_of[i] for i in reversed(history))
    budget = options.history_tokens - 2  # [CLS] and the final [SEP]
    count, seen, unseen = _cut(tokenizer, joined, budget)
    echo(
        f"\nuser {user}: {len(history)} interactions; the text tower reads newest first, "
        f"{min(count, budget)} of {count} tokens (budget {options.history_tokens}):\n  {seen}"
        + (" ‖ (not read: older items)" if unseen else "")
    )
    if unseen:
        echo("  ‖ marks where the model stops reading")
