"""The identify and ping behaviours, driven event by event with no swarm, socket or clock."""

from __future__ import annotations

from pyrsia.p2p.behaviours import identify, ping
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.wire import varint
from pyrsia.p2p.wire.multiaddr import Multiaddr
from pyrsia.p2p.wire.noise import public_key_protobuf

ME = Identity.from_seed(bytes(range(32)))
PEER = Identity.from_seed(bytes(range(1, 33)))
OTHER = Identity.from_seed(bytes(range(2, 34)))
REMOTE = Multiaddr.parse("/ip4/10.0.0.7/tcp/51234")


def _local(remote: Multiaddr) -> identify.IdentifyInfo:
    return identify.IdentifyInfo(
        agent_version="pyrsia/test",
        public_key=public_key_protobuf(ME.public_key),
        observed_addr=remote,
        protocols=(identify.PROTOCOL_ID,),
    )


def _message(who: Identity) -> bytes:
    info = identify.IdentifyInfo(agent_version="them", public_key=public_key_protobuf(who.public_key))
    return identify.encode_message(info)


def _up(behaviour: identify.Identify | ping.Ping, conn: int = 1) -> list[sw.Effect]:
    event = sw.ConnectionUp(conn=conn, peer=PEER.peer_id, direction="inbound", remote=REMOTE)
    return list(behaviour.on_event(event, 0.0))


def test_identify_asks_every_new_connection_and_reports_the_answer() -> None:
    behaviour = identify.Identify(_local)
    assert _up(behaviour) == [sw.OpenStream(conn=1, protocols=(identify.PROTOCOL_ID,), tag="identify")]
    assert (
        behaviour.on_event(
            sw.StreamOpened(conn=1, stream=3, protocol=identify.PROTOCOL_ID, tag="identify"), 0
        )
        == ()
    )
    behaviour.on_event(sw.StreamData(conn=1, stream=3, data=_message(PEER)), 0.0)
    effects = list(behaviour.on_event(sw.StreamEnded(conn=1, stream=3), 0.0))
    assert effects[0] == sw.CloseStream(conn=1, stream=3)
    report = effects[1]
    assert isinstance(report, sw.Report) and isinstance(report.outcome, identify.Identified)
    assert report.outcome.peer == PEER.peer_id and report.outcome.info.agent_version == "them"


def test_identify_answers_with_the_remote_address_as_observed() -> None:
    behaviour = identify.Identify(_local)
    _up(behaviour)
    write, close = behaviour.on_event(sw.InboundStream(conn=1, stream=2, protocol=identify.PROTOCOL_ID), 0.0)
    assert isinstance(write, sw.Write) and close == sw.CloseStream(conn=1, stream=2)
    length, used = varint.decode(write.data) or (0, 0)
    info = identify.IdentifyInfo.decode(write.data[used : used + length])
    assert info.observed_addr == REMOTE and info.peer_id == ME.peer_id


def test_a_message_with_another_peers_key_closes_the_connection() -> None:
    behaviour = identify.Identify(_local)
    _up(behaviour)
    behaviour.on_event(sw.StreamOpened(conn=1, stream=3, protocol=identify.PROTOCOL_ID, tag="identify"), 0.0)
    behaviour.on_event(sw.StreamData(conn=1, stream=3, data=_message(OTHER)), 0.0)
    effects = list(behaviour.on_event(sw.StreamEnded(conn=1, stream=3), 0.0))
    assert len(effects) == 1 and isinstance(effects[0], sw.CloseConnection)
    assert behaviour.refusals["identify_wrong_key"] == 1


def test_an_oversized_message_closes_the_connection() -> None:
    behaviour = identify.Identify(_local)
    _up(behaviour)
    behaviour.on_event(sw.InboundStream(conn=1, stream=4, protocol=identify.PUSH_PROTOCOL_ID), 0.0)
    effects = behaviour.on_event(sw.StreamData(conn=1, stream=4, data=b"\x00" * 9000), 0.0)
    assert [type(e) for e in effects] == [sw.CloseConnection]
    assert behaviour.refusals["identify_malformed"] == 1


def test_pushes_are_one_at_a_time_and_rate_limited_per_connection() -> None:
    behaviour = identify.Identify(_local, pushes_per_minute_max=3)
    _up(behaviour)
    push = identify.PUSH_PROTOCOL_ID
    assert behaviour.on_event(sw.InboundStream(conn=1, stream=2, protocol=push), 0.0) == []
    # A second push while the first is still open is refused.
    assert behaviour.on_event(sw.InboundStream(conn=1, stream=4, protocol=push), 0.1) == [
        sw.ResetStream(conn=1, stream=4)
    ]
    accepted = 1
    stream = 6
    for second in range(1, 10):
        behaviour.on_event(sw.StreamData(conn=1, stream=stream - 4, data=_message(PEER)), float(second))
        behaviour.on_event(sw.StreamEnded(conn=1, stream=stream - 4), float(second))
        if behaviour.on_event(sw.InboundStream(conn=1, stream=stream, protocol=push), float(second)) == []:
            accepted += 1
        stream += 4
    assert accepted == 3
    assert behaviour.refusals["identify_push_concurrent"] == 1
    assert behaviour.refusals["identify_push_rate"] >= 6
    # A minute later the peer may push again.
    assert behaviour.on_event(sw.InboundStream(conn=1, stream=999, protocol=push), 120.0) == []


def test_a_peer_pushing_in_a_loop_loses_its_connection() -> None:
    behaviour = identify.Identify(_local, pushes_per_minute_max=1)
    _up(behaviour)
    push = identify.PUSH_PROTOCOL_ID
    behaviour.on_event(sw.InboundStream(conn=1, stream=2, protocol=push), 0.0)
    effects = [
        behaviour.on_event(sw.InboundStream(conn=1, stream=4 + 2 * n, protocol=push), 0.01 * n)
        for n in range(40)
    ]
    resets = [e for e in effects if e and isinstance(e[0], sw.ResetStream)]
    closes = [
        e for e in effects if e and isinstance(e[0], sw.Report) and isinstance(e[0].outcome, sw.Misbehaved)
    ]
    assert len(resets) == identify.PUSH_REFUSALS_PER_MINUTE_MAX
    assert closes and behaviour.refusals["identify_push_flood"] >= 1


def test_push_all_reaches_every_connection_and_down_forgets_one() -> None:
    behaviour = identify.Identify(_local)
    _up(behaviour, 1)
    _up(behaviour, 2)
    assert {e.conn for e in behaviour.push_all()} == {1, 2}
    behaviour.on_event(sw.ConnectionDown(conn=1, peer=PEER.peer_id, reason="gone"), 0.0)
    assert [e.conn for e in behaviour.push_all()] == [2]


def _echo_round(pinger: ping.Ping, now_s: float) -> list[sw.Effect]:
    effects = list(pinger.start(1, "t1", now_s))
    assert effects == [sw.OpenStream(conn=1, protocols=(ping.PROTOCOL_ID,), tag="ping")]
    (write,) = pinger.on_event(
        sw.StreamOpened(conn=1, stream=5, protocol=ping.PROTOCOL_ID, tag="ping"), now_s
    )
    assert isinstance(write, sw.Write) and len(write.data) == ping.PAYLOAD_BYTES
    return list(pinger.on_event(sw.StreamData(conn=1, stream=5, data=write.data), now_s + 0.25))


def test_ping_measures_the_round_trip_with_the_time_it_is_given() -> None:
    pinger = ping.Ping(lambda n: b"\x07" * n)
    (report,) = _echo_round(pinger, 10.0)
    assert report == sw.Report(conn=1, outcome=ping.PingResult(tag="t1", rtt_s=0.25))


def test_a_wrong_echo_resets_the_stream_and_fails_the_ping() -> None:
    pinger = ping.Ping(lambda n: b"\x07" * n)
    pinger.start(1, "t1", 0.0)
    pinger.on_event(sw.StreamOpened(conn=1, stream=5, protocol=ping.PROTOCOL_ID, tag="ping"), 0.0)
    effects = pinger.on_event(sw.StreamData(conn=1, stream=5, data=b"\x08" * 32), 0.1)
    assert effects[0] == sw.ResetStream(conn=1, stream=5)
    assert isinstance(effects[1], sw.Report) and isinstance(effects[1].outcome, ping.PingResult)
    assert effects[1].outcome.rtt_s is None


def test_waiting_pings_fail_when_the_connection_goes() -> None:
    pinger = ping.Ping(lambda n: b"\x07" * n)
    pinger.start(1, "a", 0.0)
    pinger.start(1, "b", 0.0)
    effects = pinger.on_event(sw.ConnectionDown(conn=1, peer=PEER.peer_id, reason="gone"), 1.0)
    tags = [
        e.outcome.tag for e in effects if isinstance(e, sw.Report) and isinstance(e.outcome, ping.PingResult)
    ]
    assert tags == ["a", "b"]


def test_inbound_ping_streams_are_echoed_and_bounded_per_connection() -> None:
    pinger = ping.Ping(lambda n: b"\x07" * n, responders_per_conn_max=2)
    assert pinger.on_event(sw.InboundStream(conn=1, stream=2, protocol=ping.PROTOCOL_ID), 0.0) == ()
    assert pinger.on_event(sw.StreamData(conn=1, stream=2, data=b"x" * 40), 0.0) == [
        sw.Write(conn=1, stream=2, data=b"x" * 32)
    ]
    pinger.on_event(sw.InboundStream(conn=1, stream=4, protocol=ping.PROTOCOL_ID), 0.0)
    assert pinger.on_event(sw.InboundStream(conn=1, stream=6, protocol=ping.PROTOCOL_ID), 0.0) == [
        sw.ResetStream(conn=1, stream=6)
    ]
    assert pinger.refusals["ping_streams"] == 1
