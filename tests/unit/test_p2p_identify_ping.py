"""identify messages and ping echoes: round trips, js bytes, bounds, hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.behaviours import identify, ping
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.wire import protobuf, varint
from pyrsia.p2p.wire.multiaddr import Multiaddr
from pyrsia.p2p.wire.noise import public_key_protobuf

ME = Identity.from_seed(bytes(range(32)))

protocol_ids = st.from_regex(r"/[a-z]{1,8}(/[a-z0-9.]{1,8}){0,3}", fullmatch=True)
addresses = st.tuples(st.ip_addresses(v=4), st.integers(0, 65535)).map(
    lambda hp: Multiaddr.parse(f"/ip4/{hp[0]}/tcp/{hp[1]}")
)


@given(
    agent=st.text(max_size=40),
    protocols=st.lists(protocol_ids, max_size=10),
    listen=st.lists(addresses, max_size=5),
    observed=st.none() | addresses,
)
def test_round_trip(
    agent: str, protocols: list[str], listen: list[Multiaddr], observed: Multiaddr | None
) -> None:
    info = identify.IdentifyInfo(
        agent_version=agent,
        public_key=public_key_protobuf(ME.public_key),
        listen_addrs=tuple(listen),
        observed_addr=observed,
        protocols=tuple(protocols),
    )
    reader = identify.Reader()
    wire = identify.encode_message(info)
    for start in range(0, len(wire), 7):
        reader.feed(wire[start : start + 7])
    decoded = reader.finish()
    assert decoded == info
    assert decoded.peer_id == ME.peer_id


def test_starts_like_js() -> None:
    # Reference capture: js's message opens with field 5 "ipfs/0.1.0".
    assert identify.IdentifyInfo().encode().startswith(bytes.fromhex("2a0a697066732f302e31"))


def test_split_message_merges_and_unknown_addresses_are_skipped() -> None:
    first = protobuf.encode([(6, b"js-libp2p/3.2.0"), (2, b"\xff\xff\x03junk"), (8, b"record")])
    second = protobuf.encode(
        [(3, b"/ipfs/ping/1.0.0"), (2, Multiaddr.parse("/ip4/1.2.3.4/tcp/5").to_bytes())]
    )
    reader = identify.Reader()
    reader.feed(varint.prefixed(first) + varint.prefixed(second))
    info = reader.finish()
    assert info.agent_version == "js-libp2p/3.2.0"
    assert info.protocols == ("/ipfs/ping/1.0.0",)
    assert info.listen_addrs == (Multiaddr.parse("/ip4/1.2.3.4/tcp/5"),)
    assert info.peer_id is None


def test_bounds() -> None:
    reader = identify.Reader()
    with pytest.raises(ProtocolViolation):
        reader.feed(b"\x00" * (identify.MESSAGE_BYTES_MAX + 10))
    truncated = identify.Reader()
    truncated.feed(identify.encode_message(identify.IdentifyInfo(agent_version="x"))[:-1])
    with pytest.raises(ProtocolViolation):
        truncated.finish()
    with pytest.raises(ProtocolViolation):
        identify.Reader().finish()


@given(st.binary(max_size=300))
def test_fuzz_only_violations(data: bytes) -> None:
    reader = identify.Reader()
    try:
        reader.feed(data)
        reader.finish()
    except ProtocolViolation:
        pass


def test_responder_echoes_whole_blocks_as_they_arrive() -> None:
    responder = ping.Responder()
    payload = bytes(range(32))
    assert responder.receive_data(payload[:10]) == b""
    assert responder.receive_data(payload[10:] + payload[:5]) == payload
    assert responder.receive_data(payload[5:]) == payload


def test_pinger_matches_the_echo() -> None:
    pinger = ping.Pinger()
    payload = bytes(range(32))
    assert pinger.request(payload) == payload
    assert not pinger.receive_data(payload[:16])
    assert pinger.receive_data(payload[16:])
    assert not pinger.outstanding
    pinger.request(payload)
    with pytest.raises(ProtocolViolation):
        pinger.receive_data(b"\x00" * 32)
    with pytest.raises(ProtocolViolation):
        ping.Pinger().receive_data(b"unasked")
