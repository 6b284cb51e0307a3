"""`resolve_encoder`: an encoder by registry reference or local folder, loaded as a `LoadedEncoder`.

reference -> pinned version -> bundle folder -> `EncoderBundle` -> `LoadedEncoder` (bundle + version).

Registry encoders (`champion`, `models:/recsys-encoder@champion`, `models:/recsys-encoder/3`) are
pinned to one version first (an alias moving mid-run changes nothing), and their `bundle` artifact
(logged by `jobs/log_encoder.py`, loaded by `encoders/mlflow_model.py`) is downloaded once into
`cache_dir/<name>/<version>` (atomically: a killed download leaves nothing that looks complete).
Their version string is `<name>/<version>`; a local bundle or training-run folder is versioned by a
hash of its content (and of an outside local base model it refers to). The nightly job, ranker
training, the A/B systems and the service all load encoders here, so they agree on version strings
and on the download cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from encoders.encoding import int8_encoder
from encoders.packaging import EncoderBundle
from recsys.embedding_store import local_encoder_version, registry_encoder_version
from recsys.errors import ConfigError
from recsys.registry import configure_mlflow, resolve

if TYPE_CHECKING:
    from encoders.text_encoder import TextEncoder
    from recsys.config import Settings

BUNDLE_ARTIFACT = "bundle"  # the artifact name encoders/mlflow_model.py loads


@dataclass
class LoadedEncoder:
    """A resolved encoder: the bundle in memory plus what identifies it."""

    bundle: EncoderBundle
    folder: Path  # the bundle (or training run) folder it was loaded from
    version: str  # `<name>/<version>` or `sha256-...`
    ref: str  # what the caller asked for
    model_uri: str | None = None  # pinned `models:/<name>/<version>` for registry encoders
    int8: bool = False

    @property
    def variant(self) -> str | None:
        """Embedding-store variant: int8 vectors are kept apart from fp32 ones of the same encoder."""
        return "int8" if self.int8 else None

    @property
    def text_encoder(self) -> TextEncoder:
        return self.bundle.encoder


def resolve_encoder(
    ref: str | Path,
    *,
    settings: Settings | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
    int8: bool = False,
) -> LoadedEncoder:
    """Load the encoder named by `ref`: an existing local folder, else a registry reference (module doc)."""
    text = str(ref).strip()
    if not text:
        raise ConfigError("--encoder is empty; give a registry reference (champion, models:/...) or a folder")
    path = Path(text).expanduser()
    model_uri = None
    if path.is_dir():
        folder = path.resolve()
        version = local_encoder_version(folder)
    else:
        if path.exists():
            raise ConfigError(f"--encoder {text}: a file, not an encoder folder or registry reference")
        if text.startswith(("/", ".", "~")) or (len(path.parts) > 1 and path.parent.is_dir()):
            raise ConfigError(
                f"--encoder {text}: no such folder (and not a registry reference such as "
                "champion or models:/recsys-encoder@champion)"
            )

        configure_mlflow(settings)
        try:
            resolved = resolve(text, kind="encoder", settings=settings)
        except ConfigError as exc:
            raise ConfigError(f"--encoder {text}: not a local folder, and as a registry reference: {exc}") from None
        folder = _download_bundle(resolved.name, resolved.version, resolved.uri, cache_dir)
        version, model_uri = registry_encoder_version(resolved.name, resolved.version), resolved.uri
    bundle = EncoderBundle.load(folder, device=device)
    if int8:
        bundle.encoder = int8_encoder(bundle.encoder)
    return LoadedEncoder(bundle, folder, version, text, model_uri, int8)


def _download_bundle(name: str, version: int, uri: str, cache_dir: Path | None) -> Path:
    """The `bundle` artifact of a registered encoder version, downloaded once into the cache."""
    # local (c): only a registry download needs mlflow; importing it starts MLflow telemetry
    import mlflow

    # Absolute: MLflow returns absolute paths, and a relative store (the demo's) must compare equal.
    cache_root = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="recsys-encoder-"))
    cache_root = cache_root.resolve()
    target = cache_root / name / str(version)
    if not (target / "artifacts" / BUNDLE_ARTIFACT).is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{version}.*.download"):  # a killed run's half download
            shutil.rmtree(stale, ignore_errors=True)
        work = target.parent / f".{version}.{os.getpid()}.download"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(work)))
        if not (local / "artifacts" / BUNDLE_ARTIFACT).is_dir():
            shutil.rmtree(work, ignore_errors=True)
            raise ConfigError(
                f"{uri} has no '{BUNDLE_ARTIFACT}' artifact: it was not logged by recsys (jobs/log_encoder.py)"
            )
        if local.resolve() != work.resolve():  # pragma: no cover - MLflow returns dst_path for a model URI
            shutil.move(str(local), str(work / "model"))
            local = work / "model"
        shutil.rmtree(target, ignore_errors=True)
        os.replace(local, target)  # appears whole or not at all
        shutil.rmtree(work, ignore_errors=True)
    return target / "artifacts" / BUNDLE_ARTIFACT
