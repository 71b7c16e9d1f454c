"""What `pyrsia setup` would change: files before and after, and what the user must do next.

A plan is plain data. The shell renders it as a unified diff (`--dry-run`) or writes it;
a change whose text is already the file's is no change and is never written.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from urllib.parse import urlsplit

from pyrsia.errors import ConfigError, NameInvalid
from pyrsia.formats.registry_host import BUILTIN_REGISTRIES, check_host

# The registries a client can choose by name; any other host is taken as given.
KNOWN_REGISTRIES = tuple(BUILTIN_REGISTRIES)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileChange:
    """One file: its text now (None: absent) and the text it should hold."""

    path: str
    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    tool: str
    changes: tuple[FileChange, ...]
    # What makes the tool read the new files ("" when its next run does), and why.
    restart: str = ""
    notes: tuple[str, ...] = ()

    @property
    def changed(self) -> tuple[FileChange, ...]:
        return tuple(change for change in self.changes if change.changed)


def diff(change: FileChange) -> str:
    """A unified diff of one change; empty when it changes nothing."""
    if not change.changed:
        return ""
    before = "" if change.before is None else change.before
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        change.after.splitlines(keepends=True),
        fromfile="/dev/null" if change.before is None else f"a{change.path}",
        tofile=f"b{change.path}",
    )
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """The node a tool is pointed at: `http://127.0.0.1:7888` as URL, scheme and host:port."""

    url: str
    scheme: str
    hostport: str

    @property
    def insecure(self) -> bool:
        return self.scheme == "http"


def node_of(url: str) -> Node:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(
            f"--node must be a node's base URL such as http://127.0.0.1:7888, not {url[:200]!r}"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"--node must be a plain http(s)://HOST:PORT URL, not {url[:200]!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"--node has a bad port: {url[:200]!r}") from None
    hostport = parts.netloc.lower()
    return Node(url=f"{parts.scheme}://{hostport}", scheme=parts.scheme, hostport=hostport)


def registry_of(name: str) -> str:
    """A registry host as clients name it (`docker.io`, `ghcr.io`, `registry.example.com:5000`)."""
    try:
        return check_host(name)
    except NameInvalid as exc:
        raise ConfigError(f"{exc.message}, such as docker.io or ghcr.io") from None
