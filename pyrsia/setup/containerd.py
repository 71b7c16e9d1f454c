"""containerd: a `hosts.toml` per registry under the CRI plugin's `config_path`.

containerd's registry host configuration (docs/hosts.md): `<config_path>/<registry>/hosts.toml`
names the registry's own `server` and, as `[host."URL"]`, the mirrors tried before it.
For a mirror containerd adds `?ns=<registry>` to every request, which is how one node
serves many registries. The file is pyrsia's whole: it is written as a unit.

`config_path` is read from containerd's `config.toml` (version 2: the
`io.containerd.grpc.v1.cri` plugin's `registry` table; version 3: `io.containerd.cri.v1.images`).
When it is unset or empty, `DEFAULT_CONFIG_PATH` is set there, editing only that one
line or appending that one table, so the rest of the file keeps its bytes. Only the CRI
plugin reads it: `ctr` takes the directory as `--hosts-dir`.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from pyrsia.errors import ConfigError
from pyrsia.formats.registry_host import DOCKER_IO
from pyrsia.setup.plan import Node

DEFAULT_CONFIG_PATH = "/etc/containerd/certs.d"
RESTART = "systemctl restart containerd"
_REGISTRY_TABLES = {
    2: ("plugins", "io.containerd.grpc.v1.cri", "registry"),
    3: ("plugins", "io.containerd.cri.v1.images", "registry"),
}


def server_of(registry: str) -> str:
    """The registry's own endpoint, where containerd goes when every mirror fails."""
    return "https://registry-1.docker.io" if registry == DOCKER_IO else f"https://{registry}"


def hosts_toml(registry: str, node: Node) -> str:
    return (
        f"# Written by `pyrsia setup containerd`: pulls from {registry} go through the pyrsia node\n"
        f"# at {node.url} first (containerd adds ?ns={registry}), then to the registry itself.\n"
        f'server = "{server_of(registry)}"\n'
        "\n"
        f'[host."{node.url}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML ({exc}); nothing changed") from None


def _table_path(doc: dict[str, Any], where: str) -> tuple[str, ...]:
    version = doc.get("version", 1)
    if version not in _REGISTRY_TABLES:
        raise ConfigError(
            f"{where} is containerd config version {version!r}; pyrsia setup knows versions 2 and 3; "
            "nothing changed"
        )
    return _REGISTRY_TABLES[version]


def config_path_of(config_text: str | None, where: str) -> str | None:
    """The `config_path` the CRI plugin reads hosts.toml files from; None when unset or empty."""
    if config_text is None or not config_text.strip():
        return None
    doc = _parse(config_text, where)
    node: Any = doc
    for key in _table_path(doc, where):
        node = node.get(key) if isinstance(node, dict) else None
    value = node.get("config_path") if isinstance(node, dict) else None
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}: config_path must be a string; nothing changed")
    return value.split(":")[0] or None if value else None


def with_config_path(config_text: str | None, config_path: str, where: str) -> str:
    """`config_text` with the CRI plugin's `config_path` set to `config_path` when it has none.

    An absent or empty file becomes a minimal version 2 config.
    """
    if config_text is None or not config_text.strip():
        table = _header(_REGISTRY_TABLES[2])
        return f"version = 2\n\n{table}\n  config_path = {_string(config_path)}\n"
    if config_path_of(config_text, where) is not None:
        return config_text
    path = _table_path(_parse(config_text, where), where)
    header = _header(path)
    lines = config_text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _is_header(line, header)), None)
    if start is None:
        sep = "" if config_text.endswith("\n") else "\n"
        result = f"{config_text}{sep}\n{header}\n  config_path = {_string(config_path)}\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if re.match(r"\s*\[", lines[i])), len(lines))
        found = next((i for i in range(start + 1, end) if re.match(r"\s*config_path\s*=", lines[i])), None)
        indent = re.match(r"\s*", lines[start]).group(0) + "  "  # type: ignore[union-attr]
        if found is not None:
            indent = re.match(r"\s*", lines[found]).group(0)  # type: ignore[union-attr]
            lines[found] = f"{indent}config_path = {_string(config_path)}\n"
        else:
            lines.insert(start + 1, f"{indent}config_path = {_string(config_path)}\n")
        result = "".join(lines)
    if config_path_of(result, where) != config_path.split(":")[0]:
        raise ConfigError(
            f"{where}: cannot set {header} config_path here; set it to {config_path} by hand; nothing changed"
        )
    return result


def _header(path: tuple[str, ...]) -> str:
    return "[" + ".".join(f'"{key}"' if "." in key else key for key in path) + "]"


def _is_header(line: str, header: str) -> bool:
    return line.split("#", 1)[0].strip().replace(" ", "") == header.replace(" ", "")


def _string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
