"""IndexStore: publish / current / keep-N / rollback, and crash safety under a real SIGKILL."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from recsys.errors import ConfigError, DataError
from recsys.index import IndexStore, VectorIndex

REPO = Path(__file__).resolve().parents[1]


def vectors(seed: int, n: int = 400, dim: int = 16) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_index(seed: int, n: int = 400) -> VectorIndex:
    return VectorIndex.build([f"i{seed}-{j}" for j in range(n)], vectors(seed, n), {"kind": "flat"})


def test_publish_then_current_serves_it(tmp_path):
    store = IndexStore(tmp_path / "store")
    assert store.current_version() is None and store.versions() == []
    with pytest.raises(DataError, match="no index has been published"):
        store.current()
    index = make_index(1)
    version = store.publish(index, {"dataset": "ml-latest-small", "encoded": 400}, encoder_version="enc-7")
    assert store.current_version() == version and store.versions() == [version]
    served_version, served, metadata = store.current(encoder_version="enc-7")
    assert served_version == version
    q = vectors(99, 5)
    np.testing.assert_array_equal(served.search(q, 10).rows, index.search(q, 10).rows)
    assert served.item_ids.tolist() == index.item_ids.tolist()
    assert metadata["encoder_version"] == "enc-7" and metadata["count"] == 400 and metadata["dim"] == 16
    assert metadata["kind"] == "flat" and metadata["params"] == {"kind": "flat"}
    assert metadata["checksum"] == served.checksum and version.endswith(served.checksum[:8])
    assert metadata["extra"] == {"dataset": "ml-latest-small", "encoded": 400}
    assert metadata["created_at"].endswith("+00:00")
    assert list((tmp_path / "store" / "tmp").iterdir()) == []
    with pytest.raises(ConfigError, match="enc-7"):
        store.current(encoder_version="enc-8")


def test_publish_needs_an_encoder_version(tmp_path):
    with pytest.raises(ConfigError, match="encoder version"):
        IndexStore(tmp_path).publish(make_index(1))
    # ...which may also come from the metadata or the index itself.
    assert IndexStore(tmp_path).publish(make_index(1), {"encoder_version": "e1"})
    index = make_index(2)
    index.encoder_version = "e2"
    version = IndexStore(tmp_path).publish(index)
    assert IndexStore(tmp_path).metadata(version)["encoder_version"] == "e2"


def test_keep_n_rollback_and_never_pruning_current(tmp_path):
    store = IndexStore(tmp_path, keep=2)
    published = [store.publish(make_index(s), encoder_version=f"e{s}") for s in range(4)]
    assert published == sorted(published)  # names sort in publish order
    assert store.versions() == published[-2:]
    assert store.current_version() == published[-1]

    store.rollback(published[2])
    version, index, metadata = store.current()
    assert version == published[2] and metadata["encoder_version"] == "e2"
    assert index.item_ids[0] == "i2-0"

    store.prune(keep=1)  # newest one kept, and CURRENT (older) kept as well
    assert store.versions() == published[2:]
    with pytest.raises(DataError, match="does not exist"):
        store.rollback(published[0])
    assert store.current_version() == published[2]


def test_corrupted_version_is_refused(tmp_path):
    store = IndexStore(tmp_path, keep=5)
    good = store.publish(make_index(1), encoder_version="e")
    bad = store.publish(make_index(2), encoder_version="e")
    target = tmp_path / "versions" / bad / "index.faiss"
    data = bytearray(target.read_bytes())
    data[-5] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch"):
        store.current()
    store.rollback(good)
    with pytest.raises(DataError, match="checksum mismatch"):
        store.rollback(bad)
    assert store.current()[0] == good


def test_leftovers_are_cleaned_by_the_next_publish(tmp_path):
    store = IndexStore(tmp_path)
    store.publish(make_index(1), encoder_version="e")
    (tmp_path / "tmp" / "20000101T000000.000000Z.partial").mkdir()
    (tmp_path / "tmp" / "20000101T000000.000000Z.partial" / "index.faiss").write_bytes(b"half")
    (tmp_path / "CURRENT.4242.tmp").write_text("garbage")
    store.publish(make_index(2), encoder_version="e")
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not (tmp_path / "CURRENT.4242.tmp").exists()
    assert len(store.versions()) == 2
    # The same sweep is available on its own, e.g. from a maintenance command.
    (tmp_path / "tmp" / "x.partial").mkdir()
    assert store.cleanup() == ["x.partial"] and list((tmp_path / "tmp").iterdir()) == []


def test_bad_store_arguments(tmp_path):
    with pytest.raises(ConfigError, match="keep"):
        IndexStore(tmp_path, keep=0)
    with pytest.raises(ConfigError, match="not a version name"):
        IndexStore(tmp_path).load("../escape")
    with pytest.raises(ConfigError, match="JSON"):
        IndexStore(tmp_path).publish(make_index(1), {"when": object()}, encoder_version="e")


CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[4])
    import numpy as np
    import recsys.index.store as store_module
    from recsys.index import IndexStore, VectorIndex

    root, stop_at, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def stop(stage):
        if stage == stop_at:
            print("STAGE", stage, flush=True)
            time.sleep(300)  # the test kills us here

    store_module._on_stage = stop
    x = np.random.default_rng(seed).standard_normal((400, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = VectorIndex.build([f"i{seed}-{j}" for j in range(400)], x, {"kind": "flat"})
    print("DONE", IndexStore(root, keep=2).publish(index, encoder_version="enc-new"), flush=True)
    """
)


def _wait_for_line(proc: subprocess.Popen, prefix: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.startswith(prefix):
                return line
            if not line and proc.poll() is not None:
                break
    proc.kill()
    raise AssertionError(f"child never printed {prefix!r}; stderr: {proc.stderr.read()}")


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
@pytest.mark.parametrize("stage", ["begin", "written", "verified", "renamed", "pointer_written", "switched"])
def test_sigkill_during_publish_keeps_a_complete_current_version(tmp_path, stage):
    root = tmp_path / "store"
    store = IndexStore(root, keep=2)
    old_index = make_index(1)
    old = store.publish(old_index, encoder_version="enc-old")
    script = tmp_path / "child.py"
    script.write_text(CHILD)

    proc = subprocess.Popen(
        [sys.executable, str(script), str(root), stage, "2", str(REPO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_line(proc, "STAGE")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # Whatever the moment, CURRENT names a complete version whose checksums verify.
    version, served, metadata = store.current()
    q = vectors(99, 5)
    if stage == "switched":  # killed after the pointer moved: the new index is already served
        assert version != old and metadata["encoder_version"] == "enc-new"
        assert served.item_ids[0] == "i2-0"
    else:
        assert version == old and metadata["encoder_version"] == "enc-old"
        np.testing.assert_array_equal(served.search(q, 10).rows, old_index.search(q, 10).rows)
    if stage in ("begin", "written", "verified", "pointer_written"):
        assert any((root / "tmp").iterdir()) or any(root.glob("CURRENT.*.tmp"))  # the killed run's debris

    # A rerun publishes the same index an uninterrupted run would have, and clears the debris.
    new_index = make_index(2)
    rerun = IndexStore(root, keep=2).publish(new_index, encoder_version="enc-new")
    assert store.current_version() == rerun
    assert list((root / "tmp").iterdir()) == [] and not list(root.glob("CURRENT.*.tmp"))
    clean = tmp_path / "uninterrupted"
    expected_checksum = new_index.save(clean, encoder_version="enc-new")
    assert store.metadata(rerun)["checksum"] == expected_checksum
    assert (
        json.loads((root / "versions" / rerun / "manifest.json").read_text())["files"]
        == json.loads((clean / "manifest.json").read_text())["files"]
    )
    assert len(store.versions()) == 2  # keep=2: a killed run's finished version is pruned like any other
    _, served, _ = store.current()
    np.testing.assert_array_equal(served.search(q, 10).rows, new_index.search(q, 10).rows)
