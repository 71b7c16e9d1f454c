"""Manifest media types and the one negotiation rule (index → platform manifest)."""

from __future__ import annotations

import json

import pytest

from pyrsia.errors import ManifestInvalid
from pyrsia.formats import manifest as m


def _index(*platforms: tuple[str, str]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": m.OCI_MANIFEST,
                    "digest": f"sha256:{i:064x}",
                    "size": 10,
                    "platform": {"os": os, "architecture": arch},
                }
                for i, (os, arch) in enumerate(platforms)
            ],
        }
    ).encode()


def test_media_type_from_field_declared_or_shape() -> None:
    declared_in_body = b'{"schemaVersion":2,"mediaType":"%s"}' % m.DOCKER_MANIFEST.encode()
    assert m.media_type_of(declared_in_body) == m.DOCKER_MANIFEST
    assert m.media_type_of(b'{"schemaVersion":2,"config":{}}', m.DOCKER_MANIFEST) == m.DOCKER_MANIFEST
    assert m.media_type_of(b'{"schemaVersion":2,"config":{}}') == m.OCI_MANIFEST
    assert m.media_type_of(_index(("linux", "amd64"))) == m.OCI_INDEX


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"schemaVersion":1}'])
def test_unparseable_manifests_are_invalid(body: bytes) -> None:
    with pytest.raises(ManifestInvalid):
        m.media_type_of(body)


def test_platform_pick() -> None:
    index = _index(("linux", "arm64"), ("linux", "amd64"))
    assert m.pick_platform(index).digest == f"sha256:{1:064x}"
    assert m.pick_platform(index, "linux", "arm64").digest == f"sha256:{0:064x}"
    with pytest.raises(ManifestInvalid):
        m.pick_platform(index, "windows", "amd64")


@pytest.mark.parametrize(
    ("accept", "stored", "expected"),
    [
        ([], m.OCI_INDEX, False),
        ([m.DOCKER_MANIFEST], m.OCI_INDEX, True),
        ([m.DOCKER_MANIFEST, m.DOCKER_LIST], m.DOCKER_LIST, False),
        ([m.OCI_INDEX], m.OCI_INDEX, False),
        (["*/*"], m.OCI_INDEX, False),
        ([m.DOCKER_MANIFEST], m.OCI_MANIFEST, False),
        (["application/json"], m.OCI_INDEX, False),
    ],
)
def test_wants_platform_manifest(accept: list[str], stored: str, expected: bool) -> None:
    assert m.wants_platform_manifest(accept, stored) is expected
