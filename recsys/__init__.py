"""recsys: a text-first recommender plugin.

The package root stays import-light on purpose: `recsys --help` and the API's start must not pay
for torch, mlflow or faiss. Heavy pieces are imported inside the functions that need them.
"""

__version__ = "0.1.0"
