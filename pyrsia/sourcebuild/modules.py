"""The modules of a Maven project and their coordinates, read from its `pom.xml` files.

A multi-module build publishes one pom per module and one jar (plus `-sources.jar` and
other classifiers) per module that is not `pom`-packaged. To name those outputs by
their coordinates, `parse_pom` reads what matters of one pom — `groupId`,
`artifactId`, `version`, `packaging`, `<parent>`, `<modules>` and `<properties>` —
and `resolve_module` fills in what a module inherits from the reactor parent that
lists it (groupId, version, properties) and expands `${…}` references to properties
and `project.*`/`parent.*` values (CI-friendly `${revision}` versions). A coordinate
that still holds `${` after that is refused: pyrsia does not guess.

The poms come out of the cloned repository, so they are untrusted: at most
`POM_BYTES_MAX` bytes, no DOCTYPE (no entities, no external references), module
paths relative and inside the tree (`..` is refused: a module outside the source is
not built here), at most `MODULES_MAX` modules `MODULE_DEPTH_MAX` levels deep (the
shell counts). Every refusal is `BuildFailed(reason="modules")` with one line. Pure.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from dataclasses import dataclass, field

from pyrsia.errors import BuildFailed

POM_BYTES_MAX = 1024 * 1024
MODULES_MAX = 500
MODULE_DEPTH_MAX = 8
_REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.\-]{1,200})\}")
_COORDINATE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-+]{0,199}")
_INTERPOLATION_ROUNDS_MAX = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class Pom:
    """One pom as written: fields absent from it are empty strings."""

    group_id: str
    artifact_id: str
    version: str
    packaging: str
    parent_group_id: str = ""
    parent_artifact_id: str = ""
    parent_version: str = ""
    modules: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Module:
    """A module with its coordinates resolved; `path` is its directory in the source tree."""

    path: str
    pom_path: str  # relative to the source root: `pom.xml`, `core/pom.xml`
    group_id: str
    artifact_id: str
    version: str
    packaging: str
    properties: Mapping[str, str]

    @property
    def gav(self) -> str:
        return f"{self.group_id}:{self.artifact_id}:{self.version}"

    @property
    def publishes_jar(self) -> bool:
        return self.packaging != "pom"

    def file_base(self) -> str:
        """Maven's file name stem for this module's artifacts: `artifactId-version`."""
        return f"{self.artifact_id}-{self.version}"


def _refuse(why: str) -> BuildFailed:
    return BuildFailed(why, reason="modules")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ElementTree.Element, name: str) -> ElementTree.Element | None:
    for child in element:
        if isinstance(child.tag, str) and _local(child.tag) == name:
            return child
    return None


def _text(element: ElementTree.Element | None, name: str) -> str:
    if element is None:
        return ""
    child = _child(element, name)
    return (child.text or "").strip() if child is not None else ""


def parse_pom(data: bytes, *, where: str = "pom.xml") -> Pom:
    """What `Pom` holds, from one pom's bytes; `BuildFailed(reason="modules")` if unreadable."""
    if len(data) > POM_BYTES_MAX:
        raise _refuse(f"{where} is larger than {POM_BYTES_MAX} bytes")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise _refuse(f"{where} declares a DOCTYPE or entities; a pom needs neither")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise _refuse(f"{where} is not well-formed XML: {exc}") from exc
    if _local(root.tag) != "project":
        raise _refuse(f"{where} is not a Maven project (its root is <{_local(root.tag)[:40]}>)")
    parent = _child(root, "parent")
    modules_element = _child(root, "modules")
    modules: list[str] = []
    if modules_element is not None:
        for child in modules_element:
            if isinstance(child.tag, str) and _local(child.tag) == "module":
                modules.append(check_module_path((child.text or "").strip(), where=where))
                if len(modules) > MODULES_MAX:
                    raise _refuse(f"{where} lists more than {MODULES_MAX} modules")
    properties: dict[str, str] = {}
    properties_element = _child(root, "properties")
    if properties_element is not None:
        for child in properties_element:
            if isinstance(child.tag, str):
                properties[_local(child.tag)] = (child.text or "").strip()
    return Pom(
        group_id=_text(root, "groupId"),
        artifact_id=_text(root, "artifactId"),
        version=_text(root, "version"),
        packaging=_text(root, "packaging") or "jar",
        parent_group_id=_text(parent, "groupId"),
        parent_artifact_id=_text(parent, "artifactId"),
        parent_version=_text(parent, "version"),
        modules=tuple(modules),
        properties=properties,
    )


def check_module_path(path: str, *, where: str) -> str:
    """A `<module>` entry: a relative path inside the tree, without `..`."""
    parts = [part for part in path.replace("\\", "/").split("/") if part not in ("", ".")]
    if not parts or path.startswith("/") or ".." in parts or "\x00" in path or len(path) > 1024:
        raise _refuse(f"{where} names module {path[:80]!r}: a module must be a directory inside the source")
    return "/".join(parts)


def resolve_module(
    pom: Pom,
    *,
    path: str,
    parent: Module | None,
    pom_path: str = "",
    user_properties: Mapping[str, str] | None = None,
) -> Module:
    """`pom`'s coordinates with inheritance from `parent` (the module that lists it) and
    `${…}` references expanded; refuses what stays unresolved or is not a coordinate.
    `user_properties` are the command's `-Dname=value`: as in Maven, they win over the
    poms' own (`mvn -Drevision=2.1 package`)."""
    where = pom_path or (f"{path}/pom.xml" if path else "pom.xml")
    group_id = pom.group_id or pom.parent_group_id or (parent.group_id if parent else "")
    version = pom.version or pom.parent_version or (parent.version if parent else "")
    inherited = dict(parent.properties) if parent else {}
    properties = {**inherited, **pom.properties}
    values = {
        **properties,
        **(user_properties or {}),
        "project.groupId": group_id,
        "project.artifactId": pom.artifact_id,
        "project.version": version,
        "pom.version": version,
        "pom.groupId": group_id,
        "project.parent.groupId": pom.parent_group_id,
        "project.parent.version": pom.parent_version,
        "parent.version": pom.parent_version,
    }
    resolved = {
        name: _expand(value, values, where=where, what=name)
        for name, value in (("groupId", group_id), ("artifactId", pom.artifact_id), ("version", version))
    }
    for name, value in resolved.items():
        if not _COORDINATE.fullmatch(value):
            raise _refuse(f"{where}: {name} {value[:80]!r} is not a Maven coordinate")
    return Module(
        path=path,
        pom_path=where,
        group_id=resolved["groupId"],
        artifact_id=resolved["artifactId"],
        version=resolved["version"],
        packaging=pom.packaging,
        properties=properties,
    )


def _expand(value: str, values: Mapping[str, str], *, where: str, what: str) -> str:
    for _ in range(_INTERPOLATION_ROUNDS_MAX):
        if "${" not in value:
            return value
        expanded = _REFERENCE.sub(lambda m: values.get(m.group(1), m.group(0)), value)
        if expanded == value:
            break
        value = expanded[:1024]
    if "${" in value:
        raise _refuse(f"{where}: {what} {value[:80]!r} refers to a property the pom does not define")
    return value


def command_properties(argv: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The `-Dname=value` user properties of a Maven command line (`-Dname` alone is "true")."""
    found: dict[str, str] = {}
    for arg in argv:
        if arg.startswith("-D") and len(arg) > 2:
            name, _, value = arg[2:].partition("=")
            found[name] = value if "=" in arg else "true"
    return found


def child_location(parent_dir: str, module: str) -> tuple[str, str]:
    """A listed module's directory and pom path, relative to the source root (a
    `<module>` names a directory, or a pom file in one)."""
    joined = "/".join(part for part in (parent_dir, module) if part)
    if joined.endswith(".xml"):
        directory = joined.rsplit("/", 1)[0] if "/" in joined else ""
        return directory, joined
    return joined, f"{joined}/pom.xml"


def check_unique(modules: list[Module] | tuple[Module, ...]) -> None:
    """Two modules whose files would have the same names (same artifactId and version)."""
    seen: dict[str, str] = {}
    for module in modules:
        base = module.file_base()
        if base in seen:
            raise _refuse(
                f"modules {seen[base] or '.'} and {module.path or '.'} both publish {base}: "
                "their outputs could not be told apart"
            )
        seen[base] = module.path
