"""`recsys data ingest`: merge the service's event log into a dataset folder's interactions.

The batch side of real-time events (`recsys.serving.events`): the service logs what users do; this
job appends those events to `interactions.parquet`, so the next nightly run (`recsys embed`) indexes
them and encodes the users' new histories. A serving process watching the folder reloads it (hot
swap) and finds the events already in its live histories: nothing is counted twice.

Idempotent, so a crash or a rerun never duplicates:
- only rows after the log's `ingested` watermark are read;
- an event whose `event_id` (kept as a column) or whose (user_id, item_id, ts) the dataset already
  has is skipped (the watermark moves after the dataset is written: a crash between the two re-reads
  rows that are then skipped here);
- events on items the dataset's catalog lacks are skipped and counted (they stay in the log).
The files are replaced atomically (`fsutil.write_atomically`): interactions first, then the manifest's
counts. `compact` then deletes the ingested rows from the log in the transaction that moves the
watermark, so an event that arrived during the job (a larger `seq`) is kept (`EventLog.mark`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from recsys.data.dataset import MANIFEST, Dataset
from recsys.fsutil import write_atomically
from recsys.serving.events import EventLog, LoggedEvent

KEY = ("user_id", "item_id", "ts")


@dataclass(frozen=True)
class IngestReport:
    """What one run did: rows read from the log, appended, skipped as already present or unknown."""

    read: int
    added: int
    duplicates: int
    unknown_items: int
    compacted: int
    watermark: int
    interactions: int

    def summary_line(self) -> str:
        return (
            f"ingested {self.read} events: {self.added} added, {self.duplicates} already in the dataset, "
            f"{self.unknown_items} on unknown items (skipped); {self.compacted} compacted from the log; "
            f"watermark {self.watermark}; {self.interactions} interactions now"
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def ingest_events(events: str | Path, data: str | Path, *, compact: bool = False) -> IngestReport:
    """Merge the log at `events` into the dataset folder `data` (module doc)."""
    data = Path(data)
    with EventLog(events) as log:
        start = log.watermark()
        rows = log.since(start)
        if not rows:
            interactions = pl.scan_parquet(data / "interactions.parquet").select(pl.len()).collect().item()
            return IngestReport(0, 0, 0, 0, 0, start, int(interactions))
        dataset = Dataset.load(data)
        merged, added, duplicates, unknown = merge(dataset.interactions, rows, dataset.items["item_id"])
        if added:
            write_atomically(data / "interactions.parquet", merged.write_parquet)
            _write_counts(data, dataset, merged)
        upto = rows[-1].seq
        compacted = log.mark(upto, compact=compact)
    return IngestReport(len(rows), added, duplicates, unknown, compacted, upto, merged.height)


def merge(
    interactions: pl.DataFrame, rows: list[LoggedEvent], catalog: pl.Series
) -> tuple[pl.DataFrame, int, int, int]:
    """(interactions with the new events appended, added, already present, on unknown items)."""
    new = pl.DataFrame(
        {
            "user_id": [r.user_id for r in rows],
            "item_id": [r.item_id for r in rows],
            "ts": pl.Series([r.ts_us for r in rows], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "event": pl.Series([r.event for r in rows], dtype=pl.String),
            "weight": pl.Series([r.weight for r in rows], dtype=pl.Float64),
            "event_id": [r.event_id for r in rows],
        }
    )
    known = new["item_id"].is_in(catalog.implode())
    unknown = int((~known).sum())
    new = new.filter(known)
    before = new.height
    if "event_id" in interactions.columns:
        new = new.filter(~pl.col("event_id").is_in(interactions["event_id"].drop_nulls().implode()))
    new = new.join(interactions.select(KEY).unique(), on=list(KEY), how="anti").unique(list(KEY), keep="first")
    duplicates = before - new.height
    if not new.height:
        return interactions, 0, duplicates, unknown
    # The dataset's own columns, plus `event_id` (the idempotence key of later runs; null on older rows).
    new = new.drop([column for column in ("event", "weight") if column not in interactions.columns])
    merged = pl.concat([interactions, new], how="diagonal_relaxed")
    return merged, new.height, duplicates, unknown


def _write_counts(data: Path, dataset: Dataset, interactions: pl.DataFrame) -> None:
    """dataset.json with the new row counts (the rest as it was)."""
    path = data / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest.update(Dataset(dataset.items, interactions, dataset.impressions, dataset.name).summary())
    manifest["name"] = dataset.name
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8"))
