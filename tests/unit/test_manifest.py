"""Manifest parsing (every field checked into typed descriptors), media types, and the
one negotiation rule (index → platform manifest)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrsia.errors import ManifestInvalid
from pyrsia.formats import manifest as m

CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{1:064x}", "size": 100}
LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": f"sha256:{2:064x}", "size": 88}


def _image(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": m.OCI_MANIFEST,
        "config": CONFIG,
        "layers": [LAYER],
    }
    doc.update(changes)
    return doc


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
    declared_in_body = json.dumps(_image(mediaType=m.DOCKER_MANIFEST)).encode()
    assert m.media_type_of(declared_in_body) == m.DOCKER_MANIFEST
    untyped = {k: v for k, v in _image().items() if k != "mediaType"}
    assert m.media_type_of(json.dumps(untyped).encode(), m.DOCKER_MANIFEST) == m.DOCKER_MANIFEST
    assert m.media_type_of(json.dumps(untyped).encode()) == m.OCI_MANIFEST
    assert m.media_type_of(_index(("linux", "amd64"))) == m.OCI_INDEX


def test_parse_gives_typed_descriptors() -> None:
    parsed = m.parse(json.dumps(_image(annotations={"a": "b"})).encode())
    assert not parsed.is_index and parsed.annotations == {"a": "b"}
    config, layer = parsed.parts
    assert (config.digest, config.size, config.media_type) == (CONFIG["digest"], 100, CONFIG["mediaType"])
    assert (layer.digest, layer.size) == (LAYER["digest"], 88)
    index = m.parse(_index(("linux", "arm64")))
    assert index.is_index and index.children[0].architecture == "arm64" and index.parts == ()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"schemaVersion":1}',
        b'{"schemaVersion":"2","config":{}}',
        b'{"schemaVersion":2.0,"config":{}}',
        b'{"schemaVersion":true}',
        b"\xff\xfe{}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"schemaVersion":2,"layers":[]}',
        b'{"schemaVersion":2,"size":' + b"9" * 5000 + b"}",
    ],
    ids=lambda b: repr(b[:24]),
)
def test_unparseable_manifests_are_invalid(body: bytes) -> None:
    with pytest.raises(ManifestInvalid):
        m.media_type_of(body)


BAD_DESCRIPTOR_FIELDS: list[tuple[str, Any]] = [
    ("size", "abc"),
    ("size", None),
    ("size", -1),
    ("size", 10**30),
    ("size", 2**63),
    ("size", True),
    ("size", 1.5),
    ("digest", "sha256:xyz"),
    ("digest", "sha256:" + "A" * 64),
    ("digest", f"sha256:{2:064x}\n"),
    ("digest", 5),
    ("digest", None),
    ("mediaType", "application/" + "x" * 5000),
    ("mediaType", "application/x\r\nEvil: 1"),
    ("mediaType", "no-slash"),
    ("mediaType", 7),
    ("annotations", ["a"]),
    ("annotations", {"a": 1}),
]


@pytest.mark.parametrize(("key", "value"), BAD_DESCRIPTOR_FIELDS, ids=lambda v: repr(v)[:30])
@pytest.mark.parametrize("where", ["config", "layer"])
def test_every_descriptor_field_is_checked(where: str, key: str, value: Any) -> None:
    descriptor = {**(CONFIG if where == "config" else LAYER), key: value}
    doc = _image(config=descriptor) if where == "config" else _image(layers=[descriptor])
    with pytest.raises(ManifestInvalid):
        m.image_parts(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "doc",
    [
        _image(layers=5),
        _image(layers=[LAYER] * (m.LAYERS_MAX + 1)),
        _image(layers=["sha256:abc"]),
        _image(config="x"),
        _image(config=[]),
        _image(config={**CONFIG, "size": m.CONFIG_BYTES_MAX + 1}),
        _image(mediaType="x" * 5000),
        _image(annotations={"org.opencontainers.image.authors": 5}),
        _image(manifests=[]),
        {"schemaVersion": 2, "mediaType": m.OCI_MANIFEST, "layers": []},
    ],
    ids=["layers-int", "too-many-layers", "layer-string", "config-string", "config-list", "config-huge",
         "media-type-5000", "annotation-int", "both-shapes", "no-config"],
)  # fmt: skip
def test_image_manifest_shape_is_checked(doc: dict[str, Any]) -> None:
    with pytest.raises(ManifestInvalid):
        m.parse(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "entries",
    [
        5,
        [{"mediaType": m.OCI_MANIFEST, "digest": f"sha256:{1:064x}", "size": 1}] * (m.INDEX_ENTRIES_MAX + 1),
        [{"mediaType": m.OCI_MANIFEST, "digest": f"sha256:{1:064x}", "size": 1, "platform": "linux"}],
        [{"mediaType": m.OCI_MANIFEST, "digest": f"sha256:{1:064x}", "size": 1, "platform": {"os": 5}}],
        [
            {
                "mediaType": m.OCI_MANIFEST,
                "digest": f"sha256:{1:064x}",
                "size": 1,
                "platform": {"os": "l" * 500},
            }
        ],
        ["sha256:abc"],
    ],
    ids=["not-a-list", "too-many", "platform-string", "os-number", "os-long", "entry-string"],
)
def test_index_entries_are_checked(entries: Any) -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": m.OCI_INDEX, "manifests": entries}).encode()
    with pytest.raises(ManifestInvalid):
        m.children(body)


def test_a_manifest_is_not_an_index_and_back() -> None:
    with pytest.raises(ManifestInvalid):
        m.children(json.dumps(_image()).encode())
    with pytest.raises(ManifestInvalid):
        m.image_parts(_index(("linux", "amd64")))


def test_missing_media_type_and_extra_fields_are_fine() -> None:
    layer = {k: v for k, v in LAYER.items() if k != "mediaType"}
    doc = _image(layers=[{**layer, "urls": ["https://x"], "annotations": {"k": "v"}}], subject=CONFIG)
    assert m.image_parts(json.dumps(doc).encode())[1].media_type == ""


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
KEYS = st.sampled_from(["schemaVersion", "mediaType", "config", "layers", "manifests", "annotations", "size"])


@settings(max_examples=300, deadline=None)
@given(
    doc=st.dictionaries(KEYS | st.text(max_size=8), JSON, max_size=6),
    declared=st.sampled_from([None, *m.ALL_TYPES, "text/html"]),
)
def test_parse_either_succeeds_with_typed_fields_or_raises_manifest_invalid(
    doc: dict[str, Any], declared: str | None
) -> None:
    """Whatever JSON an upstream sends: `ManifestInvalid` or a manifest whose every field is typed."""
    try:
        parsed = m.parse(json.dumps(doc).encode(), declared)
    except ManifestInvalid:
        return
    assert parsed.media_type in m.ALL_TYPES
    for descriptor in (*parsed.children, *parsed.parts):
        assert isinstance(descriptor.size, int) and 0 <= descriptor.size <= m.SIZE_BYTES_MAX
        assert descriptor.digest.startswith(("sha256:", "sha512:"))
        assert isinstance(descriptor.media_type, str) and len(descriptor.media_type) <= 255


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
