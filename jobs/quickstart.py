"""`recsys quickstart`: the main job end to end, from data to served recommendations, resumable.

Steps (each skipped when its output is already complete, so a rerun only re-serves):

 1. data       synthetic by default, MovieLens (`--dataset movielens-small --path ...`), or any canonical
               dataset folder from `recsys data convert` (`--data DIR`), checked for thin data before
               any training (`recsys.data.readiness`) -> work/data; budgets picked from its size
               (`jobs.budgets`) and printed
 2. split      temporal leave-last-out -> work/split
 3. baselines  MostPop + ItemKNN test lists and metrics -> work/baselines
 4. encoder    LoRA fine-tuning of all-MiniLM-L6-v2 on a CPU budget, then both user towers (text and
               the sequence tower over the tuned item vectors); the one with the higher validation
               NDCG@10 is kept (choice and scores printed) -> work/encoder, registered @champion
 5. frozen     the zero-shot encoder, for the A/B -> work/frozen
 6. nightly    item + active-user embeddings, FAISS index published atomically -> work/store
 7. ranker     LightGBM LambdaRank over encoder + co-visitation + popular candidates -> work/ranker, @champion
 8. A/B        fine-tuned vs frozen, and encoder vs encoder + ranker -> work/ab-*/report.md
 9. lists      every system's test top-50 (`user_id, item_id, rank`) -> work/lists/*.parquet
10. serve      `recsys serve` on a free loopback port; sample requests over HTTP; a few users' histories
               printed beside their recommendations, with titles; one user's click posted as an event
               (`POST /v1/events`) and their recommendations before and after it; the server is stopped
11. summary    quality table, where everything is, and the MLflow UI command

All state lives under `--work` (MLflow's embedded SQLite store included, unless MLFLOW_TRACKING_URI
points elsewhere). Registration is recorded in `<step>/registered.json`, so reruns do not create new
versions; `--fresh` starts over.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from encoders.sequence_training import SequenceTrainConfig
from jobs.budgets import Budgets, movielens_budgets, pick_budgets, synthetic_budgets
from recsys.data.readiness import DataProfile, check_trainable
from recsys.errors import ConfigError

SYNTHETIC_INTERACTIONS = 20_000
DATASETS = ("synthetic", "movielens-small", "folder")
CHOICES_FILE = "quickstart.json"
LIST_K = 50


@dataclass
class QuickstartConfig:
    work: Path = Path(".recsys/quickstart")
    dataset: str = "synthetic"  # or movielens-small, or folder (with `data`)
    path: Path | None = None  # MovieLens folder
    steps: int | None = None  # LoRA steps (default: picked from the data, `jobs.budgets`)
    data: Path | None = None  # a canonical dataset folder (`recsys data convert`)
    serve: bool = True
    users_to_show: int = 3
    threads: int | None = None
    fresh: bool = False
    echo: Callable[[str], None] = print
    base_model: str | None = None  # the encoder's base (default MiniLM); tests pass a tiny BERT
    _budgets: Budgets | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.data is not None:
            if self.dataset not in ("synthetic", "folder"):
                raise ConfigError("pass either --dataset or --data, not both")
            self.dataset = "folder"
        elif self.dataset == "folder":
            raise ConfigError("--data DIR (a folder from `recsys data convert`) is required for a dataset folder")

    def budgets(self) -> Budgets:
        """Budgets for this dataset (`jobs.budgets`), with `--steps` on top; read from the data once."""
        if self._budgets is None:
            if self.dataset == "synthetic":
                picked = synthetic_budgets()
            elif self.dataset == "movielens-small":
                picked = movielens_budgets()
            else:
                picked = pick_budgets(_source_profile(self))
            self._budgets = picked if self.steps is None else replace(picked, lora_steps=self.steps)
        return self._budgets

    def lora_steps(self) -> int:
        return self.budgets().lora_steps

    def sequence_epochs(self) -> int:
        return self.budgets().sequence_epochs


@dataclass
class StepLog:
    timings: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def run_quickstart(config: QuickstartConfig) -> dict[str, Any]:
    """Run every step (module doc); returns the summary (also written to work/summary.json)."""
    work = config.work.resolve()
    if config.dataset not in DATASETS:
        raise ConfigError(f"unknown --dataset {config.dataset!r}: synthetic or movielens-small (or --data DIR)")
    budgets = config.budgets()  # a folder's thin-data checks run here, before anything is written
    if config.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    _check_choices(work, config)
    os.environ.setdefault("RECSYS_HOME", str(work / "home"))
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    log = StepLog()
    echo = config.echo
    echo(f"budgets: {budgets.line()}")
    paths = {
        name: work / name for name in ("data", "split", "baselines", "encoder", "frozen", "store", "ranker", "lists")
    }
    started_all = time.perf_counter()

    def step(name: str, done: bool, action: Callable[[], None]) -> None:
        if done:
            log.skipped.append(name)
            echo(f"[{name}] already done, reused")
            return
        echo(f"[{name}] ...")
        started = time.perf_counter()
        action()
        log.timings[name] = round(time.perf_counter() - started, 1)
        echo(f"[{name}] done in {log.timings[name]:.1f} s")

    step("data", (paths["data"] / "dataset.json").is_file(), lambda: _data(config, paths["data"]))
    step("split", (paths["split"] / "split.json").is_file(), lambda: _split(paths["data"], paths["split"]))
    step(
        "baselines",
        (paths["baselines"] / "metrics.json").is_file(),
        lambda: _baselines(paths["split"], paths["baselines"]),
    )
    step(
        "encoder",
        _registered(paths["encoder"]),
        lambda: _encoder(paths["encoder"], paths, config, "lora", config.lora_steps(), register=True),
    )
    step(
        "frozen",
        (paths["frozen"] / "run.json").is_file(),
        lambda: _encoder(paths["frozen"], paths, config, "frozen", 0, register=False),
    )
    step("nightly", _nightly_current(paths["store"], paths["encoder"]), lambda: _nightly(paths))
    step("ranker", _registered(paths["ranker"]), lambda: _ranker(paths, budgets))
    step("ab", (work / "ab-encoder-vs-ranker" / "report.json").is_file(), lambda: _ab(paths, work))
    step("lists", (paths["lists"] / "ranker.parquet").is_file(), lambda: _lists(paths))
    served: dict[str, Any] = {}
    if config.serve:
        echo("[serve] starting the API on loopback ...")
        started = time.perf_counter()
        served = serve_and_sample(paths, config)
        log.timings["serve"] = round(time.perf_counter() - started, 1)
    summary = _summary(paths, work, log, served, time.perf_counter() - started_all)
    (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    _print_summary(summary, echo)
    return summary


# ----------------------------------------------------------------------------------- steps
def _source_profile(config: QuickstartConfig) -> DataProfile:
    """Load a `--data` folder and check it is enough to train on (`recsys.data.readiness`)."""
    from recsys.data.dataset import Dataset

    assert config.data is not None  # only called for a folder
    stats = check_trainable(Dataset.load(config.data), str(config.data))
    config.echo(f"data: {stats.line()}")
    return stats


def _data(config: QuickstartConfig, out: Path) -> None:
    if config.dataset == "synthetic":
        from recsys.data.synthetic import generate

        dataset = generate(n_interactions=SYNTHETIC_INTERACTIONS, seed=0)
    elif config.dataset == "folder":
        from recsys.data.dataset import Dataset

        assert config.data is not None  # checked by QuickstartConfig
        dataset = Dataset.load(config.data)
    else:
        if config.path is None:
            raise ConfigError(
                "--dataset movielens-small needs --path (the ml-latest-small folder; "
                "`recsys data fetch movielens-small` downloads it)"
            )
        from jobs.data_jobs import load_source

        dataset = load_source("movielens", path=config.path)
    check_trainable(dataset, str(config.data or config.path or "synthetic"))
    _atomic_dir(out, dataset.save)


def _split(data: Path, out: Path) -> None:
    from jobs.data_jobs import split_dataset
    from recsys.data.dataset import Dataset

    split = split_dataset(Dataset.load(data), "leave-last-out", None, None, 3)
    _atomic_dir(out, split.save)


def _baselines(split_dir: Path, out: Path) -> None:
    from jobs.baselines_job import evaluate_baselines, write_results
    from recsys.splits import Split

    results = evaluate_baselines(Split.load(split_dir), ["mostpop", "itemknn"], "test", (10, 50))
    _atomic_dir(out, lambda folder: write_results(results, folder))


def _encoder(
    out: Path, paths: dict[str, Path], config: QuickstartConfig, method: str, steps: int, register: bool
) -> None:
    from encoders.text_training import TextTrainConfig
    from jobs.train_encoder import train_encoder
    from recsys.data.dataset import Dataset
    from recsys.splits import Split

    if not (out / "run.json").is_file():
        budgets = config.budgets()
        text = TextTrainConfig(
            method=method,
            max_steps=steps,
            eval_every=max(steps // 2, 1),
            history_tokens=budgets.history_tokens,
            threads=config.threads,
        )
        sequence = SequenceTrainConfig(
            epochs=budgets.sequence_epochs, max_seconds=budgets.sequence_seconds, threads=config.threads
        )
        run = train_encoder(
            Dataset.load(paths["data"]),
            Split.load(paths["split"]),
            out,
            tower="auto" if method != "frozen" else "text",
            base_model=config.base_model,
            text_config=text,
            sequence_train_config=sequence,
        )
        if run.tower_choice:
            scores = ", ".join(f"{name} {score:.4f}" for name, score in run.tower_choice["valid_ndcg10"].items())
            print(f"  user tower: {run.tower} (validation NDCG@10: {scores})")
    if register:
        from jobs.log_encoder import log_encoder_run

        model = log_encoder_run(out, alias="champion", run_name="quickstart")
        _mark_registered(out, model)


def _nightly(paths: dict[str, Path]) -> None:
    from jobs.nightly_embed import EmbedConfig, run_nightly

    report = run_nightly(paths["data"], "champion", paths["store"], EmbedConfig(active_days=3650.0))
    print(report.summary_line())


def _ranker(paths: dict[str, Path], budgets: Budgets) -> None:
    from encoders.registry import resolve_encoder
    from jobs.log_ranker import log_ranker_run
    from jobs.train_ranker import train_ranker
    from ranking.training import RankerConfig
    from recsys.data.dataset import Dataset
    from recsys.splits import Split

    out = paths["ranker"]
    if not (out / "run.json").is_file():
        loaded = resolve_encoder("champion", cache_dir=paths["store"] / "encoders")
        run = train_ranker(
            Dataset.load(paths["data"]),
            Split.load(paths["split"]),
            loaded,
            out,
            RankerConfig(extra_cuts=budgets.ranker_cuts),
        )
        print(run.summary_line())
    model = log_ranker_run(out, alias="champion", run_name="quickstart")
    _mark_registered(out, model)


def _ab(paths: dict[str, Path], work: Path) -> None:
    from jobs.ab_job import StatsConfig, run_ab
    from jobs.log_ab import log_ab_result

    for name, a, b in (
        ("ab-frozen-vs-lora", paths["frozen"], paths["encoder"]),
        ("ab-encoder-vs-ranker", paths["ranker"] / "topk_test_encoder.parquet", paths["ranker"]),
    ):
        result = run_ab(
            paths["split"],
            str(a),
            str(b),
            labels=("A", "B"),
            out=work / name,
            log_fn=log_ab_result,
            stats=StatsConfig(n_bootstrap=2000, n_permutations=5000),
        )
        for line in result.verdicts()[:3]:
            print(f"  {name}: {line}")


def _lists(paths: dict[str, Path]) -> None:
    import polars as pl

    out = paths["lists"]
    out.mkdir(parents=True, exist_ok=True)
    sources = {
        "mostpop": paths["baselines"] / "topk_mostpop.parquet",
        "itemknn": paths["baselines"] / "topk_itemknn.parquet",
        "frozen": paths["frozen"] / "topk_test.parquet",
        "encoder": paths["encoder"] / "topk_test.parquet",
        "ranker": paths["ranker"] / "topk_test.parquet",
    }
    for name, source in sources.items():
        if source.is_file():
            frame = pl.read_parquet(source).select("user_id", "item_id", "rank").filter(pl.col("rank") <= LIST_K)
            frame.write_parquet(out / f"{name}.parquet")


# ----------------------------------------------------------------------------------- serving
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_and_sample(paths: dict[str, Path], config: QuickstartConfig) -> dict[str, Any]:
    """Start `recsys serve`, wait for /readyz, ask for a few users' recommendations, stop it."""
    import httpx
    import polars as pl

    from recsys.data.dataset import Dataset

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "recsys.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--store",
        str(paths["store"]),
        "--data",
        str(paths["data"]),
        "--encoder",
        "champion",
        "--ranker",
        "champion",
    ]
    log_file = paths["store"].parent / "serve.log"
    with open(log_file, "w", encoding="utf-8") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    try:
        ready = _wait_ready(base, server, timeout=180.0, log_file=log_file)
        dataset = Dataset.load(paths["data"])
        titles = (
            dict(zip(dataset.items["item_id"].to_list(), dataset.items["title"].cast(pl.String).to_list(), strict=True))
            if "title" in dataset.items.columns
            else {}
        )
        counts = dataset.interactions.group_by("user_id").len().sort(["len", "user_id"], descending=[True, False])
        users = counts["user_id"].to_list()[:: max(1, counts.height // max(config.users_to_show, 1))]
        users = users[: config.users_to_show]
        samples = []
        with httpx.Client(base_url=base, timeout=30.0) as client:
            for user in users:
                started = time.perf_counter()
                response = client.post("/v1/recommend", json={"user_id": user, "k": 5})
                latency = (time.perf_counter() - started) * 1000
                response.raise_for_status()
                body = response.json()
                history = (
                    dataset.interactions.filter(pl.col("user_id") == user)
                    .sort("ts", descending=True)["item_id"]
                    .to_list()[:5]
                )
                items = body.get("items", [])
                samples.append(
                    {
                        "user_id": user,
                        "latency_ms": round(latency, 1),
                        "history": history,
                        "recommended": [i.get("item_id") for i in items],
                        "mode": body.get("mode"),
                    }
                )
                config.echo(f"\nuser {user} ({latency:.0f} ms, {body.get('mode', '?')})")
                config.echo("  recently:    " + " | ".join(titles.get(i, i) for i in history))
                config.echo(
                    "  recommended: " + " | ".join(titles.get(i.get("item_id"), i.get("item_id")) for i in items)
                )
            event_demo = _event_demo(client, samples[0], titles, config.echo) if samples else None
            text = client.post("/v1/recommend", json={"text": _sample_text(titles), "k": 3}).json()
            config.echo(
                "\nfree text query -> "
                + " | ".join(titles.get(i.get("item_id"), i.get("item_id")) for i in text.get("items", []))
            )
        return {"port": port, "ready": ready, "samples": samples, "event_demo": event_demo, "log": str(log_file)}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def _event_demo(client: Any, sample: dict[str, Any], titles: dict[str, str], echo: Callable[[str], None]) -> dict:
    """Post an event (the user picks their top recommendation) and show the next recommendations change.

    The event is logged durably (`POST /v1/events`), the item joins the user's history at once: the
    next `/v1/recommend` excludes it as seen and encodes the updated history.
    """
    user, before = sample["user_id"], sample["recommended"]
    event = {"event_id": f"quickstart-{uuid.uuid4().hex}", "user_id": user, "item_id": before[0], "event": "click"}
    posted = client.post("/v1/events", json={"events": [event]})
    posted.raise_for_status()
    response = client.post("/v1/recommend", json={"user_id": user, "k": len(before)})
    response.raise_for_status()
    after = [item["item_id"] for item in response.json()["items"]]
    clicked = titles.get(before[0], before[0])
    echo(f"\nuser {user} clicks {clicked} (POST /v1/events: {posted.json()['accepted']} accepted)")
    echo("  before: " + " | ".join(titles.get(i, i) for i in before))
    echo("  after:  " + " | ".join(titles.get(i, i) for i in after))
    return {"user_id": user, "event": event, "before": before, "after": after, "changed": after != before}


def _sample_text(titles: dict[str, str]) -> str:
    first = next(iter(titles.values()), "something good")
    return f"something like {first}"


def _wait_ready(base: str, server: subprocess.Popen, timeout: float, log_file: Path) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = log_file.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise ConfigError(f"the API exited with code {server.returncode} before it was ready:\n{tail}")
        try:
            response = httpx.get(f"{base}/readyz", timeout=2.0)
            if response.status_code == 200:
                return response.json()
            last = response.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise ConfigError(f"the API did not become ready within {timeout:.0f} s (last answer: {last}); see {log_file}")


# ----------------------------------------------------------------------------------- helpers
def _check_choices(work: Path, config: QuickstartConfig) -> None:
    """Refuse to reuse a work folder made with another dataset or budget: its finished steps would be
    silently served as if they answered this command."""
    source = config.data or config.path
    choices = {
        "dataset": config.dataset,
        "path": str(source.resolve()) if source else None,
        "lora_steps": config.lora_steps(),
    }
    record = work / CHOICES_FILE
    if record.is_file():
        before = json.loads(record.read_text(encoding="utf-8"))
        changed = {k: (before.get(k), v) for k, v in choices.items() if before.get(k) != v}
        if changed:
            what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ConfigError(
                f"{work} was made by a quickstart with other settings ({what}); pass --fresh to "
                "start over there, or another --work folder"
            )
    else:
        record.write_text(json.dumps(choices, indent=2), encoding="utf-8")


def _atomic_dir(target: Path, write: Callable[[Path], Any]) -> None:
    """Write a folder under a temporary name and rename it into place: half a step never looks done."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def _registered(folder: Path) -> bool:
    return (folder / "registered.json").is_file()


def _mark_registered(folder: Path, model: Any) -> None:
    (folder / "registered.json").write_text(
        json.dumps({"name": model.name, "version": model.version, "alias": "champion", "uri": model.uri}),
        encoding="utf-8",
    )


def _nightly_current(store: Path, encoder: Path) -> bool:
    """Published, and with the encoder version registered now (a retrained encoder re-runs the job)."""
    from recsys.index import IndexStore

    marker = encoder / "registered.json"
    if not marker.is_file() or not (store / "index" / "CURRENT").is_file():
        return False
    registered = json.loads(marker.read_text(encoding="utf-8"))
    index = IndexStore(store / "index")
    version = index.current_version()
    metadata = index.metadata(version) if version else {}
    return metadata.get("encoder_version") == f"{registered['name']}/{registered['version']}"


def _summary(
    paths: dict[str, Path], work: Path, log: StepLog, served: dict[str, Any], seconds: float
) -> dict[str, Any]:
    from recsys.metrics import score_topk_file
    from recsys.splits import Split
    from recsys.ties import tie_free_users

    quality = {}
    split = Split.load(paths["split"])
    tie_free = tie_free_users(split, "test").to_list()
    users = {"all": split.targets("test")["user_id"].n_unique(), "tie_free": len(tie_free)}
    order = ["mostpop", "itemknn", "frozen", "encoder", "ranker"]
    for file in sorted(
        paths["lists"].glob("*.parquet"), key=lambda f: order.index(f.stem) if f.stem in order else len(order)
    ):
        metrics = score_topk_file(file, paths["split"], "test", ks=(10, 50))
        quality[file.stem] = {k: round(float(metrics[k]), 4) for k in ("ndcg@10", "hr@10", "mrr@10", "hr@50")}
        tie_free_metrics = score_topk_file(file, paths["split"], "test", ks=(10,), users=tie_free)
        quality[file.stem]["ndcg@10 tie-free"] = round(float(tie_free_metrics["ndcg@10"]), 4)
    home = Path(os.environ.get("RECSYS_HOME", work / "home"))
    return {
        "work": str(work),
        "seconds": round(seconds, 1),
        "timings": log.timings,
        "reused": log.skipped,
        "quality_test": quality,
        "test_users": users,
        "reports": [str(work / "ab-frozen-vs-lora" / "report.md"), str(work / "ab-encoder-vs-ranker" / "report.md")],
        "lists": str(paths["lists"]),
        "served": served,
        "mlflow_ui": f"mlflow ui --backend-store-uri sqlite:///{home / 'mlflow.db'}",
    }


def _print_summary(summary: dict[str, Any], echo: Callable[[str], None]) -> None:
    echo(
        "\nquality on the test target (full catalog, seen items excluded; tie-free: users whose test target"
        " is not in the same second as their validation target):"
    )
    users = summary.get("test_users") or {}
    if users:
        echo(f"  test users: {users['all']:,} all, {users['tie_free']:,} tie-free")
    echo(f"  {'system':<10} {'NDCG@10':>8} {'tie-free':>8} {'HR@10':>8} {'MRR@10':>8} {'HR@50':>8}")
    for name, m in summary["quality_test"].items():
        echo(
            f"  {name:<10} {m['ndcg@10']:>8.4f} {m.get('ndcg@10 tie-free', float('nan')):>8.4f} "
            f"{m['hr@10']:>8.4f} {m['mrr@10']:>8.4f} {m['hr@50']:>8.4f}"
        )
    echo(f"A/B reports: {', '.join(summary['reports'])}")
    echo(f"test top-50 lists: {summary['lists']}")
    echo(f"MLflow UI: {summary['mlflow_ui']}")
    reused = f", reused {len(summary['reused'])} finished steps" if summary["reused"] else ""
    echo(f"quickstart finished in {summary['seconds']:.0f} s{reused}; work folder {summary['work']}")
