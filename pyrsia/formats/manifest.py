"""Manifest media types, strict parsing into typed descriptors, and content negotiation.

Everything a manifest or index says is checked here, once, before anything uses it:
JSON that parses at all (bounded nesting, UTF-8), `schemaVersion` 2, descriptors whose
`digest` parses (`formats.digest`), whose `size` is a non-negative int64 and whose
`mediaType` is an RFC 6838 name, bounded counts of layers and index entries, string
annotations and platform fields. What fails raises `ManifestInvalid`; the upstream
client turns that into `UpstreamManifestInvalid` (502), because a malformed manifest
from an upstream is the upstream's fault, never the client's.

A stored manifest is served byte for byte (its digest is its identity); negotiation
never rewrites one. The single thing it may do is what Docker Hub does for old
clients: when a tag names a multi-platform index and the client accepts no index
type, answer with the index's linux/amd64 manifest instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pyrsia.errors import DigestInvalid, ManifestInvalid
from pyrsia.formats.digest import Digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ALL_TYPES = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
# OCI image-spec recommends registries accept manifests of at least 4 MiB; we cap there.
MANIFEST_BYTES_MAX = 4 * 1024 * 1024
# An image config is read whole into memory (for its labels); OCI expects it small.
CONFIG_BYTES_MAX = 8 * 1024 * 1024
# Every layer and every index entry becomes a log record and an upstream fetch: bound them.
# (Docker builds stop near 127 layers; real indexes list a few dozen platforms.)
LAYERS_MAX = 1000
INDEX_ENTRIES_MAX = 256
# OCI descriptor: size is an int64.
SIZE_BYTES_MAX = 2**63 - 1
PLATFORM_FIELD_CHARS_MAX = 128
DEFAULT_PLATFORM = ("linux", "amd64")
# RFC 6838 §4.2: type "/" subtype, each a restricted-name of at most 127 characters.
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(rf"{_RESTRICTED_NAME}/{_RESTRICTED_NAME}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Descriptor:
    """A checked OCI descriptor: `digest` is canonical `alg:hex`, `media_type` RFC 6838 or ""."""

    media_type: str
    digest: str
    size: int
    os: str | None = None
    architecture: str | None = None
    variant: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A checked manifest or index: an index has `children`, an image manifest `parts`."""

    media_type: str
    children: tuple[Descriptor, ...] = ()
    parts: tuple[Descriptor, ...] = ()  # config first, then the layers in order
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def load_json(body: bytes, what: str = "manifest") -> object:
    """JSON from an untrusted peer: bad UTF-8, bad syntax and absurd nesting are all `ManifestInvalid`."""
    try:
        return json.loads(body)
    except RecursionError as exc:  # json's C scanner recurses once per nesting level
        raise ManifestInvalid(f"{what} is nested too deeply") from exc
    except ValueError as exc:  # includes UnicodeDecodeError and ints past the digit limit
        raise ManifestInvalid(f"{what} is not JSON") from exc


def parse(body: bytes, declared: str | None = None) -> Manifest:
    """Check a manifest or index whole; its type is its `mediaType` field, else `declared`, else its shape."""
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest is not a JSON object")
    version = doc.get("schemaVersion")
    if type(version) is not int or version != 2:
        raise ManifestInvalid("only schemaVersion 2 manifests are supported")
    if "manifests" in doc and ("config" in doc or "layers" in doc):
        raise ManifestInvalid("manifest is both an index and an image manifest")
    own = doc.get("mediaType")
    if own is not None:
        _media_type(own, "manifest mediaType")
    if own in ALL_TYPES:
        media_type = str(own)
    elif declared in ALL_TYPES:
        media_type = str(declared)
    else:
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    annotations = _annotations(doc.get("annotations"), "manifest")
    if media_type in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ManifestInvalid("index has no manifests list")
        if len(entries) > INDEX_ENTRIES_MAX:
            raise ManifestInvalid(f"index lists {len(entries)} manifests, more than {INDEX_ENTRIES_MAX}")
        children = tuple(_descriptor(e, f"index entry {i}", platform=True) for i, e in enumerate(entries))
        return Manifest(media_type=media_type, children=children, annotations=annotations)
    layers = doc.get("layers", [])
    if not isinstance(layers, list):
        raise ManifestInvalid("manifest layers is not a list")
    if len(layers) > LAYERS_MAX:
        raise ManifestInvalid(f"manifest lists {len(layers)} layers, more than {LAYERS_MAX}")
    if "config" not in doc:
        raise ManifestInvalid("manifest has no config")
    config = _descriptor(doc["config"], "manifest config")
    if config.size > CONFIG_BYTES_MAX:
        raise ManifestInvalid(f"manifest config of {config.size} bytes is larger than {CONFIG_BYTES_MAX}")
    parts = (config, *(_descriptor(e, f"layer {i}") for i, e in enumerate(layers)))
    return Manifest(media_type=media_type, parts=parts, annotations=annotations)


def _descriptor(entry: object, where: str, *, platform: bool = False) -> Descriptor:
    if not isinstance(entry, dict):
        raise ManifestInvalid(f"{where} is not an object")
    media_type = entry.get("mediaType", "")
    if media_type != "":
        _media_type(media_type, f"{where} mediaType")
    raw_digest = entry.get("digest")
    if not isinstance(raw_digest, str):
        raise ManifestInvalid(f"{where} has no digest")
    try:
        digest = Digest.parse(raw_digest)
    except DigestInvalid as exc:
        raise ManifestInvalid(f"{where} has an invalid digest", detail=exc.detail) from exc
    size = entry.get("size")
    # bool is an int subclass; a JSON `true` is no size.
    if type(size) is not int or not 0 <= size <= SIZE_BYTES_MAX:
        raise ManifestInvalid(f"{where} size must be an integer from 0 to {SIZE_BYTES_MAX}")
    _annotations(entry.get("annotations"), where)
    os = architecture = variant = None
    if platform and "platform" in entry:
        found = entry["platform"]
        if not isinstance(found, dict):
            raise ManifestInvalid(f"{where} platform is not an object")
        os, architecture, variant = (
            _platform_field(found, key, where) for key in ("os", "architecture", "variant")
        )
    return Descriptor(
        media_type=str(media_type),
        digest=str(digest),
        size=size,
        os=os,
        architecture=architecture,
        variant=variant,
    )


def _media_type(value: object, where: str) -> str:
    if not isinstance(value, str) or not _MEDIA_TYPE.fullmatch(value):
        shown = value[:80] if isinstance(value, str) else type(value).__name__
        raise ManifestInvalid(f"{where} is not a media type (RFC 6838)", detail=shown)
    return value


def _annotations(value: object, where: str) -> dict[str, str]:
    """OCI image-spec: annotations are a map of string to string."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ManifestInvalid(f"{where} annotations are not a map of strings")
    return dict(value)


def _platform_field(platform: dict[str, object], key: str, where: str) -> str | None:
    value = platform.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > PLATFORM_FIELD_CHARS_MAX:
        raise ManifestInvalid(f"{where} platform {key} is not a short string")
    return value


def media_type_of(body: bytes, declared: str | None = None) -> str:
    """The media type of a manifest that checks out (`parse`)."""
    return parse(body, declared).media_type


def children(body: bytes) -> list[Descriptor]:
    """The platform manifests an index lists."""
    parsed = parse(body)
    if not parsed.is_index:
        raise ManifestInvalid("manifest is not an index")
    return list(parsed.children)


def image_parts(body: bytes) -> list[Descriptor]:
    """A platform manifest's config followed by its layers, in order."""
    parsed = parse(body)
    if parsed.is_index:
        raise ManifestInvalid("an index has no config or layers")
    return list(parsed.parts)


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
