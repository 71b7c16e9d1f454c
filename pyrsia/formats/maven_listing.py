"""HTML directory listings of a Maven repository: reading an upstream's, writing ours.

Build tools list a directory when a repository has no `maven-metadata.xml` for what
they need: Gradle resolves a dynamic version (`1.+`, `latest.release`) by fetching
`<group>/<artifact>/` and reading its anchors (Gradle's `ApacheDirectoryListingParser`:
the response must be `text/html`; each `href` is resolved against the directory URL
and kept only when it is a direct child of it, `name/` for a directory, `name` for a
file). Apache httpd, nginx, Nexus, Artifactory and Maven Central all answer that shape.

An entry is a child name, with a trailing `/` when it is a directory. Reading keeps
only entries that are valid repository path segments (`maven_layout.is_segment`), at
most `ENTRIES_MAX` of them; writing emits one relative link per entry, so the page is
right wherever the repository is mounted.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from html.parser import HTMLParser
from urllib.parse import unquote, urljoin, urlsplit

from pyrsia.formats.maven_layout import CHECKSUMS, MavenDirectory, is_segment

ENTRIES_MAX = 50_000


def entry_of(rest: str) -> str | None:
    """The entry a path below a directory adds to its listing: `a/b/c` → `a/`, `f` → `f`."""
    child, slash, _ = rest.partition("/")
    if not is_segment(child):
        return None
    return child + slash


def with_checksums(entries: Iterable[str]) -> set[str]:
    """Files and the checksum sidecars served for each; directories as they are."""
    out: set[str] = set()
    for entry in entries:
        out.add(entry)
        if not entry.endswith("/") and not entry.endswith(tuple("." + c for c in CHECKSUMS)):
            out.update(f"{entry}.{algorithm}" for algorithm in CHECKSUMS)
    return out


class _Anchors(HTMLParser):
    def __init__(self, limit: int) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self._limit = limit

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a" and len(self.hrefs) < self._limit:
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def read_listing(page: str, directory_url: str, entries_max: int = ENTRIES_MAX) -> set[str]:
    """The entries an upstream's HTML listing of `directory_url` (ending in `/`) names."""
    parser = _Anchors(4 * entries_max)  # anchors beyond entries (parent, sort links) are dropped below
    parser.feed(page)
    parser.close()
    base = urlsplit(directory_url)
    entries: set[str] = set()
    for href in parser.hrefs:
        try:
            target = urlsplit(urljoin(directory_url, href.strip()))
        except ValueError:  # e.g. an invalid IPv6 host in an absolute href
            continue
        if (target.scheme, target.netloc.lower()) != (base.scheme, base.netloc.lower()):
            continue
        if target.query or not target.path.startswith(base.path):
            continue
        rest = unquote(target.path[len(base.path) :])
        name = rest.removesuffix("/")
        if name and "/" not in name and is_segment(name):
            entries.add(rest)
            if len(entries) >= entries_max:
                break
    return entries


def render(directory: MavenDirectory, mounted_at: str, entries: Iterable[str]) -> bytes:
    """An Apache-style index page: a parent link, then one relative link per entry."""
    where = html.escape(f"{mounted_at}{directory.path}")
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        f'<head><meta charset="utf-8"><title>Index of {where}</title></head>',
        "<body>",
        f"<h1>Index of {where}</h1>",
        "<pre>",
        '<a href="../">../</a>',
    ]
    lines += [
        f'<a href="{html.escape(e)}" title="{html.escape(e)}">{html.escape(e)}</a>' for e in sorted(entries)
    ]
    lines += ["</pre>", "</body>", "</html>", ""]
    return "\n".join(lines).encode("utf-8")
