"""Where recsys keeps its state and which MLflow it talks to: one small settings object.

Why a settings object and not module-level constants: tests, the CLI and a host application each
need their own working directory and tracking store in the same process, so every function that
touches the store takes (or falls back to) a `Settings` value instead of reading globals.

Resolution order, highest first:
- explicit arguments to `load_settings(...)` (a CLI option, a host application's configuration);
- environment: `RECSYS_HOME` (work dir), `RECSYS_PREFIX` (registered-model name prefix),
  `MLFLOW_TRACKING_URI` (a real MLflow server or any store MLflow understands);
- defaults: work dir `./.recsys`, prefix `recsys`, and the *embedded* store: SQLite tracking and
  registry at `<work dir>/mlflow.db` with artifacts under `<work dir>/mlartifacts`. A tracking URI
  that names that very SQLite file (absolute or relative to the current folder) is the embedded store
  too (MLflow exports the URI it was given, and `mlflow ui` users paste the relative form).

Where experiment artifacts go (`Settings.artifact_root`), so that no command litters the folder it is
run from with MLflow's default `./mlruns`:
- embedded store: `<work dir>/mlartifacts`;
- any other SQLite file: `mlartifacts` beside that file (the database and its files travel together);
- another database URI used directly (postgresql://, mysql://, mssql://): `<work dir>/mlartifacts`;
- a tracking server (http://, https://, databricks) or a file store: `None`, the server (or store)
  decides, e.g. `mlflow server --artifacts-destination ...`.

This module is ground floor and import-light: no mlflow, no torch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from recsys.errors import ConfigError

DEFAULT_HOME = ".recsys"
DEFAULT_PREFIX = "recsys"
HOME_ENV = "RECSYS_HOME"
PREFIX_ENV = "RECSYS_PREFIX"
TRACKING_ENV = "MLFLOW_TRACKING_URI"
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"

# SQLAlchemy dialects MLflow accepts as a tracking store (mlflow.store.db.db_types), without importing
# mlflow here: a URI with one of these schemes (optionally `+driver`) is a database used directly, so
# nobody but recsys chooses where its experiments' artifacts go.
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")

# Registered-model names become parts of `models:/<name>@<alias>` URIs and of file paths, so the
# prefix is kept to characters that survive both; '@' and '/' would make URIs ambiguous.
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Settings:
    """Resolved settings. `tracking_uri=None` means the embedded SQLite store under `home`."""

    home: Path
    prefix: str = DEFAULT_PREFIX
    tracking_uri: str | None = None

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ConfigError(
                f"model-name prefix {self.prefix!r} is not valid: use letters, digits, '.', '_' or '-' "
                f"(set it with {PREFIX_ENV} or --prefix)"
            )
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())
        if self.tracking_uri is not None and (
            not self.tracking_uri.strip()
            or self.tracking_uri.strip() == self._embedded_uri()
            or sqlite_file(self.tracking_uri) == self.db_path
        ):
            # `configure_mlflow` exports the embedded store's URI to MLFLOW_TRACKING_URI (MLflow does, for
            # child processes), and a user may export the `mlflow ui` form `sqlite:///.recsys/mlflow.db`;
            # read back, either is still the embedded store, not an external one.
            object.__setattr__(self, "tracking_uri", None)

    @property
    def embedded(self) -> bool:
        """True when no tracking URI was given and the SQLite store under `home` is used."""
        return self.tracking_uri is None

    @property
    def db_path(self) -> Path:
        """The embedded SQLite file (meaningful only when `embedded`)."""
        return self.home / DB_FILE

    @property
    def database(self) -> bool:
        """True when MLflow talks to a database itself (embedded or not) rather than to a server.

        Then MLflow's own default for a new experiment's artifacts is `./mlruns` of whatever folder
        the command runs in, so recsys must name the location (see `artifact_root`).
        """
        return self.tracking_uri is None or _scheme(self.tracking_uri) in DATABASE_SCHEMES

    @property
    def artifact_root(self) -> Path | None:
        """Folder under which experiments created by recsys store their files; `None`: the server decides.

        See the module doc: beside the SQLite file, else under `home`; `None` for a tracking server
        or a file store, which have an artifact root of their own.
        """
        if not self.database:
            return None
        database = sqlite_file(self.tracking_uri) if self.tracking_uri is not None else self.db_path
        return (database.parent if database is not None else self.home) / ARTIFACTS_DIR

    @property
    def mlflow_uri(self) -> str:
        """The tracking (and registry) URI to hand to MLflow."""
        return self.tracking_uri if self.tracking_uri is not None else self._embedded_uri()

    def _embedded_uri(self) -> str:
        # An absolute path gives sqlite:////abs/path (four slashes), which SQLAlchemy reads as absolute.
        return f"sqlite:///{self.db_path.as_posix()}"

    def model_name(self, kind: str) -> str:
        """`<prefix>-encoder` or `<prefix>-ranker`: the registered model names."""
        if kind not in MODEL_KINDS:
            raise ConfigError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
        return f"{self.prefix}-{kind}"


MODEL_KINDS = ("encoder", "ranker")


def sqlite_file(uri: str) -> Path | None:
    """The absolute database file a `sqlite://` URI names; `None` for other URIs and in-memory databases.

    A relative path is relative to the current folder, as SQLAlchemy opens it.
    """
    text = uri.strip()
    if _scheme(text) != "sqlite" or "///" not in text:
        return None
    path = unquote(text.split("///", 1)[1].split("?", 1)[0])
    if not path or path == ":memory:":
        return None
    return Path(path).expanduser().resolve()


def _scheme(uri: str) -> str:
    """`postgresql` for `postgresql+psycopg2://...`; empty for a plain path."""
    scheme, sep, _ = uri.strip().partition("://")
    return scheme.split("+", 1)[0].lower() if sep else ""


def load_settings(
    home: str | Path | None = None,
    prefix: str | None = None,
    tracking_uri: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from explicit values, else the environment, else the defaults (see module doc)."""
    env = os.environ if environ is None else environ
    return Settings(
        home=Path(home if home is not None else env.get(HOME_ENV) or DEFAULT_HOME),
        prefix=prefix if prefix is not None else env.get(PREFIX_ENV) or DEFAULT_PREFIX,
        tracking_uri=tracking_uri if tracking_uri is not None else env.get(TRACKING_ENV) or None,
    )
