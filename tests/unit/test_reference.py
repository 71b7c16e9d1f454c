"""Repository names, tags and digests: the distribution-spec grammar, strictly."""

from __future__ import annotations

import hashlib

import pytest

from pyrsia.errors import DigestInvalid, NameInvalid, TagInvalid
from pyrsia.formats.digest import Digest
from pyrsia.formats.reference import parse_name, parse_tag


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
