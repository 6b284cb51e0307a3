"""Events under load: 20% `POST /v1/events`, 80% `/v1/recommend` at 8 clients, against recommend-only.

Usage::

    .venv/bin/python benchmarks/bench_events.py --encoder /tmp/mlw/seq_tl1 --data /tmp/mlw/data \\
        --work /tmp/events_bench [--clients 8] [--seconds 10] [--event-share 0.2] [--threads 1]

One real `recsys serve` (one uvicorn worker, no ranker, its event log fresh in WORK) on the
ml-latest-small index that `bench_service.ml_store` builds (or reuses) in WORK/ml-store, driven by the
same closed loop as `bench_service.py` (N clients, each sends its next request when the last returns,
`--seconds` measured after a 1 s warm-up). Cells, in this order, on the one server:

1. `recommend only`: `{"user_id", "k": 10}` for users whose nightly vector is fresh;
2. `mixed`: each request is an event with probability `--event-share` (one event: a pool user and a
   random catalog item, a new `event_id`), else a recommend for a pool user. Users who got an event
   are then served from their history (encoded per request, the nightly vector being stale), so the
   recommends of this cell mix cached and encoded users, as they would in production;
3. `recommend only, after`: cell 1 again, now with the events in the users' histories.

Reported per cell: req/s (all kinds), p50/p99 per kind, and the fsync cost: the log commit's
milliseconds the server returns in each events response (`commit_ms`, the WAL fsync), plus a
serial probe of 200 one-event commits on a log in WORK (same disk, no server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import time
import uuid
from pathlib import Path

import httpx
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import K, ml_store, percentile, request_pool

from recsys.serving.events import Event, EventLog
from recsys.serving.testing import ServerProcess


async def drive_mixed(url: str, pool: list[str], items: list[str], args: argparse.Namespace, share: float) -> dict:
    """Closed loop; latencies (ms) by kind of the requests finished inside the window, and commit times."""
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    latencies: dict[str, list[float]] = {"recommend": [], "events": []}
    commits: list[float] = []
    errors: list[str] = []
    encoded = [0]
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        warm_end = time.perf_counter() + 1.0
        end = warm_end + args.seconds

        async def worker(slot: int) -> None:
            rng = random.Random(slot)
            while time.perf_counter() < end:
                user = rng.choice(pool)
                if rng.random() < share:
                    kind = "events"
                    event = {"event_id": uuid.uuid4().hex, "user_id": user, "item_id": rng.choice(items)}
                    request = client.post("/v1/events", json={"events": [event]})
                else:
                    kind = "recommend"
                    request = client.post("/v1/recommend", json={"user_id": user, "k": K})
                started = time.perf_counter()
                try:
                    response = await request
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                done = time.perf_counter()
                if response.status_code != 200:
                    errors.append(f"{response.status_code}: {response.text[:120]}")
                    continue
                if warm_end <= done <= end:
                    latencies[kind].append((done - started) * 1000)
                    body = response.json()
                    if kind == "events":
                        commits.append(body["commit_ms"])
                    elif body["user_vector"] == "encoded":
                        encoded[0] += 1

        await asyncio.gather(*(worker(slot) for slot in range(args.clients)))
    return {"latencies": latencies, "commits": commits, "errors": errors, "encoded": encoded[0]}


def fsync_probe(path: Path, n: int = 200) -> list[float]:
    """Milliseconds of `n` serial one-event commits (synchronous=FULL) on a fresh log at `path`."""
    path.unlink(missing_ok=True)
    with EventLog(path) as log:
        return [log.append([Event(f"probe-{j}", "probe", "item", j)])[1] for j in range(n)]


def row(label: str, result: dict, seconds: float) -> dict:
    lat = result["latencies"]
    total = sum(len(values) for values in lat.values())
    out = {
        "cell": label,
        "req/s": round(total / seconds, 1),
        "recommend p50/p99 ms": f"{percentile(lat['recommend'], 50):.1f} / {percentile(lat['recommend'], 99):.1f}",
        "recommends encoded": f"{result['encoded']} of {len(lat['recommend'])}",
        "events": len(lat["events"]),
        "events p50/p99 ms": (
            f"{percentile(lat['events'], 50):.1f} / {percentile(lat['events'], 99):.1f}" if lat["events"] else "-"
        ),
        "commit p50/p99 ms": (
            f"{percentile(result['commits'], 50):.2f} / {percentile(result['commits'], 99):.2f}"
            if result["commits"]
            else "-"
        ),
        "errors": len(result["errors"]),
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--event-share", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    store, _ = ml_store(args.work, args.data, args.encoder, args.threads)
    pool = [user for user, _ in request_pool(args.data, store)]
    items = pl.read_parquet(args.data / "items.parquet", columns=["item_id"])["item_id"].to_list()
    log_path = args.work / "events.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{log_path}{suffix}").unlink(missing_ok=True)
    probe = fsync_probe(args.work / "probe.sqlite")
    server = ServerProcess(
        store,
        args.data,
        str(args.encoder),
        args.work / "server.log",
        poll_interval=5.0,
        threads=args.threads,
        extra_args=("--event-log", str(log_path)),
    ).start(timeout=900)
    rows = []
    with server:
        for label, share in (
            ("recommend only", 0.0),
            (f"mixed ({args.event_share:.0%} events)", args.event_share),
            ("recommend only, after", 0.0),
        ):
            result = asyncio.run(drive_mixed(server.url, pool, items, args, share))
            rows.append(row(label, result, args.seconds))
    print(
        f"\nserial fsync probe: {len(probe)} one-event commits, p50 {percentile(probe, 50):.2f} ms, "
        f"p99 {percentile(probe, 99):.2f} ms ({platform.machine()}, {platform.python_version()})"
    )
    header = list(rows[0])
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(r[h]) for h in header) + " |")


if __name__ == "__main__":
    main()
