"""The client's own settings: which node to talk to, and how to print results.

Stored in `$XDG_CONFIG_HOME/pyrsia/client.toml` (default `~/.config/pyrsia/`).
Precedence for each: command-line flag, then environment (`PYRSIA_NODE`), then this
file, then the built-in default.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

from pyrsia.config import DEFAULT_NODE_URL, check_url, dump_toml
from pyrsia.durable import write_atomic
from pyrsia.errors import ConfigError, UsageError

OUTPUTS = ("table", "json")


def _check_output(value: str) -> str:
    if value not in OUTPUTS:
        raise ConfigError(f"output must be one of {', '.join(OUTPUTS)}, not {value!r}")
    return value


KEYS: dict[str, tuple[str, Callable[[str], str]]] = {
    "node": (DEFAULT_NODE_URL, lambda v: check_url("node", v)),
    "output": ("table", _check_output),
}


def path(environ: Mapping[str, str] = os.environ) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pyrsia" / "client.toml"


def load(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Every client setting, defaults filled in."""
    file = path(environ)
    try:
        stored = tomllib.loads(file.read_text("utf-8"))
    except FileNotFoundError:
        stored = {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{file}: {exc}") from exc
    values = {key: default for key, (default, _check) in KEYS.items()}
    for key, value in stored.items():
        if key not in KEYS:
            raise ConfigError(f"{file}: unknown key {key!r}")
        values[key] = KEYS[key][1](str(value))
    return values


def save(key: str, value: str, environ: Mapping[str, str] = os.environ) -> str:
    if key not in KEYS:
        raise ConfigError(f"unknown client setting {key!r}; known: {', '.join(KEYS)}")
    values = load(environ)
    values[key] = KEYS[key][1](value)
    stored = {k: v for k, v in values.items() if v != KEYS[k][0]}
    write_atomic(path(environ), dump_toml(stored).encode())
    return values[key]


def node_url(flag: str | None) -> str:
    """The node to talk to; `--node HOST:PORT` (no scheme) is refused with the URL it meant."""
    if not flag:
        return load()["node"]
    if "://" not in flag:
        raise UsageError(f"--node takes a URL, not {flag!r}: did you mean http://{flag}?")
    return check_url("--node", flag)


def wants_json(flag: bool | None) -> bool:
    return flag if flag is not None else load()["output"] == "json"
