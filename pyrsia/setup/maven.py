"""Maven: the node as the first `<mirror>` in `settings.xml`, for every repository (`mirrorOf *`).

Maven takes the first mirror whose `mirrorOf` matches a repository, so the node's mirror
(`<id>pyrsia</id>`) goes first inside `<mirrors>`; with `*` a build asks the node for
every repository, and the node goes to its own upstreams, in their order. The file is
edited as text so its comments and layout stay: the mirror replaces an earlier
`pyrsia` mirror where it stands, or opens `<mirrors>`, or `<mirrors>` is added before
`</settings>`. Markup inside XML comments (Maven's default settings.xml has a
commented-out example mirror) is never mistaken for the real thing. The result must
parse, with the node's mirror first.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from pyrsia.errors import ConfigError
from pyrsia.setup.plan import Node

MIRROR_ID = "pyrsia"
NAMESPACE = "http://maven.apache.org/SETTINGS/1.0.0"
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def mirror_url(node: Node) -> str:
    return f"{node.url}/maven2/"


def mirror_xml(node: Node, mirror_of: str, indent: str) -> str:
    inner = indent + "  "
    return (
        f"{indent}<mirror>\n"
        f"{inner}<id>{MIRROR_ID}</id>\n"
        f"{inner}<name>pyrsia node</name>\n"
        f"{inner}<mirrorOf>{_escape(mirror_of)}</mirrorOf>\n"
        f"{inner}<url>{_escape(mirror_url(node))}</url>\n"
        f"{indent}</mirror>\n"
    )


def new_settings(node: Node, mirror_of: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<settings xmlns="{NAMESPACE}">\n'
        "  <mirrors>\n"
        f"{mirror_xml(node, mirror_of, '    ')}"
        "  </mirrors>\n"
        "</settings>\n"
    )


def with_mirror(text: str | None, node: Node, mirror_of: str, where: str) -> str:
    if text is None or not text.strip():
        return new_settings(node, mirror_of)
    _check(text, where)
    comments = [m.span() for m in _COMMENT.finditer(text)]
    ours = _find(
        text, re.compile(r"<mirror>(?:(?!</mirror>).)*?</mirror>[ \t]*\n?", re.DOTALL), comments, mine=True
    )
    if ours is not None:
        start, end = ours
        line_start = text.rfind("\n", 0, start) + 1
        prefix = text[line_start:start]
        head, indent = (text[:start], "") if prefix.strip() else (text[:line_start], prefix)
        result = head + mirror_xml(node, mirror_of, indent) + text[end:]
    elif (opened := _find(text, re.compile(r"<mirrors\s*>[ \t]*\n?"), comments)) is not None:
        start, end = opened
        indent = _indent_of(text, start) + "  "
        head = text[:end] if text[end - 1] == "\n" else text[:end] + "\n"
        result = head + mirror_xml(node, mirror_of, indent) + text[end:]
    elif (empty := _find(text, re.compile(r"<mirrors\s*/>"), comments)) is not None:
        start, end = empty
        indent = _indent_of(text, start)
        block = f"<mirrors>\n{mirror_xml(node, mirror_of, indent + '  ')}{indent}</mirrors>"
        result = text[:start] + block + text[end:]
    elif (closing := _find(text, re.compile(r"</settings\s*>"), comments)) is not None:
        start, _ = closing
        line_start = text.rfind("\n", 0, start) + 1
        if text[line_start:start].strip():  # `</settings>` shares its line: start a new one
            text, start, line_start = text[:start] + "\n" + text[start:], start + 1, start + 1
        block = f"  <mirrors>\n{mirror_xml(node, mirror_of, '    ')}  </mirrors>\n"
        result = text[:line_start] + block + text[line_start:]
    else:
        raise ConfigError(
            f"{where}: cannot find where to put <mirrors> (is <settings> self-closing?); nothing changed"
        )
    _check(result, where, expect_first=mirror_url(node))
    return result


def _find(
    text: str, pattern: re.Pattern[str], comments: list[tuple[int, int]], *, mine: bool = False
) -> tuple[int, int] | None:
    for match in pattern.finditer(text):
        if any(a <= match.start() < b for a, b in comments):
            continue
        if mine and not re.search(rf"<id>\s*{MIRROR_ID}\s*</id>", _COMMENT.sub("", match.group(0))):
            continue
        return match.span()
    return None


def _indent_of(text: str, at: int) -> str:
    line_start = text.rfind("\n", 0, at) + 1
    prefix = text[line_start:at]
    return prefix if not prefix.strip() else ""


def _check(text: str, where: str, expect_first: str | None = None) -> None:
    try:
        root = ET.fromstring(text.encode("utf-8"))
    except ET.ParseError as exc:
        raise ConfigError(f"{where} is not well-formed XML ({exc}); nothing changed") from None
    if _local(root.tag) != "settings":
        raise ConfigError(
            f"{where}: the root element is <{_local(root.tag)}>, not <settings>; nothing changed"
        )
    if expect_first is None:
        return
    mirrors = [child for child in root if _local(child.tag) == "mirrors"]
    first = next((m for m in (mirrors[0] if mirrors else []) if _local(m.tag) == "mirror"), None)
    url = next((c.text for c in (first if first is not None else []) if _local(c.tag) == "url"), None)
    if len(mirrors) != 1 or url is None or url.strip() != expect_first:
        raise ConfigError(
            f"{where}: could not make the node the first mirror; edit it by hand; nothing changed"
        )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
