"""The optional TOML configuration file: the same settings as the RAGGLM_* variables.

Looked for in this order: the file named by RAGGLM_CONFIG, ./ragglm.toml, then
$XDG_CONFIG_HOME/ragglm/config.toml (~/.config/ragglm/config.toml). Top-level keys are Settings
fields (model = "smollm2", top_k = 4, ...); a [serve] table holds host, port, api_key and the limits.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ragglm.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["SERVE_KEYS", "find_config_file", "read_config_file", "serve_options_from_file",
           "settings_from_file"]

SERVE_KEYS = {"host": str, "port": int, "api_key": str, "max_tokens_limit": int, "max_body_bytes": int,
              "max_pending": int}


def find_config_file() -> Path | None:
    named = os.environ.get("RAGGLM_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: RAGGLM_CONFIG names a file that does not exist "
                              "(create it or unset RAGGLM_CONFIG)")
        return path
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    for candidate in (Path("ragglm.toml"), config_home / "ragglm" / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


def read_config_file(path: Path | None = None) -> dict:
    path = path or find_config_file()
    if path is None:
        return {}
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax or remove the file") from exc


def settings_from_file(defaults: dict, path: Path | None = None) -> dict:
    """Settings fields from the file, type-checked against their defaults ({field name: default})."""
    path = path or find_config_file()
    data = read_config_file(path)
    values = {}
    for key, value in data.items():
        if key == "serve" and isinstance(value, dict):
            continue
        if key not in defaults:
            raise ConfigError(f"{path}: unknown setting {key!r}; the settings are "
                              f"{', '.join(sorted(defaults))} and a [serve] table")
        default = defaults[key]
        values[key] = _checked(path, key, value, default)
    return values


def serve_options_from_file(path: Path | None = None) -> dict:
    path = path or find_config_file()
    table = read_config_file(path).get("serve", {})
    for key, value in table.items():
        if key not in SERVE_KEYS:
            raise ConfigError(f"{path}: unknown [serve] option {key!r}; use {', '.join(SERVE_KEYS)}")
        if not isinstance(value, SERVE_KEYS[key]) or isinstance(value, bool):
            wanted = "a whole number" if SERVE_KEYS[key] is int else "a string"
            raise ConfigError(f"{path}: [serve] {key} must be {wanted}")
    return dict(table)


def _checked(path: Path, key: str, value, default):
    if default is None or isinstance(default, str):
        ok = isinstance(value, str)
        wanted = "a string"
    elif isinstance(default, bool):
        ok, wanted = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif isinstance(default, float):
        ok, wanted = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        value = float(value) if ok else value
    else:
        ok, wanted = True, ""
    if not ok:
        raise ConfigError(f"{path}: {key} = {value!r} must be {wanted}")
    return value
