"""AutoNAT v1: the codec, the server and the client driven directly, hostile peers counted.

No sockets, threads or clock: events go in by hand, effects are read back, and the
host's part (dialling a `V1DialRequested` address) is played by the test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrsia.errors import ProtocolViolation
from pyrsia.formats.peer_id import base58btc_decode
from pyrsia.p2p.behaviours.autonat import v1
from pyrsia.p2p.behaviours.autonat.client import AutonatClient, ReachabilityChanged
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.wire import varint
from pyrsia.p2p.wire.multiaddr import Multiaddr

CLIENT = Identity.from_seed(b"\x01" * 32).peer_id
OTHER = Identity.from_seed(b"\x02" * 32).peer_id
SERVER = Identity.from_seed(b"\x03" * 32).peer_id
HOME = Multiaddr.parse("/ip4/20.0.0.2/tcp/4001")
SEEN = Multiaddr.parse("/ip4/20.0.0.2/tcp/51000")  # the client's ephemeral port


def _peer_bytes(peer: str) -> bytes:
    return base58btc_decode(peer)  # the multihash


def _dial(peer: str = CLIENT, *addrs: Multiaddr) -> bytes:
    return v1.encode(v1.Dial(peer_id=_peer_bytes(peer), addrs=tuple(a.to_bytes() for a in addrs or (HOME,))))


def _written(effects: Sequence[sw.Effect]) -> list[v1.Dial | v1.DialResponse]:
    reader = varint.LengthPrefixedReader(size_max=v1.MESSAGE_BYTES_MAX)
    for effect in effects:
        if isinstance(effect, sw.Write):
            reader.feed(effect.data)
    out = []
    while (body := reader.next_message()) is not None:
        out.append(v1.decode(body))
    return out


def _response(effects: Sequence[sw.Effect]) -> v1.DialResponse:
    (message,) = _written(effects)
    assert isinstance(message, v1.DialResponse)
    assert any(isinstance(e, sw.CloseStream) for e in effects), "the server closes the stream after answering"
    return message


def _reports(effects: Sequence[sw.Effect], kind: type) -> list:  # type: ignore[type-arg]
    return [e.outcome for e in effects if isinstance(e, sw.Report) and isinstance(e.outcome, kind)]


# -- codec --------------------------------------------------------------------------------


def test_a_dial_has_the_wire_bytes_of_the_spec() -> None:
    peer = _peer_bytes(CLIENT)
    info = (
        b"\x0a"
        + varint.encode(len(peer))
        + peer
        + b"\x12"
        + varint.encode(len(HOME.to_bytes()))
        + HOME.to_bytes()
    )
    dial = b"\x0a" + varint.encode(len(info)) + info
    body = b"\x08\x00" + b"\x12" + varint.encode(len(dial)) + dial  # proto2 writes type DIAL = 0
    assert _dial() == varint.prefixed(body)
    assert v1.decode(body) == v1.Dial(peer_id=peer, addrs=(HOME.to_bytes(),))


def test_a_dial_response_round_trips() -> None:
    response = v1.DialResponse(status=v1.E_DIAL_ERROR, status_text="refused", addr=HOME.to_bytes())
    encoded = v1.encode(response)
    length, offset = varint.decode(encoded) or (0, 0)
    assert v1.decode(encoded[offset : offset + length]) == response
    ok = v1.encode(v1.DialResponse(status=v1.OK))
    assert ok[1:] == b"\x08\x01\x1a\x02\x08\x00"  # status OK (0) is written: proto2


@pytest.mark.parametrize(
    "body",
    [
        b"\x08\x00",  # a DIAL with no dial
        b"\x08\x00\x12\x00",  # a dial with no peer
        b"\x08\x01",  # a DIAL_RESPONSE with no dialResponse
        b"\x08\x07",  # an unknown message type
        b"\x08",  # ends inside a varint
        b"\x12\x05\x0a",  # a field running past the end
        b"\x0b",  # wire type 3
        b"\x08\x00\x12\x02\x0a\x00\x10",  # truncated inside PeerInfo
    ],
)
def test_malformed_messages_are_violations(body: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        v1.decode(body)


def test_a_dial_listing_too_many_addresses_is_a_violation() -> None:
    message = _dial(CLIENT, *[HOME] * (v1.ADDRS_MAX + 1))
    _length, offset = varint.decode(message) or (0, 0)
    with pytest.raises(ProtocolViolation, match="addresses"):
        v1.decode(message[offset:])


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_a_violation(data: bytes) -> None:
    with contextlib.suppress(ProtocolViolation):
        v1.decode(data)


# -- server -------------------------------------------------------------------------------


def _server(remote: Multiaddr = SEEN, *, relayed: bool = False, **limits: float) -> v1.AutonatV1Server:
    server = v1.AutonatV1Server(**limits)  # type: ignore[arg-type]
    up = sw.ConnectionUp(conn=1, peer=CLIENT, direction="inbound", remote=remote, relayed=relayed)
    server.on_event(up, 0.0)
    return server


def _ask(
    server: v1.AutonatV1Server, data: bytes, *, conn: int = 1, stream: int = 1, now_s: float = 0.0
) -> list[sw.Effect]:
    effects = list(server.on_event(sw.InboundStream(conn=conn, stream=stream, protocol=v1.PROTOCOL), now_s))
    effects += server.on_event(sw.StreamData(conn=conn, stream=stream, data=data), now_s)
    return effects


def test_the_server_dials_the_requesters_address_and_answers_ok() -> None:
    server = _server()
    effects = _ask(server, _dial())
    (asked,) = _reports(effects, v1.V1DialRequested)
    assert (asked.peer, asked.address) == (CLIENT, HOME)
    assert server.dials == 1
    done = server.dial_back_connected(asked.tag, 7, 1.0)
    assert sw.CloseConnection(conn=7, reason="autonat v1 dial done") in done  # made for this dial alone
    assert _response(done) == v1.DialResponse(status=v1.OK, addr=HOME.to_bytes())
    (served,) = _reports(done, v1.V1DialServed)
    assert served.status == v1.OK and server.dials == 0


def test_the_server_tries_the_next_address_then_answers_dial_error() -> None:
    server = _server()
    second = Multiaddr.parse("/ip4/20.0.0.2/tcp/4002")
    (asked,) = _reports(_ask(server, _dial(CLIENT, HOME, second)), v1.V1DialRequested)
    (again,) = _reports(server.dial_back_failed(asked.tag, "refused", 1.0), v1.V1DialRequested)
    assert again.address == second
    answer = _response(server.dial_back_failed(again.tag, "connection refused", 2.0))
    assert (answer.status, answer.status_text, answer.addr) == (
        v1.E_DIAL_ERROR,
        "connection refused",
        second.to_bytes(),
    )


def test_the_server_tries_at_most_dial_addrs_max_addresses() -> None:
    server = _server()
    addrs = [Multiaddr.parse(f"/ip4/20.0.0.2/tcp/{4000 + i}") for i in range(10)]
    effects = _ask(server, _dial(CLIENT, *addrs))
    tried = []
    while asked := _reports(effects, v1.V1DialRequested):
        tried.append(asked[0].address)
        effects = server.dial_back_failed(asked[0].tag, "no", 1.0)
    assert tried == addrs[: v1.DIAL_ADDRS_MAX]
    assert _response(effects).status == v1.E_DIAL_ERROR


@pytest.mark.parametrize(
    "address",
    [
        "/ip4/20.0.0.3/tcp/4001",  # another IP: the amplification rule
        "/ip4/127.0.0.1/tcp/4001",
        "/ip4/20.0.0.2/udp/4001/quic-v1",
        "/ip4/20.0.0.2/tcp/0",
        "/dns4/example.com/tcp/4001",
        f"/ip4/20.0.0.2/tcp/4001/p2p/{OTHER}",  # someone else's address
        f"/ip4/20.0.0.9/tcp/4001/p2p/{SERVER}/p2p-circuit/p2p/{CLIENT}",
    ],
)
def test_the_server_refuses_addresses_it_must_not_dial(address: str) -> None:
    server = _server()
    try:
        raw = Multiaddr.parse(address).to_bytes()
    except ProtocolViolation:
        pytest.skip(f"{address} is not a multiaddr pyrsia encodes")
    data = v1.encode(v1.Dial(peer_id=_peer_bytes(CLIENT), addrs=(raw,)))
    effects = _ask(server, data)
    assert not _reports(effects, v1.V1DialRequested)
    assert _response(effects).status == v1.E_DIAL_REFUSED
    assert server.refusals["autonat_v1_no_dialable_address"] == 1


def test_the_server_dials_the_requesters_own_p2p_address_without_the_suffix() -> None:
    server = _server()
    (asked,) = _reports(_ask(server, _dial(CLIENT, HOME.with_peer(CLIENT))), v1.V1DialRequested)
    assert asked.address == HOME


def test_a_request_through_a_relay_is_refused() -> None:
    server = _server(relayed=True)
    assert _response(_ask(server, _dial())).status == v1.E_DIAL_REFUSED
    assert server.refusals["autonat_v1_no_dialable_address"] == 1


def test_another_peers_id_in_the_dial_is_a_bad_request() -> None:
    server = _server()
    answer = _response(_ask(server, _dial(OTHER)))
    assert (answer.status, answer.status_text) == (v1.E_BAD_REQUEST, "peer id mismatch")
    assert server.refusals["autonat_v1_peer_mismatch"] == 1


def test_a_dial_response_sent_to_the_server_is_a_bad_request() -> None:
    server = _server()
    assert _response(_ask(server, v1.encode(v1.DialResponse(status=v1.OK)))).status == v1.E_BAD_REQUEST
    assert server.refusals["autonat_v1_not_a_dial"] == 1


def test_garbage_and_oversized_messages_reset_the_stream() -> None:
    server = _server()
    effects = _ask(server, varint.prefixed(b"\x0b"))
    assert effects == [sw.ResetStream(conn=1, stream=1)]
    effects = _ask(server, varint.encode(v1.MESSAGE_BYTES_MAX + 1), stream=3)
    assert effects == [sw.ResetStream(conn=1, stream=3)]
    assert server.refusals["autonat_v1_malformed"] == 2


def test_one_request_per_peer_at_a_time() -> None:
    server = _server()
    assert _reports(_ask(server, _dial()), v1.V1DialRequested)
    assert _response(_ask(server, _dial(), stream=3)).status == v1.E_DIAL_REFUSED
    assert server.refusals["autonat_v1_peer_concurrent"] == 1


def test_requests_per_peer_per_minute_are_bounded() -> None:
    server = _server()
    for i in range(v1.REQUESTS_PER_PEER_PER_MINUTE_MAX):
        (asked,) = _reports(_ask(server, _dial(), stream=2 * i + 1, now_s=float(i)), v1.V1DialRequested)
        server.dial_back_connected(asked.tag, 100 + i, float(i))
    late = _ask(server, _dial(), stream=999, now_s=20.0)
    assert _response(late).status == v1.E_DIAL_REFUSED
    assert server.refusals["autonat_v1_peer_rate"] == 1
    assert _reports(_ask(server, _dial(), stream=1001, now_s=61.5), v1.V1DialRequested)  # the window moved on


def test_dials_at_once_are_bounded() -> None:
    server = v1.AutonatV1Server(dials_concurrent_max=2)
    peers = [Identity.from_seed(bytes([10 + i]) * 32).peer_id for i in range(3)]
    statuses = []
    for i, peer in enumerate(peers):
        seen = Multiaddr.parse(f"/ip4/20.0.{i}.2/tcp/5000")
        server.on_event(sw.ConnectionUp(conn=i + 1, peer=peer, direction="inbound", remote=seen), 0.0)
        home = Multiaddr.parse(f"/ip4/20.0.{i}.2/tcp/4001")
        effects = _ask(server, _dial(peer, home), conn=i + 1)
        statuses.append("dialing" if _reports(effects, v1.V1DialRequested) else _response(effects).status)
    assert statuses == ["dialing", "dialing", v1.E_DIAL_REFUSED]
    assert server.refusals["autonat_v1_dials_busy"] == 1


def test_tick_ends_slow_requests_and_slow_dials() -> None:
    server = _server()
    server.on_event(sw.InboundStream(conn=1, stream=1, protocol=v1.PROTOCOL), 0.0)
    assert server.tick(v1.REQUEST_TIMEOUT_S + 1) == [sw.ResetStream(conn=1, stream=1)]
    assert server.refusals["autonat_v1_request_timeout"] == 1
    effects = _ask(server, _dial(), stream=3, now_s=100.0)
    (asked,) = _reports(effects, v1.V1DialRequested)
    answer = _response(server.tick(100.0 + v1.DIAL_TIMEOUT_S + 1))
    assert (answer.status, answer.status_text) == (v1.E_DIAL_ERROR, "dial timed out")
    late = server.dial_back_connected(asked.tag, 9, 200.0)
    assert late == [sw.CloseConnection(conn=9, reason="autonat v1 dial done")]  # only closed


def test_a_requester_gone_mid_dial_hears_nothing() -> None:
    server = _server()
    (asked,) = _reports(_ask(server, _dial()), v1.V1DialRequested)
    server.on_event(sw.ConnectionDown(conn=1, peer=CLIENT, reason="gone"), 1.0)
    assert server.dial_back_connected(asked.tag, 9, 2.0) == [
        sw.CloseConnection(conn=9, reason="autonat v1 dial done")
    ]
    assert server.dials == 0


# -- client -------------------------------------------------------------------------------


def _client(remote: str = "/ip4/30.0.0.2/tcp/4001") -> v1.AutonatV1Client:
    client = v1.AutonatV1Client(CLIENT)
    client.on_event(
        sw.ConnectionUp(conn=1, peer=SERVER, direction="outbound", remote=Multiaddr.parse(remote)), 0.0
    )
    return client


def _probe(client: v1.AutonatV1Client, address: Multiaddr = HOME) -> list[sw.Effect]:
    (open_stream,) = client.probe(1, address, 0.0)
    assert isinstance(open_stream, sw.OpenStream) and open_stream.protocols == (v1.PROTOCOL,)
    opened = sw.StreamOpened(conn=1, stream=5, protocol=v1.PROTOCOL, tag=open_stream.tag)
    return list(client.on_event(opened, 0.0))


def _answer(client: v1.AutonatV1Client, response: v1.DialResponse) -> v1.V1ProbeResult:
    effects = client.on_event(sw.StreamData(conn=1, stream=5, data=v1.encode(response)), 1.0)
    assert sw.CloseStream(conn=1, stream=5) in effects
    (result,) = _reports(effects, v1.V1ProbeResult)
    return result  # type: ignore[no-any-return]


def test_the_client_asks_about_exactly_one_address_with_its_own_peer_id() -> None:
    client = _client()
    (dial,) = _written(_probe(client, HOME.with_peer(CLIENT)))
    assert dial == v1.Dial(peer_id=_peer_bytes(CLIENT), addrs=(HOME.to_bytes(),))


@pytest.mark.parametrize(
    ("response", "result", "verdict"),
    [
        (v1.DialResponse(status=v1.OK, addr=HOME.to_bytes()), v1.RESULT_REACHABLE, True),
        (v1.DialResponse(status=v1.OK), v1.RESULT_REACHABLE, True),  # addr is optional
        (v1.DialResponse(status=v1.E_DIAL_ERROR, status_text="timeout"), v1.RESULT_UNREACHABLE, False),
        (v1.DialResponse(status=v1.E_DIAL_REFUSED), v1.RESULT_REFUSED, None),
        (v1.DialResponse(status=v1.E_BAD_REQUEST), v1.RESULT_FAILED, None),
        (v1.DialResponse(status=v1.E_INTERNAL_ERROR), v1.RESULT_FAILED, None),
    ],
)
def test_the_client_reads_each_status(response: v1.DialResponse, result: str, verdict: bool | None) -> None:
    client = _client()
    _probe(client)
    probed = _answer(client, response)
    assert (probed.server, probed.address, probed.result, probed.verdict) == (SERVER, HOME, result, verdict)
    assert probed.server_key == "net:30.0.0.0/24"
    assert client.results[result] == 1


def test_an_ok_for_another_address_decides_nothing() -> None:
    client = _client()
    _probe(client)
    other = Multiaddr.parse("/ip4/20.0.0.2/tcp/9999").to_bytes()
    assert _answer(client, v1.DialResponse(status=v1.OK, addr=other)).verdict is None
    assert client.refusals["autonat_v1_wrong_addr"] == 1


def test_an_unknown_status_decides_nothing_and_is_counted() -> None:
    client = _client()
    _probe(client)
    assert _answer(client, v1.DialResponse(status=77)).result == v1.RESULT_FAILED
    assert client.refusals["autonat_v1_unknown_status"] == 1


def test_a_server_sending_a_dial_or_garbage_is_reset() -> None:
    for data in (_dial(), varint.prefixed(b"\x0b"), varint.encode(v1.MESSAGE_BYTES_MAX + 1)):
        client = _client()
        _probe(client)
        effects = client.on_event(sw.StreamData(conn=1, stream=5, data=data), 1.0)
        assert sw.ResetStream(conn=1, stream=5) in effects
        assert [r.result for r in _reports(effects, v1.V1ProbeResult)] == [v1.RESULT_FAILED]
        assert client.refusals["autonat_v1_malformed"] == 1


def test_a_stream_closed_unanswered_ends_the_probe_and_quiets_the_server() -> None:
    client = _client()
    _probe(client)
    effects = client.on_event(sw.StreamEnded(conn=1, stream=5), 1.0)
    assert [r.detail for r in _reports(effects, v1.V1ProbeResult)] == ["server closed the stream unanswered"]
    assert client.refusals["autonat_v1_unanswered"] == 1
    assert not client.asks(SERVER, 2.0) and client.probe(1, HOME, 2.0) == []
    later = 1.0 + v1.UNANSWERED_QUIET_S
    assert client.asks(SERVER, later) and client.probe(1, HOME, later)


def test_a_connection_closed_mid_probe_quiets_the_server() -> None:
    client = _client()
    _probe(client)
    effects = client.on_event(sw.ConnectionDown(conn=1, peer=SERVER, reason="closed"), 1.0)
    assert [r.detail for r in _reports(effects, v1.V1ProbeResult)] == ["connection closed"]
    assert not client.asks(SERVER, 2.0)


def test_quiet_servers_are_bounded() -> None:
    client = v1.AutonatV1Client(CLIENT)
    peers = [Identity.from_seed(i.to_bytes(32, "big")).peer_id for i in range(v1.QUIET_SERVERS_MAX + 1)]
    for conn, peer in enumerate(peers, start=1):
        remote = Multiaddr.parse("/ip4/30.0.0.2/tcp/4001")
        client.on_event(sw.ConnectionUp(conn=conn, peer=peer, direction="outbound", remote=remote), 0.0)
        assert client.probe(conn, HOME, 0.0)
        client.on_event(sw.ConnectionDown(conn=conn, peer=peer, reason="closed"), 0.0)
    assert client.asks(peers[0], 1.0)  # the oldest was forgotten
    assert not any(client.asks(peer, 1.0) for peer in peers[1:])


def test_a_silent_server_times_out() -> None:
    client = _client()
    _probe(client)
    assert client.tick(v1.PROBE_TIMEOUT_S - 1) == []
    effects = client.tick(v1.PROBE_TIMEOUT_S + 1)
    assert sw.ResetStream(conn=1, stream=5) in effects
    assert [r.detail for r in _reports(effects, v1.V1ProbeResult)] == ["timed out"]
    assert client.asks(SERVER, v1.PROBE_TIMEOUT_S + 2)  # slow is not quiet: asked again later


def test_one_probe_per_connection_and_none_on_unknown_connections() -> None:
    client = _client()
    assert client.probe(1, HOME, 0.0)
    assert client.probe(1, HOME, 0.0) == []
    assert client.probe(2, HOME, 0.0) == []
    assert client.on_event(sw.InboundStream(conn=1, stream=8, protocol=v1.PROTOCOL), 0.0) == [
        sw.ResetStream(conn=1, stream=8)
    ]


# -- client and server together, and the shared tally -----------------------------------


def _round_trip(
    client: v1.AutonatV1Client, server: v1.AutonatV1Server, *, reachable: bool
) -> v1.V1ProbeResult:
    """One probe over an in-test stream; the host's dial succeeds when `reachable`."""
    to_server = [e for e in _probe(client) if isinstance(e, sw.Write)]
    effects = list(server.on_event(sw.InboundStream(conn=1, stream=5, protocol=v1.PROTOCOL), 0.0))
    for write in to_server:
        effects += server.on_event(sw.StreamData(conn=1, stream=5, data=write.data), 0.0)
    (asked,) = _reports(effects, v1.V1DialRequested)
    done = (
        server.dial_back_connected(asked.tag, 9, 1.0)
        if reachable
        else server.dial_back_failed(asked.tag, "refused", 1.0)
    )
    data = b"".join(e.data for e in done if isinstance(e, sw.Write))
    (result,) = _reports(client.on_event(sw.StreamData(conn=1, stream=5, data=data), 1.0), v1.V1ProbeResult)
    return result  # type: ignore[no-any-return]


@pytest.mark.parametrize("reachable", [True, False])
def test_three_v1_servers_decide_the_shared_tally(reachable: bool) -> None:
    tally = AutonatClient(lambda n: bytes(n))
    changed: list[ReachabilityChanged] = []
    for i in range(3):
        server_ip = f"{30 + i}.0.0.2"
        client = _client(f"/ip4/{server_ip}/tcp/4001")
        server = _server()
        result = _round_trip(client, server, reachable=reachable)
        assert result.verdict is reachable
        assert result.server_key == f"net:{30 + i}.0.0.0/24"
        effects = tally.record(result.address, result.server_key, reachable=reachable, conn=0, now_s=1.0)
        changed += _reports(effects, ReachabilityChanged)
    assert tally.reachability == ("public" if reachable else "private")
    assert tally.status(HOME) == ("reachable" if reachable else "unreachable")
    assert [c.reachability for c in changed] == [tally.reachability]  # the third answer decided it


def test_one_server_answering_twice_counts_once() -> None:
    tally = AutonatClient(lambda n: bytes(n))
    for _ in range(3):
        tally.record(HOME, "net:30.0.0.0/24", reachable=True, conn=0, now_s=1.0)
    assert tally.reachability == "unknown"
