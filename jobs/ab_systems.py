"""Top-K lists of registered models for `recsys ab`: an encoder alone, or encoder + ranker.

A/B systems may be named by model reference instead of a precomputed file:

- `encoder:<ref>` or `models:/<prefix>-encoder@alias|/version`: the encoder's retrieval order;
- `ranker:<ref>` or `models:/<prefix>-ranker@alias|/version`: the full second stage, with the
  encoder the ranker was trained on (its registry version, or the local folder it names);
- `frozen`: the zero-shot base encoder (text tower), built once per dataset under
  `$RECSYS_HOME/frozen/<dataset>-<split hash>` with `train-encoder --method frozen` and then scored
  like any encoder;
- a `train-encoder` / `train-ranker` output folder: its saved `topk_<stage>.parquet`.

Both model paths build the stage's queries exactly like training (`jobs.train_ranker`): history =
everything before the target, catalog = the split's, seen items excluded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from encoders.registry import resolve_encoder
from encoders.text_training import TextTrainConfig
from jobs.train_encoder import train_encoder
from jobs.train_ranker import catalog_texts, item_space, item_text_vectors, stage_queries, topk_frame
from ranking.context import BehaviorContext
from ranking.registry import load_ranker
from ranking.training import RankerConfig, top_k
from recsys.config import load_settings
from recsys.errors import ConfigError

if TYPE_CHECKING:
    import polars as pl

    from recsys.config import Settings
    from recsys.data.dataset import Dataset
    from recsys.splits import Split

PREFIXES = ("encoder:", "ranker:")


def is_model_reference(spec: str) -> bool:
    return spec.startswith(PREFIXES) or spec.startswith("models:/") or spec == "frozen"


def frozen_encoder(dataset: Dataset, split: Split, settings: Settings | None = None) -> Path:
    """The zero-shot encoder's run folder for this dataset and split (made once, then reused)."""
    # From the environment, not the last MLflow configuration: RECSYS_HOME decides where it lives.
    settings = settings or load_settings()
    digest = hashlib.sha256(repr((dataset.name, sorted(split.counts().items()))).encode()).hexdigest()[:12]
    folder = settings.home / "frozen" / f"{dataset.name}-{digest}"
    if not (folder / "run.json").is_file():
        train_encoder(dataset, split, folder, tower="text", text_config=TextTrainConfig(method="frozen", max_steps=0))
    return folder


def _kind_and_ref(spec: str) -> tuple[str, str]:
    for prefix in PREFIXES:
        if spec.startswith(prefix):
            return prefix[:-1], spec[len(prefix) :]
    name = spec[len("models:/") :].split("@")[0].rsplit("/", 1)[0]
    if name.endswith("-ranker"):
        return "ranker", spec
    if name.endswith("-encoder"):
        return "encoder", spec
    raise ConfigError(
        f"system {spec!r}: cannot tell whether {name!r} is an encoder or a ranker; write encoder:<ref> or ranker:<ref>"
    )


def model_topk(
    spec: str, dataset: Dataset | None, split: Split, stage: str, k: int, settings: Settings | None = None
) -> tuple[pl.DataFrame, str]:
    """(top-k table, description) of a model reference on the split's stage (module doc)."""

    if dataset is None:
        raise ConfigError(f"system {spec!r} is a model: pass the dataset folder too (--data)")
    if spec == "frozen":
        spec = f"encoder:{frozen_encoder(dataset, split, settings)}"
    kind, ref = _kind_and_ref(spec)
    ranker = None
    if kind == "ranker":
        ranker = load_ranker(ref, dataset=dataset, settings=settings)
        context = ranker.context
        encoder_ref = _encoder_of(ranker.meta)
        config = RankerConfig.from_dict(ranker.meta.get("config") or {})
    else:
        context = BehaviorContext.build(dataset)
        encoder_ref = ref
        config = RankerConfig()
    loaded = resolve_encoder(encoder_ref, settings=settings)
    if ranker is not None and ranker.encoder_version not in (None, loaded.version):
        raise ConfigError(
            f"ranker {ref} was trained on encoder {ranker.encoder_version}, but {encoder_ref} "
            f"resolves to {loaded.version}"
        )
    config.candidates.retrieval_k = max(config.candidates.retrieval_k, k)
    texts = catalog_texts(dataset, context.item_ids)
    text_vectors = item_text_vectors(loaded, texts, None)
    vectors = item_space(loaded, context.item_ids, texts, None, text_vectors)
    if ranker is not None and ranker.item_content:
        context.with_content(text_vectors)
    labeled = stage_queries(loaded, context, split, stage, vectors, texts, config)
    users = labeled.user_ids
    if ranker is None:
        lists = [(q.retrieved[:k], q.interest[:k]) for q in labeled.queries]
        return topk_frame(users, lists, context.item_ids), f"encoder `{loaded.version}` retrieval order"
    candidates, _, scores = ranker.score(labeled.queries, lambda rows: vectors[rows])
    return (
        topk_frame(users, top_k(scores, candidates, k), context.item_ids),
        f"ranker `{ranker.version}` over encoder `{loaded.version}`",
    )


def _encoder_of(meta: dict) -> str:
    """A loadable reference to the encoder a ranker was trained with."""
    version = str(meta.get("encoder_version") or "")
    name, _, number = version.rpartition("/")
    if name and number.isdigit():
        return f"models:/{name}/{number}"
    ref = str(meta.get("encoder_ref") or "")
    if ref and Path(ref).is_dir():
        return ref
    raise ConfigError(
        f"cannot find the encoder this ranker was trained with ({version or 'unknown'}); "
        "register it, or keep its folder where it was"
    )
