"""The Maven repository layout: paths ⇄ coordinates, checked before anything touches disk.

    <groupId as dirs>/<artifactId>/<version>/<artifactId>-<version>[-<classifier>].<extension>
    <groupId as dirs>[/<artifactId>[/<version>]]/maven-metadata.xml
    any of those + .sha1 | .md5 | .sha256 | .sha512   (checksum sidecars)

Segments, file names included, are limited to the characters Maven itself accepts in
ids and versions, so `..`, `%2e%2e` (already decoded by the server), absolute paths,
empty segments and characters that would change the upstream URL (`?`, `#`, `%`) or
cannot be a file name (NUL) are refused with a one-line reason, as is the checksum of a
checksum (`.jar.sha1.sha1`). Snapshot files (`app-1.0-20240101.120000-1.jar` in
`1.0-SNAPSHOT/`) are accepted too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyrsia.errors import MavenPathInvalid

CHECKSUMS = ("sha1", "md5", "sha256", "sha512")
METADATA_FILE = "maven-metadata.xml"
PATH_LENGTH_MAX = 1024
# Matched whole with `fullmatch`: `$` would also accept a trailing newline.
_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_VERSION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-+]*")
_EXTENSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.]*")
_CONTENT_TYPES = {
    "jar": "application/java-archive",
    "war": "application/java-archive",
    "ear": "application/java-archive",
    "pom": "application/xml",
    "xml": "application/xml",
    "module": "application/json",
    "json": "application/json",
    "asc": "text/plain",
    "zip": "application/zip",
    "gz": "application/gzip",
}


@dataclass(frozen=True, slots=True)
class MavenPath:
    """One file of a Maven repository (`path` is without any checksum suffix)."""

    path: str
    group: str
    artifact: str | None
    version: str | None
    checksum: str | None = None

    @property
    def is_metadata(self) -> bool:
        return self.path.rsplit("/", 1)[-1] == METADATA_FILE

    @property
    def content_type(self) -> str:
        if self.checksum:
            return "text/plain"
        return _CONTENT_TYPES.get(self.path.rsplit(".", 1)[-1], "application/octet-stream")


def _check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.fullmatch(value) or value in (".", ".."):
        raise MavenPathInvalid(f"invalid {what} {value[:100]!r} in Maven path")
    return value


def parse_path(raw: str) -> MavenPath:
    if len(raw) > PATH_LENGTH_MAX:
        raise MavenPathInvalid(f"Maven path longer than {PATH_LENGTH_MAX} characters")
    checksum = None
    for algorithm in CHECKSUMS:
        if raw.endswith("." + algorithm):
            raw, checksum = raw[: -len(algorithm) - 1], algorithm
            break
    if checksum and raw.endswith(tuple("." + algorithm for algorithm in CHECKSUMS)):
        # Sidecars are computed from the bytes held, never fetched as files of their own.
        raise MavenPathInvalid("a checksum of a checksum file is not part of a Maven repository")
    segments = raw.split("/")
    if len(segments) < 2 or any(not s for s in segments):
        raise MavenPathInvalid("not a Maven repository path")
    *dirs, filename = segments
    for segment in dirs:
        _check(_VERSION, segment, "path segment")
    # The whole name, classifier and extension included, keeps to the id characters: the
    # path goes into a record's file name and the upstream URL exactly as it is.
    _check(_VERSION, filename, "file name")
    if filename == METADATA_FILE:
        # group-level, artifact-level or snapshot-version metadata: the path says which only
        # by what the repository holds, so all three are one kind here.
        return MavenPath(path=raw, group=".".join(dirs), artifact=None, version=None, checksum=checksum)
    if len(dirs) < 3:
        raise MavenPathInvalid("an artifact path needs group, artifactId and version directories")
    *group, artifact, version = dirs
    for segment in group:
        _check(_ID, segment, "groupId part")
    _check(_ID, artifact, "artifactId")
    _check(_VERSION, version, "version")
    stem = f"{artifact}-{version.removesuffix('-SNAPSHOT')}"
    if not filename.startswith(stem) or len(filename) == len(stem):
        raise MavenPathInvalid(f"file {filename[:100]!r} does not belong to {artifact} {version}")
    rest = filename[len(stem) :]
    if version.endswith("-SNAPSHOT") and rest.startswith("-SNAPSHOT"):
        rest = rest[len("-SNAPSHOT") :]
    if rest[0] not in ".-" or not _EXTENSION.fullmatch(rest.rsplit(".", 1)[-1]):
        raise MavenPathInvalid(f"file {filename[:100]!r} has no extension")
    return MavenPath(path=raw, group=".".join(group), artifact=artifact, version=version, checksum=checksum)


@dataclass(frozen=True, slots=True)
class Coordinates:
    """`groupId:artifactId[:extension[:classifier]]:version`, Maven's own notation."""

    group: str
    artifact: str
    version: str
    extension: str = "jar"
    classifier: str = ""

    @classmethod
    def parse(cls, text: str) -> Coordinates:
        parts = text.split(":")
        if len(parts) not in (3, 4, 5):
            raise MavenPathInvalid(
                f"{text!r} is not GROUP:ARTIFACT[:EXTENSION[:CLASSIFIER]]:VERSION", detail=text[:200]
            )
        group, artifact, *middle, version = parts
        extension = middle[0] if middle else "jar"
        classifier = middle[1] if len(middle) > 1 else ""
        for segment in group.split("."):
            _check(_ID, segment, "groupId part")
        _check(_ID, artifact, "artifactId")
        _check(_VERSION, version, "version")
        _check(_EXTENSION, extension, "extension")
        if classifier:
            _check(_ID, classifier, "classifier")
        return cls(group, artifact, version, extension, classifier)

    @property
    def filename(self) -> str:
        suffix = f"-{self.classifier}" if self.classifier else ""
        return f"{self.artifact}-{self.version}{suffix}.{self.extension}"

    @property
    def path(self) -> str:
        return "/".join([*self.group.split("."), self.artifact, self.version, self.filename])


@dataclass(frozen=True, slots=True)
class MavenDirectory:
    """A directory of a Maven repository, as its listing is asked for: `com/example/lib/`."""

    path: str  # segments joined by "/", with the trailing slash
    segments: tuple[str, ...]


def parse_directory(raw: str) -> MavenDirectory:
    """`seg/…/seg/`: the trailing slash says directory; every segment is a valid one.

    The repository root is not listed: its children are every top-level group there is,
    which no build tool asks for.
    """
    if len(raw) > PATH_LENGTH_MAX:
        raise MavenPathInvalid(f"Maven path longer than {PATH_LENGTH_MAX} characters")
    if not raw.endswith("/") or raw == "/":
        raise MavenPathInvalid("a directory listing needs a directory path ending in '/', below the root")
    segments = raw[:-1].split("/")
    if any(not s for s in segments):
        raise MavenPathInvalid("not a Maven repository path")
    for segment in segments:
        if not is_segment(segment):
            raise MavenPathInvalid(f"invalid path segment {segment[:100]!r} in Maven path")
    return MavenDirectory(path=raw, segments=tuple(segments))


def is_segment(name: str) -> bool:
    """Whether `name` may be one segment (directory or file name) of a repository path."""
    return bool(_VERSION.fullmatch(name)) and name not in (".", "..") and len(name) <= PATH_LENGTH_MAX
