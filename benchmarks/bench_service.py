"""Online service latency and throughput: the real `recsys serve` on loopback, driven by asyncio + httpx.

Usage::

    .venv/bin/python benchmarks/bench_service.py --encoder /tmp/mlw/lora_text_300 --data /tmp/mlw/data \\
        --work /tmp/svc_bench --out /tmp/service_bench.md [--seconds 6] [--concurrency 1,8,32] \\
        [--items-1m 1000000] [--kinds-1m flat] [--worlds ml,synthetic] [--threads 1] \\
        [--ranker /tmp/mlw/ranker [--scenarios none] [--ranked-scenarios cached] [--explain-concurrency 1]]

Only the ranked rows of ml-latest-small (`--worlds ml --scenarios none --ranker ...`) take about a
minute: one server start plus 7 s a cell.

Worlds (each served by its own `recsys serve` subprocess, one uvicorn worker, no ranker, no API key):

- `ml`: ml-latest-small (the converted dataset `--data`) with an index built by `recsys embed` from
  the encoder folder `--encoder` (real all-MiniLM-L6-v2 + LoRA, text tower) into `WORK/ml-store`.
- `synthetic-1m`: `--items-1m` items (cheap synthetic titles, 20 categories) and 20,000 users with
  12 interactions each; the index holds random unit 384-d vectors (`VectorIndex.build` with
  `--kinds-1m`), published with cached user vectors whose `last_ts` matches the log, under the
  same encoder's version so the service accepts it. Built once into `WORK/synth-*` and reused.

Scenarios per world and concurrency (closed loop: N clients, each sends its next request when the
last one returns, for `--seconds` after a one-second warm-up):

- `cached`: `{"user_id": <a user with a fresh nightly vector>, "k": 10}` (no encoding);
- `history`: `{"item_ids": <that user's 20 most recent items>, "k": 10}` (the user tower encodes the
  history text on the fly).

With `--ranker`, ml-latest-small is served once more with that ranker for `--ranked-scenarios`
(`cached + ranker`, ...), and `--explain-concurrency` adds `+ explain` rows (`"explain": true`:
SHAP contributions and a `because_of` item per result) at those client counts. The server must come
up in ranked mode (a ranker trained on another encoder is refused), else the benchmark stops.

Recorded: requests completed inside the window per second, the p50/p99 latency of those requests
(client side), errors, and the server's own mean stage times (encode, search, rank, total) from
`/metrics`. The client runs in this process on the same machine, so on a
small box it competes with the server for the cores; the table says which machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
from prometheus_client.parser import text_string_to_metric_families

from recsys.data.dataset import Dataset
from recsys.data.order import chronological
from recsys.embedding_store import local_encoder_version, read_user_vectors, write_user_vectors
from recsys.index import IndexStore, VectorIndex
from recsys.serving.config import ServingConfig
from recsys.serving.testing import ServerProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HISTORY_ITEMS = 20
K = 10
N_USERS_1M = 20_000
EVENTS_1M = 12
DIM_1M = 384


# ------------------------------------------------------------------------------------ worlds
def ml_store(work: Path, data: Path, encoder: Path, threads: int) -> tuple[Path, float | None]:
    """`recsys embed` into WORK/ml-store unless it already holds an index of this encoder."""
    store = work / "ml-store"
    index = IndexStore(store / "index")
    version = local_encoder_version(encoder)
    current = index.current_version()
    if current and index.metadata(current)["encoder_version"] == version:
        return store, None
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys.cli",
            "embed",
            "--data",
            str(data),
            "--encoder",
            str(encoder),
            "--store",
            str(store),
            "--no-log",
            "--no-progress",
            "--threads",
            str(threads),
            "--active-days",
            "100000",
        ],
        check=True,
    )  # every user gets a nightly vector
    return store, time.perf_counter() - started


def synthetic_world(work: Path, encoder: Path, n_items: int, kind: str, seed: int = 0) -> tuple[Path, Path, float]:
    """Dataset + published random-vector index for `n_items` items (built once, reused)."""
    data, store = work / f"synth-{n_items}-data", work / f"synth-{n_items}-{kind}-store"
    index_store = IndexStore(store / "index")
    version = local_encoder_version(encoder)
    if index_store.current_version() and (data / "dataset.json").is_file():
        return data, store, 0.0
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    words = [
        "silent",
        "river",
        "golden",
        "night",
        "city",
        "star",
        "ocean",
        "garden",
        "winter",
        "dream",
        "road",
        "house",
        "wild",
        "blue",
        "secret",
        "last",
        "iron",
        "paper",
        "glass",
        "summer",
    ]
    categories = [f"category-{c:02d}" for c in range(20)]
    item_ids = [f"s{i:07d}" for i in range(n_items)]
    if not (data / "dataset.json").is_file():
        first, second = rng.integers(0, len(words), n_items), rng.integers(0, len(words), n_items)
        items = pl.DataFrame(
            {
                "item_id": item_ids,
                "title": [f"The {words[a]} {words[b]} {i}" for i, (a, b) in enumerate(zip(first, second, strict=True))],
                "category": [categories[c] for c in rng.integers(0, len(categories), n_items)],
            }
        )
        users = np.repeat(np.arange(N_USERS_1M), EVENTS_1M)
        picks = np.minimum(rng.zipf(1.3, users.size) - 1, n_items - 1)  # a popular head, a long tail
        base = np.datetime64("2024-01-01T00:00:00", "us")
        stamps = base + rng.integers(0, 60 * 86_400 * 1_000_000, users.size).astype("timedelta64[us]")
        interactions = pl.DataFrame(
            {
                "user_id": [f"u{u:06d}" for u in users],
                "item_id": [item_ids[p] for p in picks],
                "ts": pl.Series(stamps).dt.replace_time_zone("UTC"),
            }
        )
        Dataset(items, interactions, name=f"synthetic-{n_items}", text_template="{title} | {category}").save(data)
    interactions = pl.read_parquet(data / "interactions.parquet")
    last = interactions.group_by("user_id").agg(pl.col("ts").max().alias("last_ts")).sort("user_id")
    vectors = rng.standard_normal((n_items, DIM_1M), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex.build(item_ids, vectors, {"kind": kind}, encoder_version=version)
    del vectors
    user_vectors = rng.standard_normal((last.height, DIM_1M), dtype=np.float32)
    user_vectors /= np.linalg.norm(user_vectors, axis=1, keepdims=True)
    info = write_user_vectors(
        store / "index",
        last["user_id"].to_list(),
        user_vectors,
        encoder_version=version,
        as_of=interactions["ts"].max(),
        history_len=[EVENTS_1M] * last.height,
        last_ts=last["last_ts"].to_list(),
    )
    index_store.publish(index, {"user_vectors": info, "dataset": f"synthetic-{n_items}"}, encoder_version=version)
    return data, store, time.perf_counter() - started


def request_pool(data: Path, store: Path, n: int = 400, seed: int = 0) -> list[tuple[str, list[str]]]:
    """(user id, 20 most recent item ids newest first) for users whose nightly vector is fresh."""
    index = IndexStore(store / "index")
    cached = read_user_vectors(index.root, index.metadata(index.current_version()))
    inter = pl.read_parquet(data / "interactions.parquet", columns=["user_id", "item_id", "ts"])
    newest = inter.group_by("user_id").agg(pl.col("ts").max().alias("newest"))
    fresh = (
        cached.select("user_id", "last_ts")
        .join(newest, on="user_id")
        .filter(pl.col("last_ts") == pl.col("newest"))["user_id"]
        .to_list()
    )
    chosen = random.Random(seed).sample(fresh, min(n, len(fresh)))
    histories = (
        inter.filter(pl.col("user_id").is_in(chosen))
        .pipe(chronological, descending=True)
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("item_id").head(HISTORY_ITEMS))
    )
    by_user = dict(zip(histories["user_id"].to_list(), histories["item_id"].to_list(), strict=True))
    return [(user, by_user[user]) for user in chosen]


# ------------------------------------------------------------------------------------ driving
async def drive(url: str, bodies: list[dict], concurrency: int, seconds: float) -> dict:
    """Closed loop with `concurrency` clients; returns latencies (ms) of requests finished in the window."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        warm_end = time.perf_counter() + 1.0
        end = warm_end + seconds

        async def worker(slot: int) -> None:
            turn = slot
            while True:
                now = time.perf_counter()
                if now >= end:
                    return
                body = bodies[turn % len(bodies)]
                turn += concurrency
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/recommend", json=body)
                    ok = response.status_code == 200
                    if not ok:
                        errors.append(f"{response.status_code}: {response.text[:120]}")
                except httpx.HTTPError as exc:
                    ok = False
                    errors.append(repr(exc))
                done = time.perf_counter()
                if ok and warm_end <= done <= end:  # completions inside the window (slow cells: few)
                    latencies.append((done - started) * 1000)

        await asyncio.gather(*(worker(slot) for slot in range(concurrency)))
    return {"latencies": latencies, "errors": errors, "seconds": seconds}


def stage_means(before: dict, after: dict) -> dict[str, float]:
    """Mean server-side stage time (ms) between two /metrics scrapes."""
    out = {}
    for stage in ("encode", "search", "rank", "total"):
        key_sum = ("recsys_stage_duration_seconds_sum", stage)
        key_count = ("recsys_stage_duration_seconds_count", stage)
        count = after.get(key_count, 0.0) - before.get(key_count, 0.0)
        if count:
            out[stage] = round((after.get(key_sum, 0.0) - before.get(key_sum, 0.0)) / count * 1000, 2)
    return out


def scrape(url: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name.startswith("recsys_stage_duration_seconds_"):
                out[(sample.name, sample.labels.get("stage"))] = sample.value
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


SCENARIOS = ("cached", "history")
WORLDS = ("ml", "synthetic")
CANDIDATES = 200  # `recsys serve --candidates` default: FAISS candidates handed to the ranker


def _names(allowed: tuple[str, ...]):
    """argparse type: a comma-separated subset of `allowed` ('none' or '' for none)."""

    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip() and part.strip().lower() != "none"]
        unknown = [name for name in names if name not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
        return names

    return parse


def run_world(
    name: str,
    store: Path,
    data: Path,
    encoder: Path,
    args: argparse.Namespace,
    ranker: str = "none",
    scenarios_wanted: tuple[str, ...] = SCENARIOS,
    explain_concurrency: tuple[int, ...] = (),
) -> list[dict]:
    """One server for `name`; a row per (scenario, concurrency), plus `+ explain` rows at `explain_concurrency`."""
    pool = request_pool(data, store)
    bodies_of = {
        "cached": [{"user_id": user, "k": K} for user, _ in pool],
        "history": [{"item_ids": items, "k": K} for _, items in pool],
    }
    suffix = "" if ranker == "none" else " + ranker"
    cells = [
        (f"{scenario}{suffix}", bodies_of[scenario], concurrency)
        for scenario in scenarios_wanted
        for concurrency in args.concurrency
    ]
    cells += [
        (f"{scenario}{suffix} + explain", [{**body, "explain": True} for body in bodies_of[scenario]], concurrency)
        for scenario in scenarios_wanted
        for concurrency in explain_concurrency
    ]
    rows = []
    log = args.work / f"server-{name}{'-ranked' if suffix else ''}.log"
    started = time.perf_counter()
    server = ServerProcess(
        store, data, str(encoder), log, ranker=ranker, poll_interval=5.0, threads=args.threads
    ).start(timeout=900)
    with server:
        ready_s = time.perf_counter() - started
        status = httpx.get(f"{server.url}/readyz", timeout=30).json()
        if ranker != "none" and status["mode"] != "ranked":
            raise SystemExit(
                f"the server did not serve ranker {ranker}: {status['ranker_note']} (refused: {status['refused']})"
            )
        for label, bodies, concurrency in cells:
            before = scrape(server.url)
            result = asyncio.run(drive(server.url, bodies, concurrency, args.seconds))
            after = scrape(server.url)
            lat = result["latencies"]
            row = {
                "world": name,
                "scenario": label,
                "concurrency": concurrency,
                "requests": len(lat),
                "p50_ms": round(percentile(lat, 50), 1),
                "p99_ms": round(percentile(lat, 99), 1),
                "rps": round(len(lat) / result["seconds"], 1),
                "errors": len(result["errors"]),
                "server_ms": stage_means(before, after),
                "index": f"{status['index_kind']} {status['items']:,}",
                "ready_s": round(ready_s, 1),
                "ranker": status["ranker"],
            }
            if result["errors"]:
                row["first_error"] = result["errors"][0]
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------ report
def remember_builds(work: Path, builds: dict) -> dict:
    """Build times of the scratch stores, kept in WORK/builds.json so a rerun that reuses them still reports them."""
    path = work / "builds.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    known.update(builds)
    path.write_text(json.dumps(known, indent=2))
    return known


def markdown(rows: list[dict], args: argparse.Namespace, builds: dict, command: str, load: tuple) -> str:
    flat_note = (
        ""
        if "synthetic" not in args.worlds or "flat" not in args.kinds_1m
        else " The synthetic index is exact (`flat`): `VectorIndex.build`'s `auto` would pick IVF-Flat "
        "(nlist 4,000) at 1M items, whose k-means alone measured ~12 s an iteration on this box "
        "(~5 min for 25 iterations), beyond this benchmark's budget; and on random vectors (no cluster "
        "structure) a calibrated IVF has to probe most lists anyway."
    )

    served = sorted({row["ranker"] for row in rows if row.get("ranker")})
    ranker_note = (
        f" Ranked rows: the LightGBM ranker folder `{args.ranker}` (served as {', '.join(served)}), "
        f"re-ranking the top {CANDIDATES} FAISS candidates plus its co-visitation and popular "
        f"fallbacks, at most {ServingConfig().rank_concurrency} ranker calls at a time "
        "(`ServingConfig.rank_concurrency`)."
        if served
        else ""
    )
    lines = [
        "## Online service (`recsys serve`): latency and throughput",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU, "
        f"Python {platform.python_version()}; one uvicorn worker (h11), torch threads {args.threads}; "
        "client (asyncio + httpx, closed loop) on the same box over loopback; no ranker (retrieval order) "
        "unless the scenario says `+ ranker`, "
        f"k={K}; {args.seconds:g} s measured per cell after a 1 s warm-up. The box was shared with other jobs "
        f"(load average {load[0]:.1f} at the start, {load[1]:.1f} at the end).{flat_note}{ranker_note}",
        "",
        "| world | index | scenario | clients | req/s | p50 ms | p99 ms "
        "| server mean ms (encode / search / rank / total) | errors |",
        "|---|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        stages = row["server_ms"]
        server = " / ".join(f"{stages[s]:.1f}" if s in stages else "-" for s in ("encode", "search", "rank", "total"))
        lines.append(
            f"| {row['world']} | {row['index']} | {row['scenario']} | {row['concurrency']} "
            f"| {row['rps']:,.1f} | {row['p50_ms']:,.1f} | {row['p99_ms']:,.1f} | {server} "
            f"| {row['errors']} |"
        )
    lines += [
        "",
        "Scenarios: `cached` = `{user_id}` of a user whose nightly vector is fresh (no encoding); "
        f"`history` = `{{item_ids}}` with that user's {HISTORY_ITEMS} most recent items, encoded by the text "
        "user tower on the fly. Concurrent requests are batched into one encoder forward pass and one FAISS "
        'call. `+ explain`: the same requests with `"explain": true` (the ranker\'s top SHAP contributions '
        "and a `because_of` history item per result).",
        "",
    ]
    if builds:
        lines.append("Setup (not timed above): " + "; ".join(f"{k} {v}" for k, v in builds.items()) + ".")
        lines.append("")
    lines += ["Command:", "", "```bash", command, "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", type=Path, required=True, help="Encoder bundle or training run folder.")
    parser.add_argument("--data", type=Path, required=True, help="Converted ml-latest-small dataset folder.")
    parser.add_argument("--work", type=Path, default=Path("/tmp/svc_bench"), help="Scratch folder (outside the repo).")
    parser.add_argument("--out", type=Path, default=None, help="Write the markdown section here.")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--items-1m", type=int, default=1_000_000)
    parser.add_argument(
        "--kinds-1m",
        type=lambda s: s.split(","),
        default=["flat"],
        help="Index kinds for the synthetic world (auto, flat, ivf_flat, ...).",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server.")
    parser.add_argument(
        "--ranker",
        type=Path,
        default=None,
        help="A ranker folder (`recsys train-ranker --out`) trained with --encoder: adds ranked rows.",
    )
    parser.add_argument(
        "--worlds",
        type=_names(WORLDS),
        default=list(WORLDS),
        help=f"Worlds to run, comma-separated: {', '.join(WORLDS)}.",
    )
    parser.add_argument(
        "--scenarios",
        type=_names(SCENARIOS),
        default=list(SCENARIOS),
        help="Retrieval-order scenarios (no ranker), comma-separated, or 'none'.",
    )
    parser.add_argument(
        "--ranked-scenarios",
        type=_names(SCENARIOS),
        default=["cached"],
        help="Scenarios served with --ranker (ml-latest-small only), comma-separated, or 'none'.",
    )
    parser.add_argument(
        "--explain-concurrency",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        default=[],
        help="Client counts for `+ explain` rows of the ranked scenarios (e.g. 1).",
    )
    parser.add_argument("--skip-ml", action="store_true", help="Same as leaving ml out of --worlds.")
    parser.add_argument("--skip-1m", action="store_true", help="Same as leaving synthetic out of --worlds.")
    parser.add_argument("--clean", action="store_true", help="Rebuild the scratch stores.")
    args = parser.parse_args()
    skipped = {"ml"} if args.skip_ml else set()
    skipped |= {"synthetic"} if args.skip_1m else set()
    args.worlds = [world for world in args.worlds if world not in skipped]
    if args.clean:
        shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    rows, builds = [], {}
    load_start = os.getloadavg()[0]
    if "ml" in args.worlds:
        store, seconds = ml_store(args.work, args.data, args.encoder, max(1, args.threads))
        if seconds is not None:
            builds["ml index (recsys embed)"] = f"{seconds:.0f} s"
        if args.scenarios:
            rows += run_world(
                "ml-latest-small", store, args.data, args.encoder, args, scenarios_wanted=tuple(args.scenarios)
            )
        if args.ranker and args.ranked_scenarios:
            rows += run_world(
                "ml-latest-small",
                store,
                args.data,
                args.encoder,
                args,
                ranker=str(args.ranker),
                scenarios_wanted=tuple(args.ranked_scenarios),
                explain_concurrency=tuple(args.explain_concurrency),
            )
    if "synthetic" in args.worlds and args.scenarios:
        for kind in args.kinds_1m:
            data, store, seconds = synthetic_world(args.work, args.encoder, args.items_1m, kind)
            if seconds:
                builds[f"synthetic {args.items_1m:,} {kind} build"] = f"{seconds:.0f} s"
            size = f"{args.items_1m // 1_000_000}M" if args.items_1m % 1_000_000 == 0 else f"{args.items_1m:,}"
            rows += run_world(
                f"synthetic-{size}", store, data, args.encoder, args, scenarios_wanted=tuple(args.scenarios)
            )
    command = " ".join([".venv/bin/python", "benchmarks/bench_service.py", *sys.argv[1:]])
    prefixes = tuple(prefix for world, prefix in (("ml", "ml "), ("synthetic", "synthetic ")) if world in args.worlds)
    shown = {k: v for k, v in remember_builds(args.work, builds).items() if k.startswith(prefixes)}
    text = markdown(rows, args, shown, command, (load_start, os.getloadavg()[0]))
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
