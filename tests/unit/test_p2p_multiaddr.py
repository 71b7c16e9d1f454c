"""Multiaddrs: text and binary round trips, known encodings, hostile bytes."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.wire.multiaddr import Multiaddr, tcp

PEER = Identity.from_seed(bytes(32)).peer_id


def test_known_binary_forms() -> None:
    # multiformats/multiaddr examples: ip4 code 0x04, tcp 0x06 with a big-endian port.
    assert Multiaddr.parse("/ip4/127.0.0.1/tcp/4001").to_bytes().hex() == "047f000001060fa1"
    assert Multiaddr.parse("/ip6/::1/tcp/80").to_bytes().hex() == "29" + "00" * 15 + "01" + "060050"
    dns = Multiaddr.parse("/dns4/example.com/tcp/443")
    assert dns.to_bytes() == b"\x36\x0bexample.com\x06\x01\xbb"
    with_peer = Multiaddr.parse(f"/ip4/127.0.0.1/tcp/44000/p2p/{PEER}")
    raw = with_peer.to_bytes()
    # p2p = 0x01a5 as a varint (a5 03), then the 38-byte identity multihash of the key.
    assert raw[8:11] == b"\xa5\x03\x26"
    assert Multiaddr.from_bytes(raw) == with_peer


def test_parts() -> None:
    address = Multiaddr.parse(f"/ip4/10.0.0.1/tcp/44000/ipfs/{PEER}")
    assert str(address) == f"/ip4/10.0.0.1/tcp/44000/p2p/{PEER}"
    assert address.peer_id == PEER
    assert address.tcp_endpoint() == ("10.0.0.1", 44000)
    assert str(address.without_peer()) == "/ip4/10.0.0.1/tcp/44000"
    assert tcp("::1", 5, PEER) == Multiaddr.parse(f"/ip6/::1/tcp/5/p2p/{PEER}")
    assert tcp("node.example", 1).tcp_endpoint() == ("node.example", 1)
    relayed = Multiaddr.parse(f"/ip4/1.2.3.4/tcp/1/p2p/{PEER}/p2p-circuit/p2p/{PEER}")
    assert relayed.is_relayed and relayed.tcp_endpoint() is None
    assert Multiaddr.from_bytes(relayed.to_bytes()) == relayed


ip4 = st.ip_addresses(v=4).map(str)
ip6 = st.ip_addresses(v=6).map(str)
ports = st.integers(min_value=0, max_value=65535)
names = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,6})?", fullmatch=True)


@given(
    host=st.one_of(
        ip4.map(lambda a: ("ip4", a)), ip6.map(lambda a: ("ip6", a)), names.map(lambda n: ("dns", n))
    ),
    port=ports,
    peer=st.booleans(),
    transport=st.sampled_from(["tcp", "udp"]),
)
def test_round_trip(host: tuple[str, str], port: int, peer: bool, transport: str) -> None:
    family, value = host
    text = f"/{family}/{value}/{transport}/{port}" + (f"/p2p/{PEER}" if peer else "")
    address = Multiaddr.parse(text)
    if family != "dns":
        assert address.components[0][1] == str(ipaddress.ip_address(value))
    assert Multiaddr.parse(str(address)) == address
    assert Multiaddr.from_bytes(address.to_bytes()) == address


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ip4/1.2.3.4",
        "/ip4/1.2.3.4/tcp",
        "/ip4/300.1.1.1/tcp/1",
        "/ip4/1.2.3.4/tcp/65536",
        "/ip4/1.2.3.4/tcp/-1",
        "/ip4/1.2.3.4/tcp/x",
        "/bogus/1",
        "/dns4//tcp/1",
        "/p2p/notbase58!",
        "/p2p/1111",
    ],
)
def test_bad_text_is_a_violation(text: str) -> None:
    with pytest.raises(ProtocolViolation):
        Multiaddr.parse(text)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x04\x7f\x00", b"\x06\x00", b"\xff\xff\x03", b"\x36\x05ab", b"\xa5\x03\x00", b"\x36\x01/"],
)
def test_bad_binary_is_a_violation(raw: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        Multiaddr.from_bytes(raw)


@given(st.binary(max_size=80))
def test_fuzz_binary_only_violations(raw: bytes) -> None:
    try:
        address = Multiaddr.from_bytes(raw)
    except ProtocolViolation:
        return
    assert Multiaddr.from_bytes(address.to_bytes()) == address


@given(st.text(max_size=60))
def test_fuzz_text_only_violations(text: str) -> None:
    with contextlib.suppress(ProtocolViolation):
        Multiaddr.parse(text)
