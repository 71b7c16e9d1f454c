"""Node configuration: one frozen `Config`, loaded from file, environment and flags.

Precedence, lowest first: built-in defaults, `<home>/pyrsia.toml`, `PYRSIA_*`
environment variables, command-line flags. Every key is declared once in `SETTINGS`
so the file, the environment and `--help` can never disagree about names or types.
Values are validated here; a bad value is a `ConfigError` naming its source.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyrsia.durable import write_atomic
from pyrsia.errors import ConfigError

CONFIG_FILE = "pyrsia.toml"
ENV_PREFIX = "PYRSIA_"
ENV_HOME = "PYRSIA_HOME"
ENV_NODE = "PYRSIA_NODE"
ENV_ADMIN_TOKEN = "PYRSIA_ADMIN_TOKEN"
DEFAULT_NODE_URL = "http://127.0.0.1:7888"
DOCKER_HUB = "https://registry-1.docker.io"
MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2"
LOG_LEVELS = ("debug", "info", "warning", "error")


def default_home(environ: Mapping[str, str] = os.environ) -> Path:
    """`$PYRSIA_HOME`, else the XDG data dir, as DESIGN §4 fixes."""
    if home := environ.get(ENV_HOME):
        return Path(home).expanduser()
    xdg = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "pyrsia"


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything a node needs to start; immutable once loaded."""

    home: Path
    http_host: str = "127.0.0.1"
    http_port: int = 7888
    docker_upstream: str = DOCKER_HUB
    maven_upstream: str = MAVEN_CENTRAL
    maven_metadata_ttl_s: float = 600.0
    log_level: str = "info"
    http_workers_max: int = 64
    http_header_bytes_max: int = 64 * 1024
    http_body_bytes_max: int = 1024 * 1024
    http_header_timeout_s: float = 10.0
    http_idle_timeout_s: float = 60.0
    upstream_timeout_s: float = 60.0
    upstream_retries_max: int = 3

    def __post_init__(self) -> None:
        _check_range("http_port", self.http_port, 0, 65535)
        _check_range("http_workers_max", self.http_workers_max, 1, 4096)
        _check_range("http_header_bytes_max", self.http_header_bytes_max, 1024, 16 * 1024 * 1024)
        _check_range("http_body_bytes_max", self.http_body_bytes_max, 0, 1024 * 1024 * 1024)
        _check_range("http_header_timeout_s", self.http_header_timeout_s, 0.05, 3600)
        _check_range("http_idle_timeout_s", self.http_idle_timeout_s, 0.05, 86400)
        _check_range("upstream_timeout_s", self.upstream_timeout_s, 0.05, 3600)
        _check_range("upstream_retries_max", self.upstream_retries_max, 0, 20)
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
        _check_range("maven_metadata_ttl_s", self.maven_metadata_ttl_s, 0, 30 * 86400)
        check_url("docker_upstream", self.docker_upstream)
        check_url("maven_upstream", self.maven_upstream)
        if not self.http_host:
            raise ConfigError("http_host must not be empty")

    @property
    def http_url(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"


def _check_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key} must be between {low} and {high}, not {value}")


def check_url(key: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key} must be an http:// or https:// URL, not {value!r}")
    return value.rstrip("/")


# Keys a user may set, with their types; `home` is chosen before the file is read.
SETTINGS: dict[str, type] = {f.name: type(f.default) for f in fields(Config) if f.name != "home"}


def _coerce(key: str, raw: Any, source: str) -> Any:
    want = SETTINGS[key]
    try:
        if want is int:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if want is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        if not isinstance(raw, str):
            raise ValueError(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{source}: {key} must be {want.__name__}, not {raw!r}") from None


def read_file(path: Path) -> dict[str, Any]:
    """Parse `pyrsia.toml`; a missing file is an empty config."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        parsed = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    unknown = sorted(set(parsed) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}")
    return {k: _coerce(k, v, str(path)) for k, v in parsed.items()}


def dump_toml(values: Mapping[str, object]) -> str:
    """TOML for flat settings (strings, ints, floats); JSON's string escapes are valid TOML."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in sorted(values.items()))


def set_in_file(home: Path, key: str, raw: object) -> object:
    """Validate one setting and write it to `<home>/pyrsia.toml`; returns the stored value.

    The whole file is re-validated as a `Config` first, so a bad value never lands.
    """
    if key not in SETTINGS:
        raise ConfigError(f"unknown setting {key!r}; known: {', '.join(sorted(SETTINGS))}")
    path = home / CONFIG_FILE
    values = read_file(path)
    values[key] = _coerce(key, raw, key)
    Config(home=home, **values)
    write_atomic(path, dump_toml(values).encode())
    return values[key]


def load(
    home: Path | None = None,
    environ: Mapping[str, str] = os.environ,
    flags: Mapping[str, object] | None = None,
) -> Config:
    """Build the effective `Config`: defaults < file < environment < flags."""
    home = home if home is not None else default_home(environ)
    values: dict[str, Any] = read_file(home / CONFIG_FILE)
    for key in SETTINGS:
        if (raw := environ.get(env_name(key))) is not None:
            values[key] = _coerce(key, raw, env_name(key))
    for key, flag in (flags or {}).items():
        if flag is not None:
            values[key] = _coerce(key, flag, "--" + key.replace("_", "-"))
    return Config(home=home, **values)
