"""recsys: a text-first recommender plugin.

The package root stays import-light on purpose: `recsys --help` and the API's start must not pay
for torch, mlflow or faiss. Heavy pieces are imported inside the functions that need them.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`recsys.Recommender` (and its result types), imported on first use so `import recsys` stays light."""
    if name in ("Recommender", "ServingConfig", "RecommendResult", "Recommendation"):
        from recsys import serving

        return getattr(serving, name)
    raise AttributeError(f"module 'recsys' has no attribute {name!r}")
