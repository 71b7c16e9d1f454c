"""What is written can be read: every limit the decoder enforces holds when a value is
built, so a node can never commit a block it cannot reopen.

Two defects found in the field start this file: a 5,000-character author committed,
after which every restart and `pyrsia log verify` failed with "a text field is too
long"; and a size of 2**63 that wrote a block, then failed the SQLite index with
OverflowError, and a retry wrote another block. Hypothesis then throws hostile field
values at the builders and at a real ledger.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from pyrsia.errors import ChainBroken, TxInvalid
from pyrsia.translog import codec
from pyrsia.translog.block import DEFAULT_REGISTRIES, Block
from pyrsia.translog.chain import Chain, genesis_block
from pyrsia.translog.ledger import Ledger, verify_chain
from pyrsia.translog.tx import (
    ADD_ARTIFACT,
    DEPENDENCIES_MAX,
    INTEGER_MAX,
    TEXT_FIELD_CHARS_MAX,
    AddArtifact,
    Transaction,
    registry_of,
    sign,
)

KEY = SigningKey(bytes(range(32)))
T0 = 1_700_000_000
FIELDS = [f.name for f in dataclasses.fields(AddArtifact)]


def valid(**changes: Any) -> dict[str, Any]:
    return {
        "package_type": "maven",
        "package_id": "com.example:hello:1.0",
        "path": "/maven2/com/example/hello/1.0/hello-1.0.jar",
        "digest": "sha256:" + "ab" * 32,
        "size": 1234,
        "chunk_size": 1 << 20,
        "chunk_root": bytes(32),
        "media_type": "application/java-archive",
        "source": "https://repo.maven.apache.org/maven2",
        "author": "Ada",
        "dependencies": ("com.example:base:2.0",),
        "registry": "",
        # A mirrored file: no build-from-source fields.
        "build_source": "",
        "build_commit": "",
        "build_spec": "",
        "builder_jdk": "",
        "builder_maven": "",
        "reproduces_upstream": "",
        **changes,
    }


def smuggled(**fields: Any) -> AddArtifact:
    """A payload whose constructor was bypassed, as a bug or a hostile caller could."""
    payload = object.__new__(AddArtifact)
    for name, value in fields.items():
        object.__setattr__(payload, name, value)
    return payload


def files_of(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "blocks").iterdir())


# -- the defects, reproduced ------------------------------------------------------------


@pytest.mark.parametrize("field", ["author", "media_type"])
def test_a_5000_character_text_field_is_refused_when_built_and_never_committed(
    tmp_path: Path, field: str
) -> None:
    with pytest.raises(TxInvalid, match=f"{field} is 5000 characters, more than {TEXT_FIELD_CHARS_MAX}"):
        AddArtifact(**valid(**{field: "x" * 5000}))
    ledger = Ledger.open(tmp_path, KEY)
    before = files_of(tmp_path)
    with pytest.raises(TxInvalid, match="5000 characters"):
        ledger.publish([smuggled(**valid(**{field: "x" * 5000}))])
    assert ledger.height == 0 and files_of(tmp_path) == before
    ledger.close()
    assert Ledger.open(tmp_path, KEY).height == 0 and verify_chain(tmp_path).ok


def test_a_size_of_2_63_is_refused_when_built_and_a_retry_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(TxInvalid, match=r"size 9223372036854775808 is outside 0\.\.9223372036854775807"):
        AddArtifact(**valid(size=2**63))
    ledger = Ledger.open(tmp_path, KEY)
    before = files_of(tmp_path)
    for _attempt in range(2):
        with pytest.raises(TxInvalid, match="size"):
            ledger.publish([smuggled(**valid(size=2**63))])
    assert ledger.height == 0 and files_of(tmp_path) == before
    largest = ledger.publish([AddArtifact(**valid(size=INTEGER_MAX))])  # the boundary is fine
    record = ledger.latest("maven", valid()["path"])
    assert record is not None and record.size == INTEGER_MAX and largest.header.height == 1
    ledger.close()
    assert verify_chain(tmp_path).ok


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"chunk_size": 0}, "chunk_size 0 is outside"),
        ({"chunk_root": b""}, "chunk_root is 0 bytes, not 32"),
        ({"chunk_root": bytes(33)}, "chunk_root is 33 bytes"),
        ({"chunk_root": "00" * 32}, "chunk_root must be bytes"),
        ({"size": -1}, "size -1 is outside"),
        ({"size": 10**30}, "size 1000000000000000000000000000000 is outside"),
        ({"size": True}, "size must be an integer"),
        ({"size": 1.0}, "size must be an integer"),
        ({"package_type": "npm"}, "unknown package type"),
        ({"digest": ""}, "digest is empty"),
        ({"author": "\udc80"}, "author is not encodable as UTF-8"),
        ({"author": b"Ada"}, "author must be text"),
        ({"dependencies": ["a"]}, "dependencies must be a tuple"),
        ({"dependencies": ("a",) * (DEPENDENCIES_MAX + 1)}, "1001 dependencies"),
        ({"dependencies": ("",)}, "a dependency is empty"),
        ({"dependencies": (7,)}, "a dependency must be text"),
    ],
)
def test_each_limit_names_its_field(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(TxInvalid) as refused:
        AddArtifact(**valid(**changes))
    assert reason in refused.value.message


def test_a_transaction_too_large_to_read_back_is_refused_when_signed() -> None:
    huge = AddArtifact(**valid(dependencies=tuple(f"{n:04d}" + "x" * 4000 for n in range(400))))
    with pytest.raises(TxInvalid, match=r"transaction encodes to \d+ bytes, more than 1048576"):
        sign(KEY, type=ADD_ARTIFACT, payload=huge, time=T0, nonce=1)
    for bad in ({"time": -1}, {"nonce": 2**63}, {"time": 10**30}):
        with pytest.raises(TxInvalid):
            sign(KEY, type=ADD_ARTIFACT, payload=AddArtifact(**valid()), **{"time": T0, "nonce": 1, **bad})


# -- hostile values, thrown at the builders and a ledger ---------------------------------

hostile_ints = st.sampled_from([-(2**64), -1, 0, 1, 1023, 1024, 1 << 20, 1 << 26, (1 << 26) + 1,
                                INTEGER_MAX, 2**63, 2**64, 10**30, True, "1", 1.5, None])  # fmt: skip
awkward_chars = st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF, categories=None)
hostile_text = st.one_of(
    st.text(awkward_chars, max_size=40),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
    st.integers(TEXT_FIELD_CHARS_MAX - 2, TEXT_FIELD_CHARS_MAX + 2).map(lambda n: "\U0001f600" * n),
    st.just(""),
    st.just("\x00nul\x00"),
    st.sampled_from([b"bytes", 7, None, ["list"]]),
)
hostile_values: dict[str, st.SearchStrategy[Any]] = {
    **{
        name: hostile_text
        for name in ("package_id", "path", "digest", "media_type", "source", "author", "registry")
    },
    "build_commit": st.one_of(hostile_text, st.just("a" * 40)),
    "reproduces_upstream": st.one_of(hostile_text, st.sampled_from(["yes", "no", "absent"])),
    "package_type": st.one_of(st.sampled_from(["docker", "maven", "npm", ""]), hostile_text),
    "size": hostile_ints,
    "chunk_size": hostile_ints,
    "chunk_root": st.one_of(st.binary(min_size=30, max_size=34), st.just("00" * 32), st.none()),
    "dependencies": st.one_of(
        st.lists(hostile_text, max_size=4).map(tuple),
        st.lists(hostile_text, max_size=3),
        st.integers(DEPENDENCIES_MAX - 1, DEPENDENCIES_MAX + 1).map(lambda n: ("com.example:dep:1",) * n),
    ),
}


@st.composite
def hostile_fields(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(sorted(hostile_values)), min_size=1, max_size=3, unique=True))
    return valid(**{name: draw(hostile_values[name]) for name in names})


def built(fields: dict[str, Any]) -> Transaction | None:
    """The signed transaction, or None if refused at build time (only ever `TxInvalid`)."""
    try:
        return sign(KEY, type=ADD_ARTIFACT, payload=AddArtifact(**fields), time=T0, nonce=3)
    except TxInvalid:
        return None


def vouched(fields: dict[str, Any]) -> bool:
    """Whether the built-in registry list covers the record (only Docker records name one)."""
    docker = fields["package_type"] == "docker"
    return not docker or registry_of("docker", fields["registry"]) in DEFAULT_REGISTRIES


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_fields())
def test_hostile_fields_are_refused_when_built_or_round_trip(fields: dict[str, Any]) -> None:
    tx = built(fields)
    if tx is None:
        return
    assert Transaction.from_map(codec.decode(codec.encode(tx.to_map()))) == tx
    chain = Chain()
    chain.apply(genesis_block(KEY, T0))
    if not vouched(fields):  # well formed, but for a registry this network does not vouch for
        with pytest.raises(ChainBroken, match="which the network does not vouch for"):
            chain.apply(chain.propose_certified([tx], T0, KEY))
        return
    block = chain.propose_certified([tx], T0, KEY)
    assert block.encode() == codec.encode(block.to_map())  # assembled from parts, yet canonical
    again = Block.decode(block.encode())
    assert again == block
    chain.apply(again)


def test_a_ledger_given_hostile_payloads_stores_only_what_it_reads_back(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, KEY)
    committed: list[AddArtifact] = []
    refused: list[dict[str, Any]] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(hostile_fields())
    def publish(fields: dict[str, Any]) -> None:
        height, names = ledger.height, files_of(tmp_path)
        payload = AddArtifact(**fields) if built(fields) is not None else smuggled(**fields)
        try:
            block = ledger.publish([payload])
        except TxInvalid:
            assert built(fields) is None or not vouched(fields)
            assert (ledger.height, files_of(tmp_path)) == (height, names)
            refused.append(fields)
            return
        committed.append(payload)
        assert block.header.height == height + 1
        record = ledger.latest(payload.package_type, payload.path)
        assert record is not None
        stored = {k: v for k, v in record.to_json().items() if k in FIELDS}
        expected = {
            **fields,
            "chunk_root": payload.chunk_root.hex(),
            "dependencies": list(payload.dependencies),
            # The index holds a record without a registry under its type's default one.
            "registry": registry_of(payload.package_type, payload.registry),
        }
        assert stored == expected

    publish()
    ledger.close()
    assert committed and refused, "the examples should both pass and fail the limits"
    again = Ledger.open(tmp_path, KEY)
    assert again.size == 1 + len(committed) and verify_chain(tmp_path).ok
    again.close()
