"""Cold items, measured: can a tower recommend items it never saw in training?

A random fraction F of the catalog is made cold: every interaction with those items is removed
from training and validation (a user whose validation target is cold loses that target), and the
test targets stay as they are. The test users whose target is a cold item are the ones scored:
HR@50 and NDCG@10 over the full catalog (cold items included), history excluded (the leave-last-out protocol).

Each `--system` is a `recsys train-encoder` run on that reduced split, `--method frozen` (the
zero-shot MiniLM item text) unless given otherwise:
- `hybrid`: sequence tower, text projection + id embeddings of warm items (cold items: text alone);
- `id`: the same tower with id embeddings only (SASRec): cold items have no vector, 0 by construction;
- `text`: the same tower with text projections only.
MostPop is scored on the same users (its lists never hold a cold item either).

    python benchmarks/bench_cold_items.py --movielens ../shared/data/movielens/ml-latest-small \\
        --cold-items 0.2 --system hybrid --system id --work /tmp/cold --out /tmp/cold/cold.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl

from encoders.sequence import SequenceConfig
from encoders.sequence_training import SequenceTrainConfig
from encoders.text_training import TextTrainConfig
from jobs.train_encoder import train_encoder
from recsys.baselines import make_baseline
from recsys.data.movielens import load_movielens
from recsys.metrics import per_user_metrics
from recsys.splits import Split, leave_last_out


def cold_split(split: Split, fraction: float, seed: int) -> tuple[Split, set[str]]:
    """The split with a random `fraction` of the catalog's items removed from train and validation."""
    catalog = split.catalog().to_list()
    rng = np.random.default_rng(seed)
    cold = set(rng.choice(catalog, size=round(fraction * len(catalog)), replace=False).tolist())
    warm_only = ~pl.col("item_id").is_in(list(cold))
    reduced = Split(
        split.train.filter(warm_only),
        split.valid.filter(warm_only),
        split.test,
        split.kind,
        {**split.params, "cold_items": fraction, "cold_seed": seed},
    )
    return reduced, cold


def scores(topk: pl.DataFrame, targets: pl.DataFrame) -> dict[str, float]:
    per_user = per_user_metrics(topk, targets, ks=(10, 50))
    return {
        "users": per_user.height,
        "hr@50": float(per_user["hr@50"].mean()),
        "ndcg@10": float(per_user["ndcg@10"].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--movielens", type=Path, required=True, help="ml-latest-small folder")
    parser.add_argument("--cold-items", type=float, default=0.2, help="fraction of the catalog made cold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--system", action="append", choices=("hybrid", "id", "text"))
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=SequenceTrainConfig().epochs, help="sequence tower schedule")
    parser.add_argument("--no-refit", action="store_true", help="score test with the early-stopped tower")
    parser.add_argument("--id-dropout", type=float, default=0.0, help="hybrid items: id embeddings dropped in training")
    parser.add_argument(
        "--text-loss",
        type=float,
        default=SequenceTrainConfig().text_loss,
        help="hybrid items: weight of the text-only softmax",
    )
    parser.add_argument("--label", default="", help="suffix of the work folder and row name")
    args = parser.parse_args()
    dataset = load_movielens(args.movielens)
    full = leave_last_out(dataset.interactions)
    split, cold = cold_split(full, args.cold_items, args.seed)
    cold_targets = split.test.filter(pl.col("item_id").is_in(list(cold))).select("user_id", "item_id")
    print(f"{len(cold)} cold items; {cold_targets.height} test users have a cold target")
    rows = {}
    mostpop = make_baseline("mostpop").fit(split.history("test"))
    rows["MostPop"] = scores(
        mostpop.recommend(
            cold_targets["user_id"].to_list(), k=50, exclude=split.history("test"), catalog=split.catalog()
        ),
        cold_targets,
    )
    for system in args.system or ["hybrid", "id"]:
        started = time.perf_counter()
        name = f"{system}{args.label}"
        run = train_encoder(
            dataset,
            split,
            args.work / name,
            tower="sequence",
            text_config=TextTrainConfig(method="frozen", threads=args.threads),
            sequence_config=SequenceConfig(items=system, id_dropout=args.id_dropout),
            sequence_train_config=SequenceTrainConfig(
                epochs=args.epochs, refit=not args.no_refit, threads=args.threads, text_loss=args.text_loss
            ),
        )
        topk = pl.read_parquet(args.work / name / "topk_test.parquet")
        rows[f"sequence ({name})"] = {
            **scores(topk, cold_targets),
            "all users ndcg@10": run.test["ndcg@10"],
            "valid ndcg@10": run.valid["ndcg@10"],
            "minutes": round((time.perf_counter() - started) / 60, 1),
        }
        print(name, rows[f"sequence ({name})"], flush=True)
    lines = [
        f"Cold items: {len(cold)} of {full.catalog().len()} ({args.cold_items:.0%}, seed {args.seed}); "
        f"{cold_targets.height} test users whose target is cold.",
        "",
        "| system | HR@50 (cold targets) | NDCG@10 (cold targets) | NDCG@10 (all users) |",
        "|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['hr@50']:.4f} | {row['ndcg@10']:.4f} | {row.get('all users ndcg@10', float('nan')):.4f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
