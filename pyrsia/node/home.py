"""The node's data directory and the secrets in it.

    <home>/pyrsia.toml       optional config (see pyrsia.config)
    <home>/identity.key      Ed25519 seed, 32 bytes, mode 0600, made on first start
    <home>/admin.token       bearer token for admin API calls, mode 0600
    <home>/blobs/            content-addressed blob store
    <home>/refs/docker/      tag records

Secrets are created with O_EXCL and mode 0600 from the first byte, so there is no
moment at which another user could read them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pyrsia.errors import ConfigError, StorageError
from pyrsia.p2p.identity import SEED_BYTES, Identity

IDENTITY_FILE = "identity.key"
ADMIN_TOKEN_FILE = "admin.token"


def ensure_home(home: Path) -> None:
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StorageError(f"cannot create home directory {home}: {exc.strerror}") from exc


def _read_or_create_secret(path: Path, make: bytes) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as file:
        file.write(make)
        file.flush()
        os.fsync(file.fileno())
    return make


def load_identity(home: Path) -> Identity:
    path = home / IDENTITY_FILE
    seed = _read_or_create_secret(path, secrets.token_bytes(SEED_BYTES))
    if len(seed) != SEED_BYTES:
        raise ConfigError(f"{path} is damaged: expected {SEED_BYTES} bytes, found {len(seed)}")
    return Identity.from_seed(seed)


def load_admin_token(home: Path) -> str:
    path = home / ADMIN_TOKEN_FILE
    token = _read_or_create_secret(path, secrets.token_urlsafe(32).encode()).decode("ascii", "replace")
    if not token.strip():
        raise ConfigError(f"{path} is empty; delete it to make a new token")
    return token.strip()


def read_admin_token(home: Path) -> str | None:
    """The token for a client on the same machine as the node, if it can read it."""
    try:
        return (home / ADMIN_TOKEN_FILE).read_text("ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None
