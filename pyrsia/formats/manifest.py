"""Manifest media types, detection from bytes, and content negotiation.

A stored manifest is served byte for byte (its digest is its identity); negotiation
never rewrites one. The single thing it may do is what Docker Hub does for old
clients: when a tag names a multi-platform index and the client accepts no index
type, answer with the index's linux/amd64 manifest instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from pyrsia.errors import ManifestInvalid

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ALL_TYPES = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
# OCI image-spec recommends registries accept manifests of at least 4 MiB; we cap there.
MANIFEST_BYTES_MAX = 4 * 1024 * 1024
DEFAULT_PLATFORM = ("linux", "amd64")


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    os: str | None = None
    architecture: str | None = None
    variant: str | None = None


def _parse(body: bytes) -> dict[str, object]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestInvalid("manifest is not JSON") from exc
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise ManifestInvalid("only schemaVersion 2 manifests are supported")
    return doc


def media_type_of(body: bytes, declared: str | None = None) -> str:
    """The manifest's media type: its own `mediaType` field, else the declared one, else its shape."""
    doc = _parse(body)
    field = doc.get("mediaType")
    if isinstance(field, str) and field in ALL_TYPES:
        return field
    if declared in ALL_TYPES:
        return declared
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def children(body: bytes) -> list[Descriptor]:
    """The platform manifests an index lists."""
    doc = _parse(body)
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise ManifestInvalid("index has no manifests list")
    out: list[Descriptor] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ManifestInvalid("index entry is not an object")
        platform = entry.get("platform") if isinstance(entry.get("platform"), dict) else {}
        assert isinstance(platform, dict)
        out.append(
            Descriptor(
                media_type=str(entry.get("mediaType", "")),
                digest=str(entry.get("digest", "")),
                size=int(entry.get("size", 0)),
                os=platform.get("os"),
                architecture=platform.get("architecture"),
                variant=platform.get("variant"),
            )
        )
    return out


def image_parts(body: bytes) -> list[Descriptor]:
    """A platform manifest's config followed by its layers, in order."""
    doc = _parse(body)
    entries = [doc.get("config"), *(doc.get("layers") or [])]  # type: ignore[misc]
    parts: list[Descriptor] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            raise ManifestInvalid("manifest config or layer lacks a digest")
        parts.append(Descriptor(str(entry.get("mediaType", "")), entry["digest"], int(entry.get("size", 0))))
    return parts


def accepts(accept: Sequence[str], media_type: str) -> bool:
    """Whether an Accept list admits a media type (an empty list admits anything)."""
    if not accept:
        return True
    for item in accept:
        kind = item.split(";", 1)[0].strip().lower()
        if kind in (media_type, "*/*", "application/*"):
            return True
    return False


def wants_platform_manifest(accept: Sequence[str], stored_type: str) -> bool:
    """True when the client cannot take the stored index but can take a single manifest."""
    if stored_type not in INDEX_TYPES or not accept:
        return False
    if any(accepts(accept, t) for t in INDEX_TYPES):
        return False
    return any(accepts(accept, t) for t in MANIFEST_TYPES)


def pick_platform(index: bytes, os: str = DEFAULT_PLATFORM[0], arch: str = DEFAULT_PLATFORM[1]) -> Descriptor:
    for child in children(index):
        if child.os == os and child.architecture == arch:
            return child
    raise ManifestInvalid(f"index has no {os}/{arch} manifest")
