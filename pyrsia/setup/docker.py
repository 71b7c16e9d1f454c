"""Docker: the node as the first of `registry-mirrors` in `daemon.json`.

Docker's engine mirrors Docker Hub only (`registry-mirrors` applies to docker.io names;
every other registry is pulled from itself), so this is all `pyrsia setup docker` can do.
The file is JSON: existing keys and mirrors stay (in their order, the node first), and
the file is written back with two-space indentation only when something changed.
`registry-mirrors` is one of the options dockerd reloads on SIGHUP.
"""

from __future__ import annotations

import json
from typing import Any

from pyrsia.errors import ConfigError
from pyrsia.setup.plan import Node

KEY = "registry-mirrors"
RELOAD = "systemctl reload docker  (or: kill -HUP $(pidof dockerd))"


def with_mirror(text: str | None, node: Node, where: str) -> str:
    doc = _parse(text, where)
    mirrors = doc.get(KEY, [])
    if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
        raise ConfigError(f"{where}: {KEY} must be a list of URLs; nothing changed")
    if any(m.rstrip("/") == node.url for m in mirrors):
        return text if text is not None and text.strip() else _dump(doc)
    doc[KEY] = [node.url, *mirrors]
    return _dump(doc)


def _parse(text: str | None, where: str) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} is not valid JSON ({exc}); nothing changed") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where} must hold a JSON object; nothing changed")
    return doc


def _dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"
