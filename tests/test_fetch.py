"""`recsys data fetch`: download over real HTTP (a local server), MD5 check, atomic unpack, clear errors."""

from __future__ import annotations

import hashlib
import http.server
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from jobs.fetch import fetch_dataset
from recsys.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
FILES = {
    "ml-latest-small/movies.csv": "movieId,title,genres\r\n1,Toy Story (1995),Adventure|Animation\r\n"
    "2,Jumanji (1995),Adventure|Fantasy\r\n",
    "ml-latest-small/ratings.csv": "userId,movieId,rating,timestamp\r\n1,1,4.0,964982703\r\n1,2,3.5,964982931\r\n"
    "2,1,5.0,964983000\r\n",
    "ml-latest-small/tags.csv": "userId,movieId,tag,timestamp\r\n1,1,pixar,964982703\r\n",
    "ml-latest-small/links.csv": "movieId,imdbId,tmdbId\r\n1,0114709,862\r\n2,0113497,8844\r\n",
}


def _zip(path: Path, files: dict[str, str]) -> bytes:
    with zipfile.ZipFile(path, "w") as zipped:
        for name, text in files.items():
            zipped.writestr(name, text)
    return path.read_bytes()


@pytest.fixture()
def mirror(tmp_path):
    """A real HTTP server on loopback serving good, corrupt and hostile archives with their .md5 files."""
    root = tmp_path / "www"
    root.mkdir()
    good = _zip(root / "good.zip", FILES)
    (root / "good.zip.md5").write_text(f"{hashlib.md5(good).hexdigest()}  ml-latest-small.zip\n")
    (root / "corrupt.zip").write_bytes(good[:-10] + b"0123456789")
    (root / "corrupt.zip.md5").write_text(hashlib.md5(good).hexdigest())
    evil = _zip(root / "evil.zip", {**FILES, "ml-latest-small/../../escape.txt": "x"})
    (root / "evil.zip.md5").write_text(hashlib.md5(evil).hexdigest())

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):  # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_downloads_checks_and_unpacks_then_converts(mirror, tmp_path):
    folder = fetch_dataset("movielens-small", tmp_path / "data", url=f"{mirror}/good.zip", progress=False)
    assert folder == tmp_path / "data" / "ml-latest-small"
    assert (folder / "ratings.csv").read_text().startswith("userId,movieId")
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["ml-latest-small"]  # no temporary leftovers
    # Already there: returned without a download (the mirror URL is not even reachable now).
    assert fetch_dataset("movielens-small", tmp_path / "data", url="http://127.0.0.1:9/none.zip") == folder
    converted = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys.cli",
            "data",
            "convert",
            "--format",
            "movielens",
            "--path",
            str(folder),
            "--out",
            str(tmp_path / "ds"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert converted.returncode == 0, converted.stderr


def test_corrupt_or_hostile_archives_unpack_nothing(mirror, tmp_path):
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch_dataset("movielens-small", tmp_path / "a", url=f"{mirror}/corrupt.zip", progress=False)
    assert not (tmp_path / "a").exists()  # nothing unpacked, and the folder it made is gone again
    with pytest.raises(DataError, match="unexpected member"):
        fetch_dataset("movielens-small", tmp_path / "b", url=f"{mirror}/evil.zip", progress=False)
    assert not (tmp_path / "b").exists()
    assert not (tmp_path / "escape.txt").exists()
    with pytest.raises(ConfigError, match="cannot download"):
        fetch_dataset("movielens-small", tmp_path / "c", url=f"{mirror}/missing.zip", progress=False)
    with pytest.raises(ConfigError, match="unknown dataset"):
        fetch_dataset("imagenet", tmp_path / "d")


def test_cli_reports_a_failed_download_in_one_line(mirror, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys.cli",
            "data",
            "fetch",
            "movielens-small",
            "--out",
            str(tmp_path),
            "--url",
            f"{mirror}/corrupt.zip",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2 and "checksum mismatch" in result.stderr and "Traceback" not in result.stderr


def test_offline_fetch_leaves_no_empty_folder_behind(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on: the download is refused, as when offline
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "data" / "nested"
    with pytest.raises(ConfigError, match="cannot download"):
        fetch_dataset("movielens-small", out, url=f"http://127.0.0.1:{port}/ml-latest-small.zip", timeout=5)
    assert not (tmp_path / "data").exists()
    kept = tmp_path / "mine"
    kept.mkdir()
    with pytest.raises(ConfigError):
        fetch_dataset("movielens-small", kept, url=f"http://127.0.0.1:{port}/ml-latest-small.zip", timeout=5)
    assert kept.is_dir()  # a folder the user made stays
