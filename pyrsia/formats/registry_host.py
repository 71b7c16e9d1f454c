"""Which registry a Docker name belongs to, and the node's own name for it.

A client names a registry in one of two ways (containerd's registry host config and
docker's reference grammar):
- containerd's mirror request carries `?ns=HOST` and the repository name as that
  registry knows it (`/v2/org/app/manifests/1.0?ns=ghcr.io`);
- otherwise a first path component that is a registry host — it has a dot or a port,
  or is `localhost`, docker's own rule — names the registry (`/v2/ghcr.io/org/app/…`);
  any other first component (`library/…`, `myorg/…`) is a Docker Hub namespace.

Inside the node a repository has one *key*: Docker Hub's names stay as they always
were (`library/alpine`), every other registry's are prefixed with its host
(`ghcr.io/org/app`). Because a Docker Hub namespace never looks like a host, the key
splits back unambiguously, a log written before registries were named reads as Docker
Hub, and `ghcr.io/org/app` and `docker.io/org/app` are different things everywhere a
key is used (records, requests to authorities, the catalog). Docker Hub's `library/`
default applies only to Docker Hub. A host may carry a port (`localhost:5000`,
`registry.example.com:5443`): the port is part of the registry's name, as in docker's
references and containerd's `?ns=`, so a key's first component may hold one `:` (the
only place it can: the name grammar has none), and the tag still follows the last `:`
after the last `/`. A client that can only name a registry by a path component (podman's
mirror `location`, which must stay a valid reference) writes the port after `--`
(`NODE/localhost--5000/app`, `path_component`); no Docker Hub namespace has a `--`, and
the host before it must look like a host, so this too is unambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyrsia.errors import NameInvalid
from pyrsia.formats.reference import NAME_LENGTH_MAX, parse_name

DOCKER_IO = "docker.io"
# Built in, each with its public URL; any other host is added by configuration.
BUILTIN_REGISTRIES: dict[str, str] = {
    DOCKER_IO: "https://registry-1.docker.io",
    "ghcr.io": "https://ghcr.io",
    "quay.io": "https://quay.io",
    "registry.k8s.io": "https://registry.k8s.io",
    "gcr.io": "https://gcr.io",
}
# Docker Hub's other names, as clients and config.json files write them.
_DOCKER_IO_ALIASES = frozenset({"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
HOST_CHARS_MAX = 253
# `host--port` as a path component: a registry with a port where `:` cannot be written.
_PORT_IN_PATH = re.compile(r"(?P<host>[a-z0-9.-]+?)--(?P<port>[0-9]{1,5})")
REGISTRIES_MAX = 64
# A DNS name of lowercase labels (registry hosts are case-insensitive; the key is lowercase).
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")


def looks_like_host(component: str) -> bool:
    """Docker's rule for the first component of a reference: a host has a dot or a port,
    or is `localhost`."""
    return "." in component or ":" in component or component == "localhost"


def normalize_host(raw: str) -> str:
    """`raw` as a registry host key: lowercase, Docker Hub's aliases folded to `docker.io`."""
    host = raw.strip().lower()
    return DOCKER_IO if host in _DOCKER_IO_ALIASES else host


def _valid_host(host: str) -> bool:
    """A DNS name, optionally with a port in 1..65535."""
    name, colon, port = host.partition(":")
    if colon and not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
        return False
    return len(host) <= HOST_CHARS_MAX and _HOST.fullmatch(name) is not None


def check_host(raw: str) -> str:
    """A configurable registry host (a DNS name, with a port or not), normalized, or `NameInvalid`."""
    host = normalize_host(raw)
    if not _valid_host(host):
        raise NameInvalid(f"{raw[:100]!r} is not a registry host name (a DNS name, and a port if any)")
    if not looks_like_host(host):
        raise NameInvalid(f"{raw[:100]!r} is not a registry host: it needs a dot, a port, or to be localhost")
    return host


def path_component(registry: str) -> str:
    """`registry` as a path component: its port, if any, after `--` (`localhost--5000`)."""
    return registry.replace(":", "--")


@dataclass(frozen=True, slots=True, kw_only=True)
class Qualified:
    """A repository: its registry host and its name in that registry."""

    registry: str
    name: str

    @property
    def key(self) -> str:
        """The node's name for it (records, requests to authorities, the catalog)."""
        return self.name if self.registry == DOCKER_IO else f"{self.registry}/{self.name}"

    def __str__(self) -> str:
        return f"{self.registry}/{self.name}"


def split_key(key: str) -> Qualified:
    """A key (already a valid repository name) back into registry and name."""
    first, slash, rest = key.partition("/")
    if slash and looks_like_host(first):
        return Qualified(registry=normalize_host(first), name=rest)
    return Qualified(registry=DOCKER_IO, name=key)


def qualify(path_name: str, ns: str | None) -> Qualified:
    """The repository a request names: `path_name` from the URL, `ns` from `?ns=`.

    Raises `NameInvalid` for a name outside the distribution-spec grammar; whether the
    registry is one this node knows is the caller's question.
    """
    if ns is not None:
        registry = normalize_host(ns)
        if not registry or len(registry) > HOST_CHARS_MAX or not registry.isprintable():
            raise NameInvalid("invalid ns parameter", detail=ns[:100])
        name = path_name
    else:
        first, slash, rest = path_name.partition("/")
        ported = _PORT_IN_PATH.fullmatch(first)
        if slash and ported is not None and looks_like_host(ported["host"]):
            registry, name = f"{ported['host']}:{ported['port']}", rest
        elif slash and looks_like_host(first):
            registry, name = normalize_host(first), rest
        else:
            registry, name = DOCKER_IO, path_name
    if registry == DOCKER_IO:
        if looks_like_host(name.partition("/")[0]) and "/" in name:
            # No Docker Hub namespace looks like a host; as a key it would name that host's
            # repository (`?ns=docker.io` with `/v2/ghcr.io/…` must not be served ghcr.io's).
            raise NameInvalid(
                "a Docker Hub repository name cannot begin with a registry host", detail=name[:200]
            )
        return Qualified(registry=registry, name=parse_name(name))  # `alpine` is `library/alpine`
    if not _valid_host(registry):
        # Still a registry host by docker's rule, but not one a key can carry: no upstream
        # can be configured for it, so the caller refuses it as unknown.
        return Qualified(registry=registry, name=_checked(name))
    qualified = Qualified(registry=registry, name=_checked(name))
    if len(qualified.key) > NAME_LENGTH_MAX:
        raise NameInvalid("repository name too long", detail=qualified.key[:NAME_LENGTH_MAX])
    return qualified


def _checked(name: str) -> str:
    """A name in a registry other than Docker Hub: the grammar, and no `library/` default."""
    parse_name(name)
    return name
