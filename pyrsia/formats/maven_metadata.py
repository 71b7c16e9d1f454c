"""`maven-metadata.xml` of a groupId:artifactId, merged from several repositories.

When a node has several Maven repositories, the versions of one artifact may be spread
over them (a company repository adds its own builds to Central's). Maven's resolver
reads the metadata of every repository and merges it (maven-repository-metadata's
`Metadata.merge`); a node that took only the first repository's file would hide the
others' versions from every client. The merge here:

- `versions`: the union, in Maven's version order (`version_key`), each string once;
- `latest` and `release`: the greatest of what the repositories declare, by Maven's
  version order (a repository that declares none contributes its versions: any version
  for `latest`, a non-SNAPSHOT one for `release`);
- `lastUpdated`: the greatest (all are `yyyyMMddHHmmss`, so text order is time order);
- groupId and artifactId from the first; a document naming another G:A is invalid.

Only G:A metadata is merged (a `<versioning>` with `<versions>`); a file of another
shape (a SNAPSHOT version's or a group's plugin list) is left to the first repository.
Input comes from upstreams: parsed bounded, a DOCTYPE (and so any entity) refused, and
any fault is `UpstreamMetadataInvalid`, so the caller can skip that one repository.
Pure: bytes in, bytes out.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyrsia.errors import UpstreamMetadataInvalid

METADATA_BYTES_MAX = 4 * 1024 * 1024
VERSIONS_MAX = 100_000
VERSION_CHARS_MAX = 255
_TIMESTAMP = re.compile(r"[0-9]{14}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactMetadata:
    """The parts of a G:A `maven-metadata.xml` that a merge reads."""

    group_id: str
    artifact_id: str
    versions: tuple[str, ...]
    latest: str = ""
    release: str = ""
    last_updated: str = ""


def _text(parent: ET.Element, tag: str) -> str:
    found = parent.find(tag)
    return (found.text or "").strip() if found is not None else ""


def parse(body: bytes, where: str) -> ArtifactMetadata | None:
    """The G:A metadata in `body`; None when it is well-formed metadata of another shape."""
    if len(body) > METADATA_BYTES_MAX:
        raise UpstreamMetadataInvalid(
            f"{where}: maven-metadata.xml is larger than {METADATA_BYTES_MAX} bytes"
        )
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise UpstreamMetadataInvalid(f"{where}: maven-metadata.xml carries a DOCTYPE")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise UpstreamMetadataInvalid(f"{where}: maven-metadata.xml is not XML ({exc})") from None
    if root.tag != "metadata":
        raise UpstreamMetadataInvalid(f"{where}: maven-metadata.xml has no <metadata> root")
    versioning = root.find("versioning")
    holder = versioning.find("versions") if versioning is not None else None
    if versioning is None or holder is None:
        return None
    versions = []
    for element in holder.findall("version"):
        version = (element.text or "").strip()
        if not version or len(version) > VERSION_CHARS_MAX or not version.isprintable():
            raise UpstreamMetadataInvalid(f"{where}: maven-metadata.xml has a bad <version>")
        versions.append(version)
    if len(versions) > VERSIONS_MAX:
        raise UpstreamMetadataInvalid(f"{where}: maven-metadata.xml lists more than {VERSIONS_MAX} versions")
    last_updated = _text(versioning, "lastUpdated")
    if last_updated and not _TIMESTAMP.fullmatch(last_updated):
        raise UpstreamMetadataInvalid(f"{where}: maven-metadata.xml has a bad <lastUpdated>")
    return ArtifactMetadata(
        group_id=_text(root, "groupId"),
        artifact_id=_text(root, "artifactId"),
        versions=tuple(versions),
        latest=_text(versioning, "latest"),
        release=_text(versioning, "release"),
        last_updated=last_updated,
    )


def merge(found: Sequence[ArtifactMetadata]) -> ArtifactMetadata:
    """One artifact's metadata from several repositories (see the module's rules)."""
    if not found:
        raise ValueError("nothing to merge")
    first = found[0]
    for other in found[1:]:
        if (other.group_id, other.artifact_id) != (first.group_id, first.artifact_id):
            raise UpstreamMetadataInvalid(
                f"maven-metadata.xml names {other.group_id}:{other.artifact_id}, "
                f"not {first.group_id}:{first.artifact_id}"
            )
    versions = sorted({v for m in found for v in m.versions}, key=lambda v: (version_key(v), v))
    latest = [m.latest for m in found if m.latest] or [v for m in found if not m.latest for v in m.versions]
    release = [m.release for m in found if m.release] or [
        v for m in found if not m.release for v in m.versions if not v.endswith("-SNAPSHOT")
    ]
    return ArtifactMetadata(
        group_id=first.group_id,
        artifact_id=first.artifact_id,
        versions=tuple(versions),
        latest=_greatest(latest),
        release=_greatest(release),
        last_updated=max((m.last_updated for m in found), default=""),
    )


def _greatest(versions: Sequence[str]) -> str:
    return max(versions, key=lambda v: (version_key(v), v), default="")


def render(metadata: ArtifactMetadata) -> bytes:
    """The merged metadata as Maven writes it (`<metadata modelVersion="1.1.0">`)."""
    root = ET.Element("metadata", {"modelVersion": "1.1.0"})
    ET.SubElement(root, "groupId").text = metadata.group_id
    ET.SubElement(root, "artifactId").text = metadata.artifact_id
    versioning = ET.SubElement(root, "versioning")
    if metadata.latest:
        ET.SubElement(versioning, "latest").text = metadata.latest
    if metadata.release:
        ET.SubElement(versioning, "release").text = metadata.release
    versions = ET.SubElement(versioning, "versions")
    for version in metadata.versions:
        ET.SubElement(versions, "version").text = version
    if metadata.last_updated:
        ET.SubElement(versioning, "lastUpdated").text = metadata.last_updated
    ET.indent(root, space="  ")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + bytes(ET.tostring(root, encoding="utf-8")) + b"\n"


# ---- Maven's version order (maven-artifact's ComparableVersion) ----------------------------

# Well-known qualifiers in order; "" is a release. Others sort after `sp`, by text.
_QUALIFIERS = ("alpha", "beta", "milestone", "rc", "snapshot", "", "sp")
_ALIASES = {"ga": "", "final": "", "release": "", "cr": "rc", "a": "alpha", "b": "beta", "m": "milestone"}
# An item: (kind, value). Mixed kinds compare as ComparableVersion's items do:
# a qualifier < a sublist < a number.
_STRING, _LIST, _INT = 0, 1, 2
Item = tuple[int, object]


def _qualifier_key(text: str) -> tuple[int, str]:
    text = _ALIASES.get(text, text) if len(text) > 1 else text
    if text in _QUALIFIERS:
        return _QUALIFIERS.index(text), ""
    return len(_QUALIFIERS), text


def _string_item(text: str, followed_by_digit: bool) -> Item:
    if followed_by_digit and len(text) == 1 and text in "abm":
        text = _ALIASES[text]  # `a1` is alpha-1; a lone `a` stays an unknown qualifier
    return (_STRING, _qualifier_key(text))


def _item(digits: bool, text: str) -> Item:
    return (_INT, int(text)) if digits else _string_item(text, False)


def _is_null(item: Item) -> bool:
    kind, value = item
    if kind == _INT:
        return value == 0
    if kind == _STRING:
        return value == _qualifier_key("")
    return not value


def _normalize(items: list[Item]) -> None:
    """Trailing null items go (`1.0.0` = `1`, `1-ga` = `1`), up to the last non-list item."""
    for index in range(len(items) - 1, -1, -1):
        if _is_null(items[index]):
            del items[index]
        elif items[index][0] != _LIST:
            break


def _parse_version(version: str) -> list[Item]:
    """Items and sublists as ComparableVersion parses them: `.` separates items, `-`
    and a digit/letter transition open a sublist."""
    text = version.lower()
    top: list[Item] = []
    current = top
    stack = [top]
    digits = False
    start = 0

    def open_sublist() -> None:
        nonlocal current
        sub: list[Item] = []
        current.append((_LIST, sub))
        current = sub
        stack.append(sub)

    for index, char in enumerate(text):
        if char in ".-":
            current.append((_INT, 0) if index == start else _item(digits, text[start:index]))
            start = index + 1
            if char == "-":
                open_sublist()
        elif char.isdigit():
            if not digits and index > start:
                if current:  # `1.0.0.X1` < `1.0.0-X2`: a qualifier opens a sublist
                    open_sublist()
                current.append(_string_item(text[start:index], True))
                start = index
                open_sublist()
            digits = True
        else:
            if digits and index > start:
                current.append((_INT, int(text[start:index])))
                start = index
                open_sublist()
            digits = False
    if len(text) > start:
        if not digits and current:
            open_sublist()
        current.append(_item(digits, text[start:]))
    for items in reversed(stack):
        _normalize(items)
    return top


def _compare(a: Item | None, b: Item | None) -> int:
    if a is None and b is None:
        return 0
    if a is None:
        return -_compare(b, None)
    kind, value = a
    if b is None:
        if kind == _INT:
            return 0 if value == 0 else 1
        if kind == _STRING:
            return _cmp(value, _qualifier_key(""))
        items = value if isinstance(value, list) else []
        return _compare(items[0], None) if items else 0
    other_kind, other = b
    if kind != other_kind:
        return -1 if kind < other_kind else 1
    if kind == _LIST:
        left = value if isinstance(value, list) else []
        right = other if isinstance(other, list) else []
        for index in range(max(len(left), len(right))):
            result = _compare(
                left[index] if index < len(left) else None, right[index] if index < len(right) else None
            )
            if result:
                return result
        return 0
    return _cmp(value, other)


def _cmp(a: Any, b: Any) -> int:
    return int(a > b) - int(a < b)


class _VersionKey:
    __slots__ = ("items",)

    def __init__(self, items: list[Item]) -> None:
        self.items = items

    def __lt__(self, other: _VersionKey) -> bool:
        return _compare((_LIST, self.items), (_LIST, other.items)) < 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _VersionKey) and _compare((_LIST, self.items), (_LIST, other.items)) == 0

    def __hash__(self) -> int:
        return 0


def version_key(version: str) -> _VersionKey:
    """A sort key giving Maven's order: 1.0-alpha-1 < 1.0-rc1 < 1.0-SNAPSHOT < 1.0 < 1.0-sp < 1.0.1."""
    return _VersionKey(_parse_version(version))
