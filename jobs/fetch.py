"""`recsys data fetch movielens-small`: download the official zip, check it, unpack it.

For users with the internet (this project's build machines have none, so tests serve the zip from a
local HTTP server). GroupLens publishes an `.md5` next to each zip; the download is checked against
it (or against `--md5` when given) before anything is unpacked, written to a temporary name first,
and moved into place only when complete, so a failed or interrupted fetch leaves nothing that looks
like a dataset, and no empty `--out` folder it created (offline, say).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from recsys.errors import ConfigError, DataError
from recsys.progress import track

DATASETS = {
    "movielens-small": ("https://files.grouplens.org/datasets/movielens/ml-latest-small.zip", "ml-latest-small"),
}
CHUNK = 1 << 20


def fetch_dataset(
    name: str,
    out: str | Path,
    url: str | None = None,
    md5: str | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download `name` into `out/<folder>` and return that folder (already there: returned as is)."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    default_url, folder_name = DATASETS[name]
    url = url or default_url
    out = Path(out)
    target = out / folder_name
    if (target / "ratings.csv").is_file():
        return target
    created = [p for p in (out, *out.parents) if not p.exists()]  # removed again if the fetch fails
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _download(name, url, md5, out, target, folder_name, timeout, progress)
    except BaseException:
        for folder in created:  # innermost first; only folders this call made and left empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _download(
    name: str, url: str, md5: str | None, out: Path, target: Path, folder_name: str, timeout: float, progress: bool
) -> Path:
    """Fetch, check and unpack into `target` through a temporary folder inside `out`."""
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=out) as tmp:
        archive = Path(tmp) / "download.zip"
        try:
            expected = md5 or _read_md5(url, timeout)
            with urllib.request.urlopen(url, timeout=timeout) as response, open(archive, "wb") as handle:
                total = int(response.headers.get("Content-Length") or 0) or None

                for chunk in track(
                    iter(lambda: response.read(CHUNK), b""),
                    f"fetch {name}",
                    total=(total // CHUNK + 1) if total else None,
                    enabled=progress,
                ):
                    handle.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot download {url}: {exc} (no internet? copy the dataset folder by hand and pass it with --path)"
            ) from exc
        digest = _md5(archive)
        if digest != expected:
            raise DataError(
                f"checksum mismatch: MD5 {digest}, expected {expected}; the download is corrupt or "
                "not the official file, nothing was unpacked",
                file=url,
            )
        try:
            with zipfile.ZipFile(archive) as zipped:
                _check_members(zipped, folder_name, url)
                zipped.extractall(tmp)
        except zipfile.BadZipFile as exc:
            raise DataError(f"not a zip archive: {exc}", file=url) from exc
        shutil.rmtree(target, ignore_errors=True)
        os.replace(Path(tmp) / folder_name, target)
    return target


def _read_md5(url: str, timeout: float) -> str:
    with urllib.request.urlopen(url + ".md5", timeout=timeout) as response:
        text = response.read(4096).decode("ascii", errors="replace").strip()
    digest = text.split()[0].lower() if text else ""
    if len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
        raise DataError(f"the published checksum is not an MD5 digest: {text[:80]!r}", file=url + ".md5")
    return digest


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_members(zipped: zipfile.ZipFile, folder: str, url: str) -> None:
    """Only `<folder>/...` members, no absolute paths or `..` (zip-slip), and the ratings file present."""
    names = zipped.namelist()
    for member in names:
        parts = Path(member).parts
        if not parts or parts[0] != folder or Path(member).is_absolute() or ".." in parts:
            raise DataError(f"unexpected member {member!r} in the archive (expected only {folder}/...)", file=url)
    if f"{folder}/ratings.csv" not in names:
        raise DataError(f"the archive has no {folder}/ratings.csv", file=url)
