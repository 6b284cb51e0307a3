"""MLflow glue: where the store is, what models are called, and which version an alias means.

Conventions this module owns, so jobs, the service and the A/B scripts agree on them:
- registered models are `<prefix>-encoder` and `<prefix>-ranker`;
- versions are promoted with *aliases* (`champion` serves, `challenger` is under test), never with
  the deprecated stages;
- a model reference is one of `models:/<name>@<alias>`, `models:/<name>/<version>`,
  `models:/<name>/latest`, `<name>@<alias>`, `<name>/<version>`, or, given the kind, a bare alias (`champion`) or a
  bare version number (`3`); `resolve` turns any of them into a pinned `models:/<name>/<version>`,
  so a caller that loads the model is not surprised by an alias moving halfway through;
- a reference that names nothing raises `ConfigError` saying what *does* exist.

Ground floor: imports nothing from encoders/ranking/jobs; mlflow is imported inside functions so
that importing this module (the CLI's start, the service's start) stays cheap.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from recsys.config import MODEL_KINDS, Settings, load_settings, sqlite_file
from recsys.errors import ConfigError

if TYPE_CHECKING:
    from mlflow import MlflowClient

ALIASES = ("champion", "challenger")
# MLflow's own alias rule (letters, digits, '_' and '-'), plus a leading letter; 'latest' and 'v<N>'
# are reserved by MLflow because they would collide with version references.
_ALIAS = re.compile(r"^[A-Za-z][\w-]{0,254}$")
_RESERVED_ALIAS = re.compile(r"^(latest|[vV]\d+)$", re.IGNORECASE)

# The settings chosen by the last `configure_mlflow` call: later registry calls without explicit
# settings use the same store, instead of silently re-reading the environment.
_active: Settings | None = None


@dataclass(frozen=True)
class ResolvedModel:
    """A registered model version pinned by number; `uri` loads exactly this version."""

    name: str
    version: int
    uri: str
    run_id: str | None
    alias: str | None = None


# ------------------------------------------------------------------------------------ settings
def configure_mlflow(settings: Settings | None = None) -> str:
    """Point MLflow's tracking and registry at `settings`' store; create local folders; return the URI.

    The embedded default needs its work dir and artifact folder to exist before SQLite and the
    artifact repository touch them. Also remembered as the active settings for this module.
    """
    # local (c): keeps mlflow out of `import recsys.registry` (tests/test_registry.py guards it)
    import mlflow

    global _active
    settings = settings or load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    if settings.artifact_root is not None:
        settings.artifact_root.mkdir(parents=True, exist_ok=True)
        # The first use of a fresh SQLite store runs schema migrations that log a dozen INFO lines.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    _prepare_store(settings)
    uri = settings.mlflow_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _active = settings
    return uri


def tracking_uri(settings: Settings | None = None) -> str:
    """The MLflow URI recsys reads and writes (`RECSYS_HOME`'s SQLite file unless `MLFLOW_TRACKING_URI` is set).

    For a plain Python session that loads registered models itself: MLflow alone would look in
    `./mlflow.db` of the current folder and not find them. `configure_mlflow()` sets it in one call.
    """
    return (settings or active_settings()).mlflow_uri


def active_settings() -> Settings:
    """The settings of the last `configure_mlflow` call, else those from the environment."""
    return _active if _active is not None else load_settings()


def model_name(kind: str, prefix: str | None = None) -> str:
    """Registered-model name for a kind: `model_name("encoder", "recsys") == "recsys-encoder"`."""
    if kind not in MODEL_KINDS:
        raise ConfigError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    return f"{prefix if prefix is not None else active_settings().prefix}-{kind}"


def ensure_experiment(name: str, settings: Settings | None = None) -> str:
    """Id of experiment `name`, created if missing.

    When MLflow talks to a database itself (the embedded store, another SQLite file, a database URI),
    a new experiment's artifacts go to `<settings.artifact_root>/<name>`; without that, MLflow would
    put them in `./mlruns` under whatever the current directory is. A tracking server decides
    artifact locations itself (its `--artifacts-destination` / `--default-artifact-root`).
    """
    settings = settings or active_settings()
    if not name or not name.strip():
        raise ConfigError("experiment name is empty")
    client = _client(settings)
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise ConfigError(
                f"experiment '{name}' exists but is deleted in {_safe_uri(settings.mlflow_uri)}; "
                "restore it (mlflow experiments restore) or choose another name"
            )
        return str(found.experiment_id)
    location = None
    if settings.artifact_root is not None:
        folder = settings.artifact_root / re.sub(r"[^\w.-]", "_", name.strip())
        folder.mkdir(parents=True, exist_ok=True)
        location = folder.as_uri()
    return str(client.create_experiment(name, artifact_location=location))


# ------------------------------------------------------------------------------------- aliases
def set_alias(name: str, version: int | str, alias: str, settings: Settings | None = None) -> ResolvedModel:
    """Point `alias` of registered model `name` at `version` (moving it if it pointed elsewhere)."""
    check_alias(alias)
    client = _client(settings or active_settings())
    resolved = _get_version(client, name, _version_number(version), settings)
    client.set_registered_model_alias(name, alias, str(resolved.version))
    return ResolvedModel(resolved.name, resolved.version, resolved.uri, resolved.run_id, alias)


def check_alias(alias: str) -> str:
    """Return `alias` if MLflow accepts it as an alias name, else a `ConfigError` saying why."""
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise ConfigError(
            f"alias {alias!r} is not valid: start with a letter, then letters, digits, '_' or '-' "
            f"(the conventional ones are {', '.join(ALIASES)})"
        )
    if _RESERVED_ALIAS.match(alias):
        raise ConfigError(f"alias {alias!r} is reserved by MLflow ('latest' and 'v<number>' name versions)")
    return alias


# ------------------------------------------------------------------------------------ resolving
def resolve(ref: str, kind: str | None = None, settings: Settings | None = None) -> ResolvedModel:
    """Turn a model reference (see module doc) into a pinned version, or a `ConfigError`.

    `kind` ("encoder" / "ranker") is needed only for bare aliases and bare version numbers, which
    then refer to `<prefix>-<kind>`.
    """
    settings = settings or active_settings()
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError("model reference is empty; use e.g. 'champion', 'models:/recsys-encoder@champion'")
    text = ref.strip()
    body = text[len("models:/") :] if text.startswith("models:/") else None
    if body is not None or "@" in text or "/" in text:
        body = body if body is not None else text
        if "@" in body:
            name, _, alias = body.partition("@")
            return _by_alias(name, alias, settings, ref)
        name, slash, version = body.rpartition("/")
        if not slash or not name:
            raise ConfigError(f"model reference '{ref}': expected models:/<name>@<alias> or models:/<name>/<version>")
        return _by_version(name, version, settings, ref)
    if kind is None:
        raise ConfigError(
            f"model reference '{ref}' is a bare alias or version; say which model it belongs to "
            f"(kind {' or '.join(MODEL_KINDS)}), or write it as models:/<name>@<alias>"
        )
    name = settings.model_name(kind)
    if text.isdigit() or text == "latest":
        return _by_version(name, text, settings, ref)
    return _by_alias(name, text, settings, ref)


def resolve_alias(kind: str, alias: str, settings: Settings | None = None) -> ResolvedModel:
    """The version behind `alias` of `<prefix>-<kind>`."""
    settings = settings or active_settings()
    return _by_alias(settings.model_name(kind), alias, settings, alias)


def _by_alias(name: str, alias: str, settings: Settings, ref: str) -> ResolvedModel:
    if not name or not alias:
        raise ConfigError(f"model reference '{ref}': both a model name and an alias are needed (name@alias)")
    # local (c): keeps mlflow out of `import recsys.registry` (tests/test_registry.py guards it)
    from mlflow.exceptions import MlflowException

    client = _client(settings)
    try:
        found = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        model = _registered_model(client, name, settings)
        raise ConfigError(
            f"model '{name}' has no alias '{alias}' (reference '{ref}'); {_describe(client, model)}"
        ) from None
    return ResolvedModel(name, int(found.version), f"models:/{name}/{found.version}", found.run_id, alias)


def _by_version(name: str, version: str, settings: Settings, ref: str) -> ResolvedModel:
    client = _client(settings)
    if version == "latest":
        model = _registered_model(client, name, settings)
        versions = _versions(client, model.name)
        if not versions:
            raise ConfigError(f"model '{name}' has no versions yet (reference '{ref}')")
        return _get_version(client, name, max(versions), settings)
    return _get_version(client, name, _version_number(version, ref), settings)


def _get_version(client: MlflowClient, name: str, version: int, settings: Settings | None) -> ResolvedModel:
    # local (c): keeps mlflow out of `import recsys.registry` (tests/test_registry.py guards it)
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_model_version(name, str(version))
    except MlflowException:
        model = _registered_model(client, name, settings or active_settings())
        raise ConfigError(f"model '{name}' has no version {version}; {_describe(client, model)}") from None
    return ResolvedModel(name, int(found.version), f"models:/{name}/{found.version}", found.run_id)


def _registered_model(client: MlflowClient, name: str, settings: Settings) -> Any:
    """The registered model, or a ConfigError listing the registered models that do exist."""
    # local (c): keeps mlflow out of `import recsys.registry` (tests/test_registry.py guards it)
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            safe = _safe_uri(settings.mlflow_uri)
            detail = str(exc.message).replace(settings.mlflow_uri, safe)  # keep credentials out of logs
            raise ConfigError(f"MLflow at {safe} failed: {detail}") from None
        names = sorted(m.name for m in client.search_registered_models(max_results=100))
        known = ", ".join(names) if names else "none yet (train and log one first, e.g. `recsys train-encoder`)"
        raise ConfigError(
            f"registered model '{name}' does not exist in {_safe_uri(settings.mlflow_uri)}; registered models: {known}"
        ) from None


def _versions(client: MlflowClient, name: str) -> list[int]:
    return sorted(int(v.version) for v in client.search_model_versions(f"name='{_quote(name)}'"))


def _describe(client: MlflowClient, model: Any) -> str:
    aliases = ", ".join(f"{a} -> v{v}" for a, v in sorted(dict(model.aliases).items())) or "none"
    versions = ", ".join(str(v) for v in _versions(client, model.name)) or "none"
    return f"aliases: {aliases}; versions: {versions}"


def _version_number(version: int | str, ref: str | None = None) -> int:
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        where = f"model reference '{ref}': " if ref else ""
        raise ConfigError(f"{where}version must be a positive integer or 'latest', got {version!r}")
    return int(text)


def _client(settings: Settings) -> MlflowClient:
    # local (c): keeps mlflow out of `import recsys.registry` (tests/test_registry.py guards it)
    from mlflow import MlflowClient

    if settings.embedded:
        settings.home.mkdir(parents=True, exist_ok=True)
    _prepare_store(settings)
    return MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)


def _prepare_store(settings: Settings) -> None:
    """Create a SQLite store recsys talks to with its artifact root, before MLflow creates it its own way.

    MLflow creates a new database with a 'Default' experiment (id 0) whose artifacts go to `./mlruns/0`
    of the current folder, fixed forever in the database; `mlflow run` without an experiment and
    plain `mlflow.start_run()` log there. Creating the schema here, with the artifact root, puts that
    experiment beside the others. A store that exists is left as it is; servers are not touched.
    """
    root = settings.artifact_root
    database = settings.db_path if settings.embedded else sqlite_file(settings.mlflow_uri)
    if root is None or database is None or database.exists():
        return
    # local (c): keeps mlflow out of `import recsys.registry` (tests/test_registry.py guards it)
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    database.parent.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a dozen INFO lines of schema migrations
    SqlAlchemyStore(settings.mlflow_uri, root.as_uri())


def _quote(name: str) -> str:
    return name.replace("'", "\\'")


def _safe_uri(uri: str) -> str:
    """The URI for messages, without any user:password part."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return uri
