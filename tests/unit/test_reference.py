"""Repository names, tags and digests: the distribution-spec grammar, strictly."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from pyrsia.errors import DigestInvalid, MavenPathInvalid, NameInvalid, TagInvalid
from pyrsia.formats.digest import Digest
from pyrsia.formats.maven_layout import Coordinates, parse_path
from pyrsia.formats.reference import parse_image_reference, parse_name, parse_tag


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("alpine", "library/alpine"),
        ("library/alpine", "library/alpine"),
        ("team/sub/app", "team/sub/app"),
        ("a.b_c__d-e--f/g", "a.b_c__d-e--f/g"),
        ("x" * 200 + "/y", "x" * 200 + "/y"),
    ],
)
def test_valid_names(raw: str, name: str) -> None:
    assert parse_name(raw) == name


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "..",
        "a/../b",
        "/abs",
        "a//b",
        "a/",
        "Upper",
        "a/.hidden",
        "-a",
        "a_",
        "a___b",
        "a@b",
        "a/b\x00",
        "x" * 256,
        "a:b",
        "%2e%2e",
    ],
)
def test_invalid_names(raw: str) -> None:
    with pytest.raises(NameInvalid):
        parse_name(raw)


@pytest.mark.parametrize("raw", ["1.0", "latest", "_x", "A-b.c_D", "x" * 128])
def test_valid_tags(raw: str) -> None:
    assert parse_tag(raw) == raw


@pytest.mark.parametrize("raw", ["", ".x", "-x", "a/b", "x" * 129, "..", "a b"])
def test_invalid_tags(raw: str) -> None:
    with pytest.raises(TagInvalid):
        parse_tag(raw)


def test_digest_round_trip_sha256_and_sha512() -> None:
    for algorithm in ("sha256", "sha512"):
        text = f"{algorithm}:{hashlib.new(algorithm, b'x').hexdigest()}"
        digest = Digest.parse(text)
        assert str(digest) == text
        assert Digest.of(b"x", algorithm) == digest


@pytest.mark.parametrize(
    "raw",
    [
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha512:" + "a" * 64,
        "md5:" + "a" * 32,
        "sha256:../../etc/passwd",
        "sha256",
        "",
    ],
)
def test_invalid_digests(raw: str) -> None:
    with pytest.raises(DigestInvalid):
        Digest.parse(raw)


@pytest.mark.parametrize(
    "parse",
    [
        lambda: parse_name("library/alpine\n"),
        lambda: parse_name("alpine\n"),
        lambda: parse_tag("latest\n"),
        lambda: Digest.parse("sha256:" + "a" * 64 + "\n"),
        lambda: parse_image_reference("alpine:3.18\n"),
        lambda: parse_image_reference("alpine@sha256:" + "a" * 64 + "\n"),
    ],
    ids=["name", "short-name", "tag", "digest", "reference-tag", "reference-digest"],
)
def test_a_trailing_newline_is_refused(parse: Callable[[], object]) -> None:
    """`$` in a regex also matches before a final newline; the grammar is matched whole."""
    with pytest.raises((NameInvalid, TagInvalid, DigestInvalid)):
        parse()


@pytest.mark.parametrize(
    "path",
    [
        "com/example/lib/1.0/lib-1.0.jar\n",
        "com/example/lib\n/1.0/lib-1.0.jar",
        "com/example/lib/1.0\n/lib-1.0.jar",
        "com/example\n/lib/1.0/lib-1.0.jar",
        "com/example/lib/maven-metadata.xml\n",
    ],
)
def test_a_maven_path_with_a_newline_is_refused(path: str) -> None:
    with pytest.raises(MavenPathInvalid):
        parse_path(path)


@pytest.mark.parametrize(
    "text", ["com.example:lib:1.0\n", "com.example:lib\n:1.0", "com.example:lib:jar\n:1.0"]
)
def test_maven_coordinates_with_a_newline_are_refused(text: str) -> None:
    with pytest.raises(MavenPathInvalid):
        Coordinates.parse(text)


def test_image_references_keep_a_registry_host_other_than_docker_hub() -> None:
    assert parse_image_reference("ghcr.io/org/app:1.0") == ("ghcr.io/org/app", "1.0")
    assert parse_image_reference("quay.io/app") == ("quay.io/app", "latest")  # no library/ there
    assert parse_image_reference("docker.io/alpine:3") == ("library/alpine", "3")
    assert parse_image_reference("index.docker.io/myorg/app") == ("myorg/app", "latest")
