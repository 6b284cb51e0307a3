"""A dataset on disk: the canonical tables as parquet plus a small JSON manifest.

Layout of a dataset folder::

    items.parquet  interactions.parquet  [impressions.parquet]  dataset.json

`dataset.json` records the name, the item-text template (and the joiner of list values) and the row
counts, so every later step (split, encoder, index) reads the same text without re-deriving it from
the source files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys.data.contracts import validate_impressions, validate_interactions, validate_items
from recsys.data.text import DEFAULT_JOINER, DEFAULT_TEMPLATE, render_item_text, template_fields
from recsys.errors import DataError

MANIFEST = "dataset.json"


@dataclass
class Dataset:
    """Validated canonical tables; construct through an adapter or `Dataset.load`."""

    items: pl.DataFrame
    interactions: pl.DataFrame
    impressions: pl.DataFrame | None = None
    name: str = "dataset"
    text_template: str = DEFAULT_TEMPLATE
    list_joiner: str = DEFAULT_JOINER
    notes: dict[str, int | str] = field(default_factory=dict)

    def item_text(self) -> pl.DataFrame:
        """`item_id, text` for every item, rendered from the dataset's template."""
        return self.items.select("item_id").with_columns(
            render_item_text(self.items, self.text_template, self.list_joiner)
        )

    def summary(self) -> dict[str, int | str]:
        out: dict[str, int | str] = {
            "name": self.name,
            "items": self.items.height,
            "interactions": self.interactions.height,
            "users": self.interactions["user_id"].n_unique(),
            "items_with_interactions": self.interactions["item_id"].n_unique(),
        }
        if self.impressions is not None:
            out["impressions"] = self.impressions.height
        return out

    def save(self, folder: str | Path) -> Path:
        """Write the tables and manifest; files are written to temporaries and renamed into place."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tables = {"items": self.items, "interactions": self.interactions, "impressions": self.impressions}
        for name, table in tables.items():
            target = folder / f"{name}.parquet"
            if table is None:
                target.unlink(missing_ok=True)
                continue
            tmp = target.with_suffix(".parquet.tmp")
            table.write_parquet(tmp)
            tmp.replace(target)
        manifest = {
            "name": self.name,
            "text_template": self.text_template,
            "list_joiner": self.list_joiner,
            **self.summary(),
            "notes": self.notes,
        }
        tmp = folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
        tmp.replace(folder / MANIFEST)
        return folder

    @classmethod
    def load(cls, folder: str | Path, validate: bool = True) -> Dataset:
        """Read a dataset folder written by `save` (or by `recsys data convert`)."""
        folder = Path(folder)
        manifest_path = folder / MANIFEST
        if not manifest_path.exists():
            raise DataError(
                "not a dataset folder (no dataset.json); create one with `recsys data convert` or `recsys data synth`",
                file=str(folder),
            )
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"dataset manifest is not valid JSON ({exc})", file=str(manifest_path)) from exc
        for required in ("items.parquet", "interactions.parquet"):
            if not (folder / required).exists():
                raise DataError(f"dataset folder lacks {required}", file=str(folder))
        items = pl.read_parquet(folder / "items.parquet")
        interactions = pl.read_parquet(folder / "interactions.parquet")
        impressions_path = folder / "impressions.parquet"
        impressions = pl.read_parquet(impressions_path) if impressions_path.exists() else None
        if validate:
            template = manifest.get("text_template", DEFAULT_TEMPLATE)
            items = validate_items(items, str(folder / "items.parquet"), template_fields(template))
            interactions, _ = validate_interactions(interactions, str(folder / "interactions.parquet"), items)
            if impressions is not None:
                impressions = validate_impressions(impressions, str(impressions_path), items)
        return cls(
            items=items,
            interactions=interactions,
            impressions=impressions,
            name=manifest.get("name", folder.name),
            text_template=manifest.get("text_template", DEFAULT_TEMPLATE),
            list_joiner=manifest.get("list_joiner", DEFAULT_JOINER),
            notes=manifest.get("notes", {}),
        )
