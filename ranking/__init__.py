"""Second stage (docs/architecture.md): candidates, point-in-time features, LightGBM LambdaRank, explanations.

Builds on the ground floor (`recsys.data`, `recsys.metrics`, `recsys.index`) and never imports
`encoders`: the interest score arrives with the candidates, so rankers stay independent of the tower.

Modules: `behavior` (time-indexed lookups), `context` (the log and item metadata), `candidates`,
`features` (defined once for training and serving), `training`, `model` (`RankerModel`),
`registry` (`load_ranker`), `protocol` (the contract with the facade and the API).
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_ranker"]


def __getattr__(name: str) -> Any:
    """`ranking.load_ranker` without importing the model code when `ranking` alone is imported."""
    if name == "load_ranker":
        from ranking.registry import load_ranker

        return load_ranker
    raise AttributeError(f"module 'ranking' has no attribute {name!r}")
