"""`IndexStore`: versioned index folders with an atomic publish, so a server never sees half an index.

Layout under `root`:

    root/CURRENT                  one line: the version being served
    root/versions/<version>/      index.faiss, item_ids.json, manifest.json, metadata.json
    root/tmp/                     work in progress; anything here is garbage once no publish runs
    root/.lock                    held (flock) by a publish, rollback or cleanup

Version names are `YYYYMMDDTHHMMSS.ffffffZ-<first 8 hex of the index checksum>` (UTC). They sort in
time order as plain strings, need no counter (so no read-modify-write race between publishers), and
say at a glance which versions hold the same index.

`publish` steps, and what a crash (even SIGKILL) after each one leaves behind:

1. write the index and `metadata.json` into `root/tmp/<version>.partial`  -> CURRENT untouched
2. verify that copy: reload it with checksums, compare a search with the in-memory index
3. `os.rename` it to `root/versions/<version>` (atomic: the folder appears whole or not at all)
   -> a complete, verified version that is not served yet; retention prunes it later like any other
4. write `root/CURRENT.<pid>.tmp` and `os.replace` it onto `CURRENT` (atomic) -> new version served
5. prune: keep the newest `keep` versions plus CURRENT; a doomed folder is first renamed into
   `tmp/` and then deleted, so `versions/` never holds a half-deleted one.

So CURRENT always names a complete, verified version. The next publish (or `cleanup()`) removes
whatever a killed run left in `tmp/`. Readers take no lock: they read CURRENT and load that folder,
retrying if a concurrent prune removed it in between (only possible with `keep=1`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from recsys.errors import ConfigError, DataError
from recsys.fsutil import fsync_dir
from recsys.index.faiss_index import MANIFEST_FILE, VectorIndex, read_manifest

METADATA_FILE = "metadata.json"
CURRENT_FILE = "CURRENT"
# Test hook: called with the name of each publish stage as it is reached ("begin", "written",
# "verified", "renamed", "pointer_written", "switched"). The crash test sets it in a child process to
# stop there and be killed; in normal use it stays None.
_on_stage: Callable[[str], None] | None = None


def _stage(name: str) -> None:
    if _on_stage is not None:
        _on_stage(name)


class IndexStore:
    """Versions of a `VectorIndex` under one folder: publish, serve CURRENT, keep N, roll back."""

    def __init__(self, root: str | Path, keep: int = 3) -> None:
        if not isinstance(keep, int) or keep < 1:
            raise ConfigError(f"index store 'keep' must be a positive integer, got {keep!r}")
        self.root = Path(root)
        self.keep = keep
        self.versions_dir = self.root / "versions"
        self.tmp_dir = self.root / "tmp"

    def __repr__(self) -> str:
        return f"IndexStore({str(self.root)!r}, keep={self.keep})"

    # ------------------------------------------------------------------ read
    def versions(self) -> list[str]:
        """Published versions, oldest first (names sort by creation time)."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(
            p.name
            for p in self.versions_dir.iterdir()
            if p.is_dir() and (p / MANIFEST_FILE).is_file() and (p / METADATA_FILE).is_file()
        )

    def current_version(self) -> str | None:
        """The served version, or None before the first publish. Cheap: a server polls this to hot-swap."""
        try:
            text = (self.root / CURRENT_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def metadata(self, version: str) -> dict[str, Any]:
        path = self._version_dir(version) / METADATA_FILE
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError as exc:
            raise DataError(f"index version {version!r} does not exist in {self.root}", file=str(path)) from exc
        except (OSError, ValueError) as exc:
            raise DataError(f"unreadable version metadata: {exc}", file=str(path)) from exc

    def load(
        self, version: str, *, encoder_version: str | None = None, config: Any = None
    ) -> tuple[VectorIndex, dict[str, Any]]:
        """Load one version with full checksum verification; returns the index and its metadata."""
        folder = self._version_dir(version)
        if not folder.is_dir():
            raise DataError(
                f"index version {version!r} does not exist (have: {', '.join(self.versions()) or 'none'})",
                file=str(folder),
            )
        metadata = self.metadata(version)
        index = VectorIndex.load(folder, verify=True, encoder_version=encoder_version, config=config)
        if metadata.get("checksum") != index.checksum:
            raise DataError(
                "version metadata and index manifest disagree on the checksum", file=str(folder / METADATA_FILE)
            )
        return index, metadata

    def current(
        self, *, encoder_version: str | None = None, config: Any = None
    ) -> tuple[str, VectorIndex, dict[str, Any]]:
        """`(version, index, metadata)` of the served version; `DataError` when nothing is published."""
        for _ in range(3):
            version = self.current_version()
            if version is None:
                raise DataError(f"no index has been published in {self.root} yet", file=str(self.root / CURRENT_FILE))
            try:
                index, metadata = self.load(version, encoder_version=encoder_version, config=config)
                return version, index, metadata
            except DataError:
                # A publish with keep=1 may have switched and pruned between our two reads: try the new one.
                if self.current_version() == version:
                    raise
        raise DataError(f"CURRENT in {self.root} keeps changing while loading; retry later")

    # ----------------------------------------------------------------- write
    def publish(
        self, index: VectorIndex, metadata: dict[str, Any] | None = None, *, encoder_version: str | None = None
    ) -> str:
        """Save, verify and atomically switch to `index` as a new version; returns the version name.

        `encoder_version` (else `metadata["encoder_version"]`, else the index's own) is required: every
        served index must say which encoder made its vectors. `metadata` (JSON-serialisable: counts,
        run ids, dataset name...) is stored under `extra`.
        """
        extra = dict(metadata or {})
        encoder_version = encoder_version or extra.get("encoder_version") or index.encoder_version
        if not encoder_version:
            raise ConfigError("publishing an index needs the encoder version it was built with (encoder_version=...)")
        try:
            json.dumps(extra)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"index metadata must be JSON-serialisable: {exc}") from exc
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._clean_tmp()
            created = datetime.now(timezone.utc)
            stamp = created.strftime("%Y%m%dT%H%M%S.%fZ")
            work = self.tmp_dir / f"{stamp}.partial"
            work.mkdir()
            _stage("begin")
            checksum = index.save(work, encoder_version=str(encoder_version))
            version = f"{stamp}-{checksum[:8]}"
            manifest = read_manifest(work)
            record = {
                "version": version,
                "created_at": created.isoformat(),
                "encoder_version": str(encoder_version),
                "count": len(index),
                "dim": index.dim,
                "kind": index.kind,
                "params": manifest["params"],
                "checksum": checksum,
                "files": manifest["files"],
                "faiss_version": manifest.get("faiss_version"),
                "extra": extra,
            }
            self._write_json(work / METADATA_FILE, record)
            fsync_dir(work)
            _stage("written")
            self._verify(work, index)
            _stage("verified")
            final = self.versions_dir / version
            os.rename(work, final)
            fsync_dir(self.versions_dir)
            fsync_dir(self.tmp_dir)
            _stage("renamed")
            self._switch(version)
            _stage("switched")
            self._prune(self.keep)
        return version

    def rollback(self, version: str) -> None:
        """Serve an earlier (or any kept) version again, after verifying its checksums."""
        with self._lock():
            self.load(version)
            self._switch(version)

    def prune(self, keep: int | None = None) -> list[str]:
        """Delete all but the newest `keep` versions (default: the store's), never the one CURRENT names;
        returns the deleted names. `publish` does this itself; call it after a rollback to trim further."""
        keep = self.keep if keep is None else keep
        if not isinstance(keep, int) or keep < 1:
            raise ConfigError(f"index store 'keep' must be a positive integer, got {keep!r}")
        with self._lock():
            return self._prune(keep)

    def cleanup(self) -> list[str]:
        """Remove leftovers of killed runs from `tmp/`; returns what was removed."""
        if not self.tmp_dir.is_dir():
            return []
        with self._lock():
            return self._clean_tmp()

    # --------------------------------------------------------------- helpers
    def _version_dir(self, version: str) -> Path:
        if not version or "/" in version or "\\" in version or version.startswith("."):
            raise ConfigError(f"not a version name: {version!r}")
        return self.versions_dir / version

    def _verify(self, folder: Path, original: VectorIndex) -> None:
        """The copy on disk loads with matching checksums and answers a search like the in-memory index."""
        loaded = VectorIndex.load(folder, verify=True, config={"use_gpu": False})
        if len(loaded) != len(original) or loaded.dim != original.dim:
            raise DataError(
                f"saved index holds {len(loaded)}x{loaded.dim}, expected {len(original)}x{original.dim}",
                file=str(folder),
            )
        if not np.array_equal(loaded.item_ids, original.item_ids):
            raise DataError("saved item ids differ from the index's", file=str(folder))
        rng = np.random.default_rng(0)
        queries = rng.standard_normal((8, original.dim)).astype(np.float32)
        k = min(10, len(original))
        expected = VectorIndex(original._cpu, original.item_ids, loaded.config, None).search(queries, k)
        got = loaded.search(queries, k)
        if not np.array_equal(expected.rows, got.rows) or (got.counts < k).any():
            raise DataError("saved index answers a sanity search differently from the one in memory", file=str(folder))

    def _switch(self, version: str) -> None:
        tmp = self.root / f"{CURRENT_FILE}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(version + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        _stage("pointer_written")
        os.replace(tmp, self.root / CURRENT_FILE)
        fsync_dir(self.root)

    def _prune(self, keep: int) -> list[str]:
        current = self.current_version()
        doomed = [v for v in self.versions()[:-keep] if v != current]
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for version in doomed:
            trash = self.tmp_dir / f"{version}.deleting"
            os.rename(self.versions_dir / version, trash)
            shutil.rmtree(trash, ignore_errors=True)
        return doomed
        # Folders in versions/ without manifest+metadata are never produced by publish (rename is atomic);
        # they are left alone rather than guessed about.

    def _clean_tmp(self) -> list[str]:
        removed = []
        for path in sorted(self.tmp_dir.iterdir()):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed.append(path.name)
        for path in self.root.glob(f"{CURRENT_FILE}.*.tmp"):
            path.unlink()
            removed.append(path.name)
        return removed

    @staticmethod
    def _write_json(path: Path, data: dict[str, Any]) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, ensure_ascii=False)
            handle.flush()
            os.fsync(handle.fileno())

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One writer at a time (flock: the kernel drops it when the holder dies, even by SIGKILL)."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            # local (c): fcntl is POSIX-only and this module must import without it
            import fcntl
        except ImportError:  # pragma: no cover - Windows: single-writer by convention
            yield
            return
        with open(self.root / ".lock", "a+") as handle:
            deadline = time.monotonic() + 600
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise DataError(f"another publish holds {self.root / '.lock'} for over 10 minutes") from None
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
