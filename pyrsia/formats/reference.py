"""Repository names and tags, checked against the OCI distribution-spec grammar.

A name is validated before it is used for anything, so `..`, `%2e%2e`, absolute paths
or empty components never reach the disk. Single-component names are normalised to
`library/NAME` as Docker Hub does, so `alpine` and `library/alpine` are one repository.
"""

from __future__ import annotations

import re

from pyrsia.errors import NameInvalid, TagInvalid
from pyrsia.formats.digest import Digest

# distribution-spec: <name> = [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
# Patterns are matched whole (`fullmatch`): `$` would also accept a trailing newline.
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
# distribution-spec: <reference> as a tag = [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
NAME_LENGTH_MAX = 255
# A registry host with a port, as a reference's first component (`localhost:5000`).
_HOST_PORT = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?:[0-9]{1,5}")


def parse_name(raw: str) -> str:
    """Validate a repository name and apply Docker Hub's `library/` default."""
    if len(raw) > NAME_LENGTH_MAX or not _NAME.fullmatch(raw):
        raise NameInvalid("invalid repository name", detail=raw[:NAME_LENGTH_MAX])
    return raw if "/" in raw else f"library/{raw}"


def parse_tag(raw: str) -> str:
    if not _TAG.fullmatch(raw):
        raise TagInvalid("invalid tag", detail=raw[:200])
    return raw


def parse_image_reference(text: str) -> tuple[str, str]:
    """`[HOST/]NAME[:TAG|@DIGEST]` as docker writes it → (the node's repository name, tag
    or digest).

    Docker Hub's host (`docker.io/`, `index.docker.io/`) is dropped: its names are the
    node's names as they are. Any other registry host stays as the first component
    (`ghcr.io/org/app`), which is how the node names that registry's repositories
    (`formats.registry_host`). The tag defaults to `latest`.
    """
    for hub in ("docker.io/", "index.docker.io/"):
        text = text.removeprefix(hub)
    name, at, digest = text.partition("@")
    if at:
        return _key_name(name), str(Digest.parse(digest))
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return _key_name(name[:colon]), parse_tag(name[colon + 1 :])
    return _key_name(name), "latest"


def _key_name(name: str) -> str:
    """A name whose first component may be a registry host with a port (`localhost:5000/app`):
    the port is the one `:` a key may hold, so it is checked apart from the name grammar."""
    first, slash, rest = name.partition("/")
    if slash and _HOST_PORT.fullmatch(first):
        key = f"{first}/{_checked_plain(rest)}"
        if len(key) > NAME_LENGTH_MAX:
            raise NameInvalid("repository name too long", detail=key[:NAME_LENGTH_MAX])
        return key
    return parse_name(name)


def _checked_plain(name: str) -> str:
    """The name grammar without Docker Hub's `library/` default (another registry's name)."""
    if len(name) > NAME_LENGTH_MAX or not _NAME.fullmatch(name):
        raise NameInvalid("invalid repository name", detail=name[:NAME_LENGTH_MAX])
    return name
