"""Build a small real serving world in seconds: for tests and benchmarks (like `encoders.testing`).

A synthetic dataset, encoders trained for one step over a tiny random BERT
(`encoders.testing.make_tiny_bert`) and a nightly store published by the real job. Nothing here is a
stand-in: every part is the production code path at a tiny size. `recsys.serving.testing` runs the
server over such a world (it lives there because the service must not import the jobs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from encoders.sequence import SequenceConfig
from encoders.sequence_training import SequenceTrainConfig
from encoders.testing import make_tiny_bert
from encoders.text_training import TextTrainConfig
from jobs.nightly_embed import EmbedConfig, EmbedReport, run_nightly
from jobs.train_encoder import train_encoder
from recsys.data.synthetic import generate
from recsys.splits import leave_last_out

if TYPE_CHECKING:
    from recsys.data.dataset import Dataset

ACTIVE_DAYS = 400.0


@dataclass
class World:
    """Folders of one tiny serving world (see the module doc)."""

    root: Path
    data: Path
    dataset: Dataset
    bert: Path
    encoders: dict[str, Path]
    store: Path
    report: EmbedReport


def train_tiny_encoder(dataset: Dataset, out: Path, bert: Path, tower: str = "text") -> Path:
    """A `train_encoder` run over the tiny BERT: frozen text tower, or one LoRA step plus the user tower."""
    method = "lora" if tower == "sequence" else "frozen"
    config = TextTrainConfig(
        method=method,
        max_steps=1,
        batch_size=8,
        eval_every=1,
        history_tokens=48,
        item_tokens=16,
        checkpoint_every=1,
        threads=1,
    )
    train_encoder(
        dataset,
        leave_last_out(dataset.interactions),
        out,
        tower=tower,
        base_model=str(bert),
        text_config=config,
        sequence_config=SequenceConfig(dim=16, max_len=20, layers=1),
        sequence_train_config=SequenceTrainConfig(epochs=2, eval_every=1, threads=1),
        progress=False,
    )
    return out


def embed_config(**overrides: Any) -> EmbedConfig:
    """The nightly settings tests use: one thread, no MLflow, no progress bars."""
    values: dict[str, Any] = {"log": False, "progress": False, "threads": 1, "active_days": ACTIVE_DAYS}
    values.update(overrides)
    return EmbedConfig(**values)


def build_world(
    root: str | Path,
    *,
    towers: tuple[str, ...] = ("text",),
    n_interactions: int = 1500,
    n_users: int = 60,
    n_items: int = 120,
    seed: int = 3,
) -> World:
    """Dataset + tiny encoders (one a tower) + a nightly store published with the first tower's encoder."""
    torch.set_num_threads(1)
    root = Path(root)
    dataset = generate(n_interactions=n_interactions, n_users=n_users, n_items=n_items, seed=seed)
    dataset.save(root / "data")
    bert = make_tiny_bert(root / "bert", seed=0)
    encoders = {tower: train_tiny_encoder(dataset, root / f"enc-{tower}", bert, tower) for tower in towers}
    report = run_nightly(root / "data", encoders[towers[0]], root / "store", embed_config())
    return World(root, root / "data", dataset, bert, encoders, root / "store", report)
