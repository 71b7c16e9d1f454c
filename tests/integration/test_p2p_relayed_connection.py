"""A connection over another connection's stream, as a relay's circuit carries one.

Three real Hosts on loopback: A and B each connect to R only. A test behaviour on R
splices a stream from A to a stream it opens to B (a relay's hop and stop streams,
reduced to their bytes); A and B run Noise and yamux over their ends (`Upgrade`).
Everything above then sees a connection like any other: identify, ping, handler
streams; it is marked relayed, a direct connection is preferred once there is one,
and it ends when the relay's stream or connection does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence

import pytest

from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream
from tests.support.wait import eventually

HOP = "/test/hop/1.0.0"
STOP = "/test/stop/1.0.0"
ECHO = "/test/echo/1.0.0"
BUFFER_BYTES_MAX = 256 * 1024


class Splice:
    """The relay's side: a hop stream's first line names the target; bytes then flow both ways."""

    protocols = (HOP,)

    def __init__(self) -> None:
        self.conns: dict[str, int] = {}
        self.pairs: dict[tuple[int, int], tuple[int, int]] = {}
        self.waiting: dict[tuple[int, int], bytearray] = {}
        self.opening: set[tuple[int, int]] = set()

    def tick(self, now_s: float) -> Sequence[sw.Effect]:
        return ()

    def on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        match event:
            case sw.ConnectionUp(conn=conn, peer=peer):
                self.conns[peer] = conn
            case sw.InboundStream(conn=conn, stream=stream):
                self.waiting[(conn, stream)] = bytearray()
            case sw.StreamOpened(conn=conn, stream=stream, tag=tag):
                assert isinstance(tag, tuple)
                self.pairs[tag], self.pairs[(conn, stream)] = (conn, stream), tag
                self.opening.discard(tag)
                early = bytes(self.waiting.pop(tag, b""))
                return [sw.Write(conn=conn, stream=stream, data=early)] if early else []
            case sw.StreamData(conn=conn, stream=stream, data=data):
                return self._data((conn, stream), data)
            case sw.StreamEnded(conn=conn, stream=stream) | sw.StreamGone(conn=conn, stream=int() as stream):
                other = self.pairs.pop((conn, stream), None)
                if other is not None:
                    self.pairs.pop(other, None)
                    return [sw.ResetStream(conn=other[0], stream=other[1])]
        return ()

    def _data(self, key: tuple[int, int], data: bytes) -> list[sw.Effect]:
        other = self.pairs.get(key)
        if other is not None:
            return [sw.Write(conn=other[0], stream=other[1], data=data)]
        buffer = self.waiting.get(key)
        if buffer is None:
            return []
        buffer += data
        if len(buffer) > BUFFER_BYTES_MAX:
            del self.waiting[key]
            return [sw.ResetStream(conn=key[0], stream=key[1])]
        if key in self.opening or b"\n" not in buffer:
            return []  # kept until the stream to the target is open
        target, _, rest = bytes(buffer).partition(b"\n")
        buffer[:] = rest
        conn = self.conns.get(target.decode())
        if conn is None:
            del self.waiting[key]
            return [sw.ResetStream(conn=key[0], stream=key[1])]
        self.opening.add(key)
        return [sw.OpenStream(conn=conn, protocols=(STOP,), tag=key)]


class Ends:
    """A and B's side: dial through the relay (hop), or take a circuit from it (stop)."""

    protocols = (STOP,)

    def __init__(self) -> None:
        self.conns: dict[str, int] = {}
        self.dialling: dict[object, tuple[str, str]] = {}

    def dial(self, relay: str, target: str) -> Callable[[float], Sequence[sw.Effect]]:
        def action(now_s: float) -> Sequence[sw.Effect]:
            self.dialling[(relay, target)] = (relay, target)
            return [sw.OpenStream(conn=self.conns[relay], protocols=(HOP,), tag=(relay, target))]

        return action

    def tick(self, now_s: float) -> Sequence[sw.Effect]:
        return ()

    def on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        match event:
            case sw.ConnectionUp(conn=conn, peer=peer, relayed=False):
                self.conns[peer] = conn
            case sw.StreamOpened(conn=conn, stream=stream, tag=(relay, target)):
                return [
                    sw.Write(conn=conn, stream=stream, data=f"{target}\n".encode()),
                    sw.Upgrade(conn=conn, stream=stream, initiator=True, peer=str(target), relay=str(relay)),
                ]
            case sw.InboundStream(conn=conn, stream=stream):
                relay = next(p for p, c in self.conns.items() if c == conn)
                return [sw.Upgrade(conn=conn, stream=stream, initiator=False, peer=EXPECTED[0], relay=relay)]
        return ()


EXPECTED: list[str] = []  # who B expects at the far end of its circuit (set per test)


def _echo(stream: Stream) -> None:
    while data := stream.read():
        stream.write(data)


@pytest.fixture
def trio() -> Iterator[tuple[Host, Host, Host, Ends]]:
    # No hole punching: on loopback it would make the ends direct (test_p2p_dcutr.py).
    config = HostConfig(listen_host="127.0.0.1", listen_port=0, hole_punching=False)
    relay, a, b = (Host(Identity.from_seed(os.urandom(32)), config) for _ in range(3))
    relay.add_behaviour(Splice())
    ends_a, ends_b = Ends(), Ends()
    a.add_behaviour(ends_a)
    b.add_behaviour(ends_b)
    b.set_handler(ECHO, _echo)
    for host in (relay, a, b):
        host.start()
    try:
        for host in (a, b):
            host.connect(str(relay.listen_addrs[0].with_peer(relay.peer_id)))
        # The relay too: a responder completes its handshake after the dialler does.
        eventually(lambda: relay.peer_id in ends_a.conns and relay.peer_id in ends_b.conns)
        eventually(lambda: relay.is_connected(a.peer_id) and relay.is_connected(b.peer_id))
        EXPECTED[:] = [a.peer_id]
        yield relay, a, b, ends_a
    finally:
        for host in (a, b, relay):
            host.stop()


def test_a_relayed_connection_is_a_connection_like_any_other(trio: tuple[Host, Host, Host, Ends]) -> None:
    relay, a, b, ends_a = trio
    assert not a.is_connected(b.peer_id)
    a.run(ends_a, ends_a.dial(relay.peer_id, b.peer_id))
    info = a.wait_identified(b.peer_id)
    assert info.relayed and str(info.address) == f"/p2p/{relay.peer_id}/p2p-circuit"
    assert ECHO in info.protocols
    assert b.wait_identified(a.peer_id).relayed
    assert a.ping(b.peer_id) > 0
    stream = a.open_stream(b.peer_id, [ECHO])
    payload = os.urandom(3 * 1024 * 1024)  # past every window: flow control across the circuit
    echoed: list[bytes] = []
    reader = threading.Thread(target=lambda: echoed.append(stream.read_all(len(payload) + 1, timeout=30)))
    reader.start()
    stream.write(payload)
    stream.close()
    reader.join(40)
    assert echoed == [payload]


def test_a_direct_connection_is_preferred_and_the_circuit_ends_with_the_relay(
    trio: tuple[Host, Host, Host, Ends],
) -> None:
    relay, a, b, ends_a = trio
    a.run(ends_a, ends_a.dial(relay.peer_id, b.peer_id))
    assert a.wait_identified(b.peer_id).relayed
    a.connect(str(b.listen_addrs[0].with_peer(b.peer_id)))
    eventually(lambda: (info := a.peer_info(b.peer_id)) is not None and not info.relayed)
    relay.stop()  # the circuit goes with the relay; the direct connection stays
    stream = a.open_stream(b.peer_id, [ECHO])
    stream.write(b"direct")
    stream.close()
    assert stream.read_all(64, timeout=10) == b"direct"


def test_the_circuit_closes_when_the_relay_goes(trio: tuple[Host, Host, Host, Ends]) -> None:
    relay, a, b, ends_a = trio
    a.run(ends_a, ends_a.dial(relay.peer_id, b.peer_id))
    a.wait_identified(b.peer_id)
    relay.stop()
    eventually(lambda: not a.is_connected(b.peer_id) and not b.is_connected(a.peer_id))
    # What B said of itself over the circuit is kept: the next stream dials it directly.
    stream = a.open_stream(b.peer_id, [ECHO])
    info = a.peer_info(b.peer_id)
    assert info is not None and not info.relayed
    stream.close()
