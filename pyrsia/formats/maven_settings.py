"""Credentials from Maven's `settings.xml`: the `<servers>` section, by repository id.

Maven matches a `<server>` to a repository by `<id>`; so does a node, for its own
repositories. `${env.NAME}` in a value is replaced from the environment given, as Maven
does. Maven's encrypted passwords (`{…}`, decrypted with `settings-security.xml`) are
not supported: such a server is returned marked `encrypted`, so the shell can refuse it
with one line when a repository needs it, and ignore it otherwise.

Credentials never appear in a repr, a log line or an error message: `Credentials`
hides its secret from `repr`, and errors here name the file and the server id only.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field

from pyrsia.errors import ConfigError

SERVERS_MAX = 1024
_ENV = re.compile(r"\$\{env\.([A-Za-z_][A-Za-z0-9_]*)\}")
_ENCRYPTED = re.compile(r"^\{[A-Za-z0-9+/=]+\}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """A user and password (HTTP Basic), or only a token (`Authorization: Bearer`)."""

    username: str | None
    secret: str = field(repr=False)
    source: str = ""  # where they came from, for messages: "settings.xml <server> central"
    encrypted: bool = False

    def authorization(self) -> str:
        if self.username is None:
            return f"Bearer {self.secret}"
        raw = f"{self.username}:{self.secret}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    @property
    def who(self) -> str:
        return f"user {self.username!r}" if self.username is not None else "a token"


def servers(text: str, where: str, environ: Mapping[str, str]) -> dict[str, Credentials]:
    """Every `<server>` with an id and a password (or a token as password without a user)."""
    try:
        root = ET.fromstring(text.encode("utf-8"))
    except ET.ParseError as exc:
        raise ConfigError(f"{where} is not well-formed XML ({exc})") from None
    found: dict[str, Credentials] = {}
    for section in (c for c in root if _local(c.tag) == "servers"):
        for server in (c for c in section if _local(c.tag) == "server"):
            values = {_local(c.tag): (c.text or "").strip() for c in server}
            server_id = values.get("id", "")
            password = _interpolate(values.get("password", ""), environ)
            if not server_id or not password:
                continue
            if len(found) >= SERVERS_MAX:
                raise ConfigError(f"{where}: more than {SERVERS_MAX} <server> entries")
            username = _interpolate(values["username"], environ) if values.get("username") else None
            found[server_id] = Credentials(
                username=username,
                secret=password,
                source=f"{where} <server> {server_id}",
                encrypted=bool(_ENCRYPTED.match(password)),
            )
    return found


def credentials_file(text: str, where: str) -> Credentials:
    """A node's own credentials file: one line, `user:password`, or a bare token."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise ConfigError(f"{where} must hold one line: user:password, or a token")
    line = lines[0].strip()
    user, sep, password = line.partition(":")
    if sep and user and password:
        return Credentials(username=user, secret=password, source=where)
    if sep:
        raise ConfigError(f"{where} must hold user:password (both non-empty), or a token")
    return Credentials(username=None, secret=line, source=where)


def _interpolate(value: str, environ: Mapping[str, str]) -> str:
    return _ENV.sub(lambda m: environ.get(m.group(1), ""), value)


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""
