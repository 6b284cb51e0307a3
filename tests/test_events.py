"""Real-time events in process: the SQLite log, `Recommender.add_events`, and the ingest job.

The log is a real SQLite file (WAL, synchronous=FULL), idempotent by event_id; an event changes the
user's next recommendation at once (excluded as seen, history re-encoded instead of the nightly
vector) and is replayed after a restart; `recsys data ingest` merges the log into the dataset once,
and compaction loses nothing written while it runs (a concurrent writer). Over HTTP, with kill -9:
tests/test_events_http.py.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timezone

import polars as pl
import pytest
from typer.testing import CliRunner

from jobs.ingest_events import ingest_events
from jobs.testing import build_world
from recsys.cli import app
from recsys.data.dataset import Dataset
from recsys.data.synthetic import generate
from recsys.errors import DataError
from recsys.serving import Recommender, ServingConfig
from recsys.serving.events import Event, EventLog

TS = 1_700_000_000_000_000  # 2023-11-14, microseconds


def _event(n: int, user: str = "u1", item: str = "i1", ts: int = TS) -> Event:
    return Event(f"e{n}", user, item, ts + n)


# ------------------------------------------------------------------------------------- the log
def test_the_log_is_wal_fsynced_and_idempotent_by_event_id(tmp_path):
    path = tmp_path / "events" / "events.sqlite"
    with EventLog(path) as log:
        inserted, commit_ms = log.append([_event(1), _event(2), _event(1)])
        assert inserted == [True, True, False] and commit_ms >= 0
        assert log.append([_event(2), _event(3)])[0] == [False, True]  # a retried batch: only e3 is new
        assert [e.event_id for e in log.since(0)] == ["e1", "e2", "e3"]
        assert [e.event_id for e in log.since(2)] == ["e3"]
    with sqlite3.connect(path) as db:  # the file itself, as another process sees it
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 3
    with EventLog(path) as log:  # reopened: what a restart sees
        assert log._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: a commit fsyncs the WAL
        assert len(log) == 3
        assert log.mark(2, compact=True) == 2 and [e.event_id for e in log.since(0)] == ["e3"]
        assert log.append([_event(1), _event(4)])[0] == [False, True]  # a compacted id is still a duplicate
        assert log.watermark() == 2


# ----------------------------------------------------------------------------------- ingest
@pytest.fixture()
def dataset_folder(tmp_path):
    dataset = generate(n_interactions=400, n_users=20, n_items=120, seed=1)
    return dataset.save(tmp_path / "data"), dataset


def test_ingest_merges_once_and_skips_present_events_and_unknown_items(tmp_path, dataset_folder):
    folder, dataset = dataset_folder
    first = dataset.interactions.row(0, named=True)
    present_ts = int(first["ts"].timestamp() * 1_000_000)
    items = dataset.items["item_id"].to_list()
    log_path = tmp_path / "events.sqlite"
    with EventLog(log_path) as log:
        log.append(
            [
                Event("new-1", "someone-new", items[0], TS),
                Event("new-2", first["user_id"], items[1], TS + 1, "click", 2.0),
                Event("same-as-dataset", first["user_id"], first["item_id"], present_ts),
                Event("unknown", "u", "no-such-item", TS),
            ]
        )
    report = ingest_events(log_path, folder)
    assert (report.read, report.added, report.duplicates, report.unknown_items) == (4, 2, 1, 1)
    merged = Dataset.load(folder)
    assert merged.interactions.height == dataset.interactions.height + 2 == report.interactions
    assert sorted(merged.interactions["event_id"].drop_nulls().to_list()) == ["new-1", "new-2"]
    assert merged.summary()["interactions"] == report.interactions
    again = ingest_events(log_path, folder)  # nothing after the watermark: nothing read, nothing added
    assert (again.read, again.added) == (0, 0)
    with EventLog(log_path) as log:  # a crash after writing, before the watermark moved: rows read again
        log.mark(0)
        log._db.execute("DELETE FROM watermarks")
    rerun = ingest_events(log_path, folder)
    assert (rerun.read, rerun.added, rerun.duplicates) == (4, 0, 3)
    assert Dataset.load(folder).interactions.height == report.interactions


def test_compaction_never_loses_an_event_written_while_it_runs(tmp_path, dataset_folder):
    folder, dataset = dataset_folder
    items = dataset.items["item_id"].to_list()
    log_path = tmp_path / "events.sqlite"
    written: list[str] = []
    stop = threading.Event()

    def writer() -> None:  # another connection, as the service is another process
        with EventLog(log_path) as log:
            n = 0
            while not stop.is_set() or n < 200:
                batch = [
                    Event(f"w{n + j}", f"user{(n + j) % 7}", items[(n + j) % len(items)], TS + n + j) for j in range(5)
                ]
                log.append(batch)
                written.extend(e.event_id for e in batch)
                n += 5

    EventLog(log_path).close()
    thread = threading.Thread(target=writer)
    thread.start()
    compacted = 0
    try:
        for _ in range(6):
            compacted += ingest_events(log_path, folder, compact=True).compacted
    finally:
        stop.set()
        thread.join()
    compacted += ingest_events(log_path, folder, compact=True).compacted  # what came after the last run
    ids = Dataset.load(folder).interactions["event_id"].drop_nulls().to_list()
    assert len(ids) == len(set(ids)) == len(written) == compacted
    assert set(ids) == set(written)
    with EventLog(log_path) as log:
        assert len(log) == 0


def test_cli_ingest_prints_one_line(tmp_path, dataset_folder):
    folder, dataset = dataset_folder
    log_path = tmp_path / "events.sqlite"
    with EventLog(log_path) as log:
        log.append([Event("cli-1", "u", dataset.items["item_id"][0], TS)])
    result = CliRunner().invoke(app, ["data", "ingest", "--events", str(log_path), "--data", str(folder)])
    assert result.exit_code == 0, result.output
    assert "ingested 1 events: 1 added" in result.output


# ------------------------------------------------------------------------------ the facade
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("events-world"))


def _load(world, log_path):
    config = ServingConfig(threads=1, event_log=str(log_path))
    return Recommender.load(world.store, world.data, encoder=world.encoders["text"], ranker=None, config=config)


def test_an_event_changes_the_users_next_recommendation_and_survives_a_restart(world, tmp_path):
    log_path = tmp_path / "events.sqlite"
    with _load(world, log_path) as rec:
        cached = next(iter(rec.state.users.row_of))
        before = rec.recommend(user_id=cached, k=10)
        assert before.user_vector == "cached"
        clicked = before.item_ids[0]
        when = datetime.now(timezone.utc).isoformat()
        result = rec.add_events(
            [
                {"event_id": "a1", "user_id": cached, "item_id": clicked, "ts": when, "event": "click"},
                {"event_id": "a2", "user_id": cached, "item_id": "no-such-item"},
            ]
        )
        assert result.statuses == ["accepted", "unknown_item"] and result.commit_ms > 0
        after = rec.recommend(user_id=cached, k=10)
        assert after.user_vector == "encoded"  # the nightly vector predates the event
        assert clicked not in after.item_ids and after.item_ids != before.item_ids
        retry = rec.add_events([{"event_id": "a1", "user_id": cached, "item_id": clicked}])
        assert retry.statuses == ["duplicate"]
        newcomer = rec.add_events([{"event_id": "n1", "user_id": "brand-new", "item_id": clicked}])
        assert newcomer.accepted == 1
        assert not rec.recommend(user_id="brand-new", k=5).cold_start  # a history of one item is a history
        assert rec.status()["live_events"] == 2 and rec.stats["events"] == {
            "accepted": 2,
            "duplicates": 1,
            "unknown_items": 1,
        }
    with _load(world, log_path) as restarted:  # the log is replayed into the histories
        replayed = restarted.recommend(user_id=cached, k=10)
        assert replayed.item_ids == after.item_ids and replayed.user_vector == "encoded"
        assert restarted.status()["live_events"] == 2


def test_bad_event_batches_name_the_field(world, tmp_path):
    with _load(world, tmp_path / "events.sqlite") as rec:
        item = rec.state.catalog.item_ids[0]
        cases = {
            "events": [],
            "events[0].user_id": [{"event_id": "x", "user_id": "", "item_id": item}],
            "events[1].ts": [
                {"event_id": "x", "user_id": "u", "item_id": item},
                {"event_id": "y", "user_id": "u", "item_id": item, "ts": "3000-01-01"},
            ],
            "events[0].weight": [{"event_id": "x", "user_id": "u", "item_id": item, "weight": float("nan")}],
            "events[0]": [{"event_id": "x", "user_id": "u", "item_id": item, "colour": "red"}],
        }
        for column, events in cases.items():
            with pytest.raises(DataError) as caught:
                rec.add_events(events)
            assert caught.value.column == column
        too_many = [{"event_id": str(n), "user_id": "u", "item_id": item} for n in range(rec.config.max_events + 1)]
        with pytest.raises(DataError, match="1 to 1000 events"):
            rec.add_events(too_many)
        assert len(rec.events) == 0  # nothing of a refused batch was stored


def test_an_ingested_event_is_not_counted_twice_after_the_dataset_reloads(world, tmp_path):
    data = tmp_path / "data"
    Dataset.load(world.data).save(data)
    log_path = tmp_path / "events.sqlite"
    config = ServingConfig(threads=1, event_log=str(log_path))
    with Recommender.load(world.store, data, encoder=world.encoders["text"], ranker=None, config=config) as rec:
        user = world.dataset.interactions["user_id"][0]
        length = len(rec.state.catalog.history(user).item_ids)
        item = next(i for i in rec.state.catalog.item_ids if i not in rec.state.catalog.history(user).item_ids)
        rec.add_events([{"event_id": "g1", "user_id": user, "item_id": item}])
        assert len(rec.live.history(rec.state.catalog, user)[0].item_ids) == length + 1
        assert ingest_events(log_path, data).added == 1
        assert "dataset" in " ".join(rec.refresh())  # the rewritten folder is reloaded
        merged, live = rec.live.history(rec.state.catalog, user)
        assert len(merged.item_ids) == length + 1 and not live
        assert pl.read_parquet(data / "interactions.parquet")["event_id"].drop_nulls().to_list() == ["g1"]
