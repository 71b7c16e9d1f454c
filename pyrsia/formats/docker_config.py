"""Docker's `config.json` credential entries, parsed (pure: bytes in, values out).

What is read (Docker CLI's config file): `auths` maps a registry (`quay.io`,
`https://index.docker.io/v1/`, `http://127.0.0.1:5000`) to `{auth: base64(user:password)}`
or `{identitytoken: …}` (an OAuth2 refresh token, exchanged at the registry's token
realm); `credsStore` and `credHelpers` name external helpers (`docker-credential-NAME`),
which pyrsia does not run: a registry whose credentials live only there is reported
with one line when it asks for a login. Every other key is ignored.

Rules: a secret never appears in an error message, a `repr` or a log line — errors
name the file and the entry, not the value. Each entry's key is normalized to the
registry host it belongs to (scheme, path and Docker Hub's aliases dropped), and the
credential is used for that host only.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pyrsia.errors import CredentialsInvalid
from pyrsia.formats.registry_host import normalize_host

CONFIG_BYTES_MAX = 1024 * 1024
ENTRIES_MAX = 1024
SECRET_CHARS_MAX = 16 * 1024
BASIC = "basic"  # user and password: HTTP basic to the registry, or to its own token realm
IDENTITY = "identity"  # an identity (refresh) token: exchanged at the registry's own token realm
BEARER = "bearer"  # a token sent as it is to the registry itself (a per-upstream token file)


@dataclass(frozen=True, slots=True, kw_only=True)
class Credential:
    """A login for one registry host. `secret` is kept out of `repr`."""

    kind: str
    username: str = ""
    secret: str = field(repr=False)
    origin: str = ""  # where it was read from, for messages: a file name, never the value

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.secret}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerCredentials:
    """What one `config.json` says, by registry host."""

    auths: dict[str, Credential] = field(default_factory=dict)
    helpers: dict[str, str] = field(default_factory=dict)  # host → credHelpers name
    store: str = ""  # credsStore: the helper for every host not in auths or credHelpers
    origin: str = ""

    def for_host(self, host: str) -> Credential | None:
        return self.auths.get(normalize_host(host))

    def helper_for(self, host: str) -> str:
        """The helper that holds `host`'s credentials when `auths` lacks them, or ''."""
        key = normalize_host(host)
        if key in self.auths:
            return ""
        return self.helpers.get(key, self.store)


def registry_key(raw: str) -> str:
    """A config.json `auths` key as the registry host it names."""
    text = raw.strip()
    host = urlsplit(text).netloc if "://" in text else text.partition("/")[0]
    return normalize_host(host)


def parse(data: bytes, origin: str) -> DockerCredentials:
    """The credentials in a config.json; `CredentialsInvalid` naming the entry otherwise."""
    if len(data) > CONFIG_BYTES_MAX:
        raise CredentialsInvalid(f"{origin} is larger than {CONFIG_BYTES_MAX} bytes")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise CredentialsInvalid(f"{origin} is not a JSON document") from None
    if not isinstance(doc, dict):
        raise CredentialsInvalid(f"{origin} is not a JSON object")
    auths = _section(doc, "auths", origin)
    helpers = _section(doc, "credHelpers", origin)
    store = doc.get("credsStore", "")
    if not isinstance(store, str) or not store.isprintable() or len(store) > 100:
        raise CredentialsInvalid(f"{origin}: credsStore must be a helper name")
    found: dict[str, Credential] = {}
    for key, entry in auths.items():
        credential = _credential(key, entry, origin)
        if credential is not None:
            found[registry_key(key)] = credential
    named: dict[str, str] = {}
    for key, helper in helpers.items():
        if not isinstance(helper, str) or not helper.isprintable() or len(helper) > 100:
            raise CredentialsInvalid(f"{origin}: credHelpers.{_shown(key)} must be a helper name")
        named[registry_key(key)] = helper
    return DockerCredentials(auths=found, helpers=named, store=store, origin=origin)


def _section(doc: dict[str, object], name: str, origin: str) -> dict[str, object]:
    section = doc.get(name, {})
    if not isinstance(section, dict):
        raise CredentialsInvalid(f"{origin}: {name} is not an object")
    if len(section) > ENTRIES_MAX:
        raise CredentialsInvalid(f"{origin}: {name} has more than {ENTRIES_MAX} entries")
    return section


def _credential(key: str, entry: object, origin: str) -> Credential | None:
    where = f"{origin}: auths.{_shown(key)}"
    if not isinstance(entry, dict):
        raise CredentialsInvalid(f"{where} is not an object")
    token = entry.get("identitytoken")
    if token:
        if not isinstance(token, str) or not _header_safe(token):
            raise CredentialsInvalid(f"{where}.identitytoken is not a usable token")
        username = entry.get("username", "")
        return Credential(
            kind=IDENTITY, username=username if isinstance(username, str) else "", secret=token, origin=origin
        )
    auth = entry.get("auth")
    if not auth:
        return None  # an entry `docker login` left for a helper, or emptied by logout
    if not isinstance(auth, str) or len(auth) > SECRET_CHARS_MAX:
        raise CredentialsInvalid(f"{where}.auth is not a base64 string")
    try:
        decoded = base64.b64decode(auth, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise CredentialsInvalid(f"{where}.auth is not base64 of user:password") from None
    username, colon, password = decoded.partition(":")
    if not colon or not username or not password or not decoded.isprintable():
        raise CredentialsInvalid(f"{where}.auth is not base64 of user:password")
    return Credential(kind=BASIC, username=username, secret=password, origin=origin)


def bearer_token(data: bytes, origin: str) -> Credential:
    """A per-upstream token file: one token (surrounding whitespace dropped)."""
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CredentialsInvalid(f"{origin} is not a text file holding a token") from None
    if not token or not _header_safe(token):
        raise CredentialsInvalid(f"{origin} does not hold a token (one line of printable characters)")
    return Credential(kind=BEARER, secret=token, origin=origin)


def _header_safe(text: str) -> bool:
    return 0 < len(text) <= SECRET_CHARS_MAX and text.isascii() and text.isprintable() and " " not in text


def _shown(key: object) -> str:
    text = str(key)
    return text[:100] if text.isprintable() else repr(text[:100])
