"""Data jobs behind `recsys data ...`: convert a source to a canonical dataset folder, and split it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from recsys.data.amazon import load_amazon
from recsys.data.contracts import DuplicateRule
from recsys.data.dataset import Dataset
from recsys.data.generic import load_generic
from recsys.data.mind import load_mind
from recsys.data.movielens import load_movielens
from recsys.data.text import DEFAULT_JOINER
from recsys.errors import ConfigError
from recsys.splits import global_time_cut, leave_last_out

if TYPE_CHECKING:
    from recsys.splits import Split

SourceFormat = Literal["movielens", "mind", "generic", "amazon", "synthetic", "dataset"]


@dataclass(frozen=True)
class CatalogOptions:
    """Catalog hygiene choices of `data convert` (None: the format's own default, see each adapter).

    generic: duplicates error, HTML cleaned for JSON items only, unknown items an error;
    amazon: duplicates first, HTML cleaned, unknown items dropped (the public dumps need all three).
    """

    duplicates: DuplicateRule | None = None
    clean_html: bool | None = None
    list_joiner: str | None = None


def load_source(
    fmt: SourceFormat,
    path: Path | None = None,
    items: Path | None = None,
    interactions: Path | None = None,
    impressions: Path | None = None,
    mapping: dict[str, str] | None = None,
    delimiter: str | None = None,
    template: str | None = None,
    drop_unknown_items: bool = False,
    catalog: CatalogOptions | None = None,
) -> Dataset:
    """Read any supported source into a validated `Dataset`."""
    unknown: Literal["error", "drop"] = "drop" if drop_unknown_items else "error"
    catalog = catalog or CatalogOptions()
    joiner = catalog.list_joiner if catalog.list_joiner is not None else DEFAULT_JOINER
    if fmt == "dataset":
        if path is None:
            raise ConfigError("--path is required for a dataset folder")
        return Dataset.load(path)
    if fmt == "movielens":
        if path is None:
            raise ConfigError("--path (the MovieLens folder) is required")
        return load_movielens(path, text_template=template, unknown_items=unknown)
    if fmt == "mind":
        if path is None:
            raise ConfigError("--path (the MIND folder with news.tsv and behaviors.tsv) is required")
        return load_mind(path, text_template=template, unknown_items=unknown)
    if fmt == "generic":
        if items is None or interactions is None:
            raise ConfigError("--items and --interactions are required for --format generic")
        kwargs = {"text_template": template} if template else {}
        return load_generic(
            items,
            interactions,
            impressions,
            mapping=mapping,
            delimiter=delimiter,
            unknown_items=unknown,
            duplicates=catalog.duplicates or "error",
            clean_html=catalog.clean_html,
            list_joiner=joiner,
            **kwargs,
        )
    if fmt == "amazon":
        if items is None or interactions is None:
            raise ConfigError(
                "--metadata (product metadata JSONL) and --reviews (reviews JSONL) are required for --format amazon"
            )
        if mapping:
            raise ConfigError(
                "--map does not apply to --format amazon (its columns are fixed); use --format generic to map your own"
            )
        return load_amazon(
            interactions,
            items,
            text_template=template,
            duplicates=catalog.duplicates or "first",
            clean_html=True if catalog.clean_html is None else catalog.clean_html,
            list_joiner=joiner,
        )
    raise ConfigError(f"unknown format {fmt!r}; use movielens, mind, generic, amazon or dataset")


def split_dataset(
    dataset: Dataset,
    method: Literal["leave-last-out", "time-cut"] = "leave-last-out",
    test_start: str | None = None,
    valid_start: str | None = None,
    min_interactions: int = 3,
) -> Split:
    """Make the evaluation split the rest of the product is measured on."""
    if method == "leave-last-out":
        return leave_last_out(dataset.interactions, min_interactions=min_interactions)
    if method == "time-cut":
        if not test_start:
            raise ConfigError("--test-start is required for --method time-cut")
        return global_time_cut(dataset.interactions, test_start, valid_start)
    raise ConfigError(f"unknown split method {method!r}; use leave-last-out or time-cut")
