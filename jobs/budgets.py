"""Training budgets for `recsys quickstart`, picked from the data's size so any catalog finishes in time.

The quickstart runs on 2 CPU cores as readily as on a server, so every step's cost is capped by a
budget that grows with the data and stops growing where more would not pay on a CPU:

- **LoRA steps**: one step per 500 interactions, at least 30 (the adapter must move off zero-shot),
  at most 300 (about 25 minutes on 2 cores at batch 32); the synthetic demo keeps 30 and MovieLens 200,
  the figures its published numbers were made with;
- **history tokens**: 64 below 50,000 interactions (short histories, a quick demo), 128 above (the
  text tower then reads the ten or so most recent titles);
- **ranker training cuts per user**: up to 8 earlier positions of each user's history become extra
  training queries, fewer for large user bases so the ranker sees at most ~200,000 queries;
- **sequence-tower epochs**: 15 on the synthetic demo, else the tower's default (early-stopped on
  validation), with a 15-minute wall-clock cap above 300,000 interactions.

`--steps` overrides the LoRA steps; everything else is printed so a user can see what ran.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from encoders.sequence_training import SequenceTrainConfig
from recsys.data.readiness import DataProfile

MIN_STEPS, MAX_STEPS, INTERACTIONS_PER_STEP = 30, 300, 500
LONG_HISTORY_FROM = 50_000
MAX_RANKER_QUERIES = 200_000
MAX_CUTS = 8
CAPPED_SEQUENCE_FROM = 300_000
SEQUENCE_CAP_SECONDS = 900.0


@dataclass(frozen=True)
class Budgets:
    """What each training step may spend (module doc)."""

    lora_steps: int
    history_tokens: int
    ranker_cuts: int
    sequence_epochs: int
    sequence_seconds: float | None = None

    def line(self, users: int | None = None) -> str:
        queries = f" (about {users * (self.ranker_cuts + 1):,} ranker training queries)" if users else ""
        cap = f", capped at {self.sequence_seconds / 60:.0f} min" if self.sequence_seconds else ""
        return (
            f"LoRA steps {self.lora_steps}, history tokens {self.history_tokens}, ranker cuts per user "
            f"{self.ranker_cuts}{queries}, sequence-tower epochs {self.sequence_epochs}{cap}"
        )

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def synthetic_budgets() -> Budgets:
    """The demo's budgets (`make demo` stays within about 12 minutes)."""
    return Budgets(lora_steps=30, history_tokens=64, ranker_cuts=MAX_CUTS, sequence_epochs=15)


def movielens_budgets() -> Budgets:
    """The budgets the MovieLens figures in BENCHMARKS.md were made with."""
    return Budgets(
        lora_steps=200, history_tokens=128, ranker_cuts=MAX_CUTS, sequence_epochs=SequenceTrainConfig().epochs
    )


def pick_budgets(stats: DataProfile) -> Budgets:
    """Budgets for a dataset of this size (rules in the module doc)."""
    steps = min(MAX_STEPS, max(MIN_STEPS, round(stats.interactions / INTERACTIONS_PER_STEP)))
    tokens = 128 if stats.interactions >= LONG_HISTORY_FROM else 64
    cuts = max(1, min(MAX_CUTS, MAX_RANKER_QUERIES // max(stats.users, 1) - 1))
    capped = SEQUENCE_CAP_SECONDS if stats.interactions >= CAPPED_SEQUENCE_FROM else None
    return Budgets(
        lora_steps=steps,
        history_tokens=tokens,
        ranker_cuts=cuts,
        sequence_epochs=SequenceTrainConfig().epochs,
        sequence_seconds=capped,
    )
