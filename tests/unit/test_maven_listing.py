"""Maven directory listings: parsing a directory path, reading an upstream's HTML page,
writing ours, and merging the log's children with the upstream's.

Upstream pages are shaped like the servers people run (Apache httpd, nginx, Maven
Central, Nexus with absolute links); the service runs over the in-memory log twin and
an upstream behind httpx's MockTransport; `Index.paths`, the one log read it uses,
runs against a real ledger.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from nacl.signing import SigningKey

from pyrsia.artifacts.maven_listing import MavenListings
from pyrsia.artifacts.vouch import MAVEN, MemoryArtifactLog, NewArtifact
from pyrsia.errors import MavenFileUnknown, MavenPathInvalid, UpstreamError
from pyrsia.formats.maven_layout import parse_directory
from pyrsia.formats.maven_listing import read_listing, render
from pyrsia.translog.ledger import Ledger
from pyrsia.translog.tx import AddArtifact
from pyrsia.upstream.maven import LISTING_BYTES_MAX, MavenClient

BASE = "https://repo.test/maven2"
DIR_URL = f"{BASE}/com/example/lib/"


@pytest.mark.parametrize(
    ("raw", "segments"),
    [
        ("com/", ("com",)),
        ("com/example/lib-b/", ("com", "example", "lib-b")),
        ("com/example/lib-b/1.0-SNAPSHOT/", ("com", "example", "lib-b", "1.0-SNAPSHOT")),
        ("org/x/y/2.0+build.1/", ("org", "x", "y", "2.0+build.1")),
    ],
)
def test_directories_parse(raw: str, segments: tuple[str, ...]) -> None:
    parsed = parse_directory(raw)
    assert parsed.path == raw and parsed.segments == segments


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "/",
        "com",
        "com/example/lib-b",
        "//",
        "com//x/",
        "/com/",
        "../",
        "com/../",
        "com/./",
        "a b/",
        "a\n/",
        "com/exa\nmple/",
        "a%2e/",
        "-x/",
        "com/ex\u00e4mple/",
        "a/" * 600,
    ],
)
def test_bad_directories_are_refused(raw: str) -> None:
    with pytest.raises(MavenPathInvalid):
        parse_directory(raw)


APACHE = """<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">
<html><head><title>Index of /maven2/com/example/lib</title></head><body>
<table><tr><th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th></tr>
<tr><td><a href="/maven2/com/example/">Parent Directory</a></td></tr>
<tr><td><a href="1.0/">1.0/</a></td><td>2024-01-01 10:00</td></tr>
<tr><td><a href="1.1/">1.1/</a></td></tr>
<tr><td><a href="maven-metadata.xml">maven-metadata.xml</a></td></tr>
</table></body></html>"""
CENTRAL = """<html><body><pre id="contents">
<a href="../">../</a>
<a href="2.0/" title="2.0/">2.0/</a>                                              2016-06-29 07:46         -
<a href="2.1-beta%2B1/" title="2.1-beta+1/">2.1-beta+1/</a>                        2016-06-29 07:46         -
<a href="maven-metadata.xml.sha1" title="maven-metadata.xml.sha1">maven-metadata.xml.sha1</a>  2019-01-01 40
</pre></body></html>"""
NEXUS = f"""<html><body><table>
<tr><td><a href="{BASE}/com/example/">Parent Directory</a></td></tr>
<tr><td><a href="{BASE}/com/example/lib/3.0/">3.0/</a></td></tr>
<tr><td><a href="{BASE}/com/example/lib/3.0/lib-3.0.jar">deeper</a></td></tr>
<tr><td><a href="https://elsewhere.test/maven2/com/example/lib/9.9/">other host</a></td></tr>
<tr><td><a href="http://repo.test/maven2/com/example/lib/8.8/">other scheme</a></td></tr>
<tr><td><a HREF='{BASE}/com/example/lib/4.0&#47;'>entity</a></td></tr>
</table></body></html>"""


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (APACHE, {"1.0/", "1.1/", "maven-metadata.xml"}),
        (CENTRAL, {"2.0/", "2.1-beta+1/", "maven-metadata.xml.sha1"}),
        (NEXUS, {"3.0/", "4.0/"}),
    ],
    ids=["apache", "central", "nexus"],
)
def test_upstream_pages_yield_their_direct_children(page: str, expected: set[str]) -> None:
    assert read_listing(page, DIR_URL) == expected


@pytest.mark.parametrize(
    "href",
    [
        "..",
        "../",
        "./",
        "%2e%2e/",
        "a%20b/",
        "1.0%0A/",
        "1.0%2F2.0/",
        "javascript:alert(1)",
        "//evil.test/x/",
        "?C=N",
        "#top",
        "1.0/lib-1.0.jar",
        "http://[::1/x/",
        "",
    ],
)
def test_anchors_that_are_not_a_child_segment_are_dropped(href: str) -> None:
    assert read_listing(f'<a href="{href}">x</a><a href="ok/">ok</a>', DIR_URL) == {"ok/"}


def test_reading_is_bounded_in_entries() -> None:
    page = "".join(f'<a href="1.{i}/">x</a>' for i in range(1000))
    assert len(read_listing(page, DIR_URL, entries_max=10)) == 10


def test_our_page_reads_back_as_its_entries_with_relative_links() -> None:
    entries = {"1.0/", "1.1/", "2.0+b/", "maven-metadata.xml", "maven-metadata.xml.sha1"}
    page = render(parse_directory("com/example/lib/"), "/maven2/", entries).decode()
    assert '<a href="1.0/" title="1.0/">1.0/</a>' in page
    assert "<title>Index of /maven2/com/example/lib/</title>" in page
    assert read_listing(page, "http://node.test:7888/maven2/com/example/lib/") == entries
    lines = [line for line in page.splitlines() if line.startswith("<a href")]
    assert lines[0] == '<a href="../">../</a>' and len(lines) == len(entries) + 1


# -- the service -------------------------------------------------------------------


def logged(*paths: str) -> MemoryArtifactLog:
    translog = MemoryArtifactLog()
    translog.publish(
        [
            NewArtifact(
                package_type=MAVEN,
                package_id="com.example:lib:1.0",
                path=f"/maven2/{p}",
                digest="sha256:" + "0" * 64,
                size=1,
                chunk_root=b"",
                media_type="application/java-archive",
                source="test",
                author="test",
            )
            for p in paths
        ]
    )
    return translog


def service(
    translog: MemoryArtifactLog, answer: httpx.Response | Exception
) -> tuple[MavenListings, list[str]]:
    asked: list[str] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = MavenClient(BASE, transport=httpx.MockTransport(upstream), retries_max=0)
    return MavenListings(translog, client), asked


def html(page: str) -> httpx.Response:
    return httpx.Response(200, text=page, headers={"Content-Type": "text/html;charset=utf-8"})


LOGGED = (
    "com/example/lib/1.0/lib-1.0.jar",
    "com/example/lib/1.0/lib-1.0.pom",
    "com/example/lib/0.9/lib-0.9.pom",
    "com/example/lib/maven-metadata.xml",
    "com/example/lib-other/1.0/lib-other-1.0.jar",
    "com/example/lib/sub/x/1/x-1.jar",
)


def test_the_log_and_the_upstream_are_merged() -> None:
    listings, asked = service(logged(*LOGGED), html('<a href="1.0/">1.0/</a><a href="2.0/">2.0/</a>'))
    entries = listings.entries(parse_directory("com/example/lib/"))
    sums = [f"maven-metadata.xml.{a}" for a in ("md5", "sha1", "sha256", "sha512")]
    assert entries == sorted(["0.9/", "1.0/", "2.0/", "maven-metadata.xml", *sums, "sub/"])
    assert asked == ["/maven2/com/example/lib/"]


def test_a_version_directory_lists_logged_files_with_their_sidecars() -> None:
    listings, _ = service(logged(*LOGGED), httpx.Response(404))
    entries = listings.entries(parse_directory("com/example/lib/1.0/"))
    assert "lib-1.0.jar" in entries and "lib-1.0.jar.sha512" in entries and "lib-1.0.pom.md5" in entries
    assert len(entries) == 10


def test_the_log_alone_when_the_upstream_fails() -> None:
    listings, _ = service(logged(*LOGGED), httpx.ConnectError("refused"))
    assert listings.entries(parse_directory("com/example/lib/"))[:2] == ["0.9/", "1.0/"]
    listings, _ = service(logged(*LOGGED), httpx.Response(500))
    assert "1.0/" in listings.entries(parse_directory("com/example/lib/"))


def test_an_upstream_failure_with_nothing_logged_is_the_answer() -> None:
    listings, _ = service(logged(*LOGGED), httpx.ConnectError("refused"))
    with pytest.raises(UpstreamError):
        listings.entries(parse_directory("com/example/unknown/"))


def test_a_directory_neither_holds_is_unknown() -> None:
    listings, _ = service(logged(*LOGGED), httpx.Response(404))
    with pytest.raises(MavenFileUnknown):
        listings.entries(parse_directory("com/example/unknown/"))
    listings, _ = service(logged(), html("<p>empty</p>"))
    with pytest.raises(MavenFileUnknown):
        listings.entries(parse_directory("com/example/lib/"))


def test_upstream_pages_that_are_not_html_or_too_large_add_nothing() -> None:
    json_page = httpx.Response(200, json={"children": ["9.9/"]})
    listings, _ = service(logged(*LOGGED), json_page)
    assert "9.9/" not in listings.entries(parse_directory("com/example/lib/"))
    huge = html('<a href="9.9/">x</a>' + " " * LISTING_BYTES_MAX)
    listings, _ = service(logged(*LOGGED), huge)
    assert "9.9/" not in listings.entries(parse_directory("com/example/lib/"))


def test_the_log_is_walked_one_child_at_a_time() -> None:
    files = [f"com/example/lib/1.{v}/lib-1.{v}.{ext}" for v in range(50) for ext in ("jar", "pom", "module")]
    translog = logged(*files)
    calls: list[str] = []
    original = translog.paths

    def counting(package_type: str, prefix: str, after: str, limit: int) -> list[str]:
        calls.append(after)
        return original(package_type, prefix, after, limit)

    translog.paths = counting  # type: ignore[method-assign]
    listings, _ = service(translog, httpx.Response(404))
    assert len(listings.entries(parse_directory("com/example/lib/"))) == 50
    assert len(calls) == 51  # one per child, one to find the end


def test_index_paths_is_a_sorted_distinct_range(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "translog", SigningKey.generate())
    try:
        paths = [
            "/maven2/a/b/2/f",
            "/maven2/a/b/1/f",
            "/maven2/a/b/1/f",
            "/maven2/a/c/1/f",
            "/maven2/a/b/10/f",
        ]
        ledger.publish(
            [
                AddArtifact(
                    package_type=MAVEN, package_id="a:b:1", path=p, digest="sha256:" + "1" * 64, size=1,
                    chunk_size=1 << 20, chunk_root=bytes(32), media_type="x", source="s", author="a",
                )
                for p in paths
            ]
        )  # fmt: skip
        assert ledger.paths(MAVEN, "/maven2/a/b/", "", 10) == [
            "/maven2/a/b/1/f",
            "/maven2/a/b/10/f",
            "/maven2/a/b/2/f",
        ]
        assert ledger.paths(MAVEN, "/maven2/a/b/", "/maven2/a/b/1/f", 1) == ["/maven2/a/b/10/f"]
        past_one = ledger.paths(MAVEN, "/maven2/a/b/", "/maven2/a/b/1/\U0010ffff", 10)
        assert past_one == ["/maven2/a/b/10/f", "/maven2/a/b/2/f"]
        assert ledger.paths("docker", "/maven2/a/b/", "", 10) == []
        assert ledger.paths(MAVEN, "/maven2/a/", "", 0) == ["/maven2/a/b/1/f"]  # at least one
    finally:
        ledger.close()
