"""Maven paths and coordinates: what the layout allows, and nothing else."""

from __future__ import annotations

import pytest

from pyrsia.errors import MavenPathInvalid
from pyrsia.formats.maven_layout import Coordinates, parse_path


@pytest.mark.parametrize(
    ("raw", "group", "artifact", "version", "checksum", "content_type"),
    [
        ("com/example/app/1.0/app-1.0.jar", "com.example", "app", "1.0", None, "application/java-archive"),
        ("com/example/app/1.0/app-1.0.pom.sha1", "com.example", "app", "1.0", "sha1", "text/plain"),
        (
            "com/example/app/1.0/app-1.0-sources.jar",
            "com.example",
            "app",
            "1.0",
            None,
            "application/java-archive",
        ),
        ("com/example/app/1.0/app-1.0-tests.jar.sha512", "com.example", "app", "1.0", "sha512", "text/plain"),
        ("org/x/lib/2.0/lib-2.0.module", "org.x", "lib", "2.0", None, "application/json"),
        ("org/x/lib/2.0/lib-2.0.tar.gz", "org.x", "lib", "2.0", None, "application/gzip"),
        ("org/x/lib/2.0/lib-2.0.pom.asc", "org.x", "lib", "2.0", None, "text/plain"),
        (
            "a/b/1.0-SNAPSHOT/b-1.0-20240101.120000-1.jar",
            "a",
            "b",
            "1.0-SNAPSHOT",
            None,
            "application/java-archive",
        ),
        ("a/b/1.0-SNAPSHOT/b-1.0-SNAPSHOT.pom", "a", "b", "1.0-SNAPSHOT", None, "application/xml"),
        ("a/b/1.0+build.5/b-1.0+build.5.aar", "a", "b", "1.0+build.5", None, "application/octet-stream"),
    ],
)
def test_artifact_paths(
    raw: str, group: str, artifact: str, version: str, checksum: str | None, content_type: str
) -> None:
    parsed = parse_path(raw)
    assert (parsed.group, parsed.artifact, parsed.version, parsed.checksum) == (
        group,
        artifact,
        version,
        checksum,
    )
    assert parsed.content_type == content_type and not parsed.is_metadata
    assert raw.startswith(parsed.path)


@pytest.mark.parametrize(
    "raw",
    [
        "com/example/app/maven-metadata.xml",
        "org/apache/maven/plugins/maven-metadata.xml.sha1",
        "a/b/1.0-SNAPSHOT/maven-metadata.xml.md5",
    ],
)
def test_metadata_paths(raw: str) -> None:
    parsed = parse_path(raw)
    assert parsed.is_metadata and parsed.path.endswith("maven-metadata.xml")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "x",
        "com/example/app/1.0/../../../etc/passwd",
        "../app/1.0/app-1.0.jar",
        "/abs/a/1.0/a-1.0.jar",
        "com//app/1.0/app-1.0.jar",
        "com/ex ample/app/1.0/app-1.0.jar",
        "com/example/app/1.0/other-1.0.jar",
        "com/example/app/1.0/app-1.0",
        "com/example/app/1.0/app-1.0.",
        "com/example/app/1.0/app-1.0.j@r",
        "com/example/app/1.0/",
        "app/1.0/app-1.0.jar",
        "com/ex$ample/app/1.0/app-1.0.jar",
        "a/" * 600 + "x.jar",
        "com/./app/1.0/app-1.0.jar",
    ],
)
def test_refused_paths(raw: str) -> None:
    with pytest.raises(MavenPathInvalid):
        parse_path(raw)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("com.example:app:1.0", "com/example/app/1.0/app-1.0.jar"),
        ("com.example:app:pom:1.0", "com/example/app/1.0/app-1.0.pom"),
        ("com.example:app:jar:sources:1.0", "com/example/app/1.0/app-1.0-sources.jar"),
    ],
)
def test_coordinates_to_paths(text: str, path: str) -> None:
    coords = Coordinates.parse(text)
    assert coords.path == path
    assert parse_path(coords.path).artifact == coords.artifact


@pytest.mark.parametrize(
    "text", ["app", "a:b", "a:b:c:d:e:f", "com..x:app:1.0", "com.x:../app:1.0", "a:b: :1"]
)
def test_bad_coordinates(text: str) -> None:
    with pytest.raises(MavenPathInvalid):
        Coordinates.parse(text)


@pytest.mark.parametrize(
    "raw",
    [
        "com/example/app/1.0/app-1.0-\x00.jar",
        "com/example/app/1.0/app-1.0-\r\n.jar",
        "com/example/app/1.0/app-1.0.jar?.jar",
        "com/example/app/1.0/app-1.0.jar#.jar",
        "com/example/app/1.0/app-1.0-a%b.jar",
        "com/example/app/1.0/app-1.0-a b.jar",
        "com/example/app/1.0/app-1.0-\u00e4.jar",
    ],
)
def test_file_names_keep_to_id_characters(raw: str) -> None:
    # Each of these once reached the record store (NUL: 500) or the upstream URL (`?`, `#`:
    # another file was fetched than the path the log would vouch for).
    with pytest.raises(MavenPathInvalid, match="file name"):
        parse_path(raw)


@pytest.mark.parametrize(
    "raw",
    ["com/example/app/1.0/app-1.0.jar.sha1.sha1", "com/example/app/maven-metadata.xml.sha256.md5"],
)
def test_a_checksum_of_a_checksum_is_refused(raw: str) -> None:
    # Otherwise the upstream's sidecar would be fetched, stored and logged as an artifact.
    with pytest.raises(MavenPathInvalid, match="checksum of a checksum"):
        parse_path(raw)


def test_checksums_of_signatures_are_still_served() -> None:
    parsed = parse_path("com/example/app/1.0/app-1.0.jar.asc.sha1")
    assert (parsed.path, parsed.checksum) == ("com/example/app/1.0/app-1.0.jar.asc", "sha1")
