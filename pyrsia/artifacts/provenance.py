"""Who published an artifact and what it builds on, as the transparency log records it.

Pure: bytes in, strings out. For images the author is the
`org.opencontainers.image.authors` annotation or label, else the repository's
namespace (`library` for Docker Official Images); the one dependency is the
`org.opencontainers.image.base.name` a build tool recorded. For Maven the author is
the POM's developers, else its organization, else the groupId; dependencies are the
POM's `groupId:artifactId:version`, with `${…}` properties of the same POM filled in.

What comes out always fits a log record: an author is informational, so one longer than
the log's text limit is cut to it; a dependency is a reference, so one that long is
dropped rather than cut into a wrong one, and at most the log's count are kept. Input
that does not parse (bad JSON, JSON nested past the parser's depth, non-string labels)
yields no labels, never an error.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass

from pyrsia.translog.tx import DEPENDENCIES_MAX, TEXT_FIELD_CHARS_MAX

AUTHORS = "org.opencontainers.image.authors"
BASE_NAME = "org.opencontainers.image.base.name"
PROPERTY = re.compile(r"\$\{([^}]+)\}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Provenance:
    author: str
    dependencies: tuple[str, ...] = ()


def _fitted(author: str, dependencies: Iterable[str]) -> Provenance:
    kept = tuple(d for d in dependencies if len(d) <= TEXT_FIELD_CHARS_MAX)[:DEPENDENCIES_MAX]
    return Provenance(author=author[:TEXT_FIELD_CHARS_MAX], dependencies=kept)


def _object(data: bytes) -> dict[str, object]:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nested past json's depth
        return {}
    return doc if isinstance(doc, dict) else {}


def _labels(doc: dict[str, object], *path: str) -> dict[str, str]:
    node: object = doc
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return {}
    return {str(k): v for k, v in node.items() if isinstance(v, str)}


def of_image(name: str, manifest: bytes, config: bytes | None) -> Provenance:
    """Annotations of the manifest win over labels of the image config."""
    found = {
        **(_labels(_object(config), "config", "Labels") if config else {}),
        **_labels(_object(manifest), "annotations"),
    }
    namespace = name.split("/", 1)[0] if "/" in name else "library"
    author = found.get(AUTHORS, "").strip() or namespace
    base = found.get(BASE_NAME, "").strip()
    return _fitted(author, (base,) if base else ())


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in element if _local(c.tag) == name), None)


def _text(element: ET.Element | None, name: str) -> str:
    child = _child(element, name) if element is not None else None
    return (child.text or "").strip() if child is not None else ""


def of_pom(pom: bytes, group_id: str) -> Provenance:
    """A POM that does not parse still gets an author: its groupId."""
    try:
        root = ET.fromstring(pom)
    except ET.ParseError:
        return _fitted(group_id, ())
    properties = {_local(p.tag): (p.text or "").strip() for p in _child(root, "properties") or []}
    parent = _child(root, "parent")
    properties["project.version"] = _text(root, "version") or _text(parent, "version")
    properties["project.groupId"] = _text(root, "groupId") or _text(parent, "groupId")

    def fill(value: str) -> str:
        return PROPERTY.sub(lambda m: properties.get(m.group(1), m.group(0)), value)

    developers = []
    for developer in _child(root, "developers") or []:
        who = _text(developer, "name") or _text(developer, "id")
        email = _text(developer, "email")
        if who or email:
            developers.append(f"{who} <{email}>".strip() if email else who)
    author = ", ".join(developers) or _text(_child(root, "organization"), "name") or group_id
    dependencies = []
    for dependency in _child(root, "dependencies") or []:
        coordinates = [fill(_text(dependency, key)) for key in ("groupId", "artifactId", "version")]
        dependencies.append(":".join(part for part in coordinates if part))
    return _fitted(author, dependencies)
