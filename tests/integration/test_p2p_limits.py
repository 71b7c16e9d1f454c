"""The swarm's limits against one hostile peer or address, with real Hosts on loopback.

Loopback holds the whole 127.0.0.0/8: an attacker's sockets leave from 127.9.0.1 (its
own /24), honest peers from 127.0.0.1, so the per-IP and per-subnet limits are seen
exactly as between hosts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pyrsia.errors import PeerError, PeerTimeout
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm import limits
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream
from pyrsia.p2p.swarm.limits import Limits
from pyrsia.p2p.wire import varint
from tests.support.wait import eventually

ATTACKER_IP = "127.9.0.1"
SILENT = "/test/silent/1.0.0"
ECHO = "/test/echo/1.0.0"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _host(config: HostConfig | None = None, clock: Callable[[], float] = time.monotonic) -> Host:
    config = config or HostConfig(listen_host="127.0.0.1", listen_port=0)
    return Host(Identity.from_seed(os.urandom(32)), config, clock=clock).start()


def _addr(host: Host) -> str:
    return str(host.listen_addrs[0].with_peer(host.peer_id))


def _echo(stream: Stream) -> None:
    while data := stream.read():
        stream.write(data)


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    made: list[Host] = []
    yield made
    for host in reversed(made):
        host.stop()


def test_one_address_cannot_take_every_connection(hosts: list[Host]) -> None:
    limited = Limits(connections_inbound_max=64, connections_per_ip_max=8, connections_per_subnet_max=16)
    listener = _host(HostConfig(listen_host="127.0.0.1", listen_port=0, limits=limited))
    hosts.append(listener)
    held: list[socket.socket] = []
    try:
        for _ in range(100):  # held open and silent, as a flood would
            held.append(
                socket.create_connection(("127.0.0.1", listener.listen_port), source_address=(ATTACKER_IP, 0))
            )
        eventually(lambda: listener.stats().refusals.get(limits.PER_IP, 0) >= 92)
        honest = _host()
        hosts.append(honest)
        assert honest.connect(_addr(listener)) == listener.peer_id
        assert listener.wait_identified(honest.peer_id).identified
        assert listener.stats().refusals[limits.PER_IP] == 92
    finally:
        for sock in held:
            sock.close()


def test_a_flood_of_silent_streams_holds_only_its_own_protocol(hosts: list[Host]) -> None:
    listener = _host()
    stop = threading.Event()

    def silent(stream: Stream) -> None:
        with contextlib.suppress(PeerError):
            stream.read(timeout=20)
        stop.wait(20)

    listener.set_handler(SILENT, silent, workers=2, streams_per_peer_max=4)
    listener.set_handler(ECHO, _echo)
    attacker, honest = _host(), _host()
    hosts += [listener, attacker, honest]
    attacker.connect(_addr(listener))
    honest.connect(_addr(listener))
    try:
        for _ in range(20):
            attacker.open_stream(listener.peer_id, [SILENT])
        refused = f"{limits.STREAMS_PER_PEER}:{SILENT}"
        eventually(lambda: listener.stats().refusals.get(refused, 0) >= 16)
        stream = honest.open_stream(listener.peer_id, [ECHO])
        stream.write(b"still served")
        stream.close()
        assert stream.read_all(64, timeout=5) == b"still served"
        assert listener.stats().refusals[refused] == 16
    finally:
        stop.set()
        attacker.stop()


def test_an_idle_throwaway_identity_loses_its_slot_to_a_newcomer_when_full(hosts: list[Host]) -> None:
    clock = FakeClock()
    full = Limits(connections_inbound_max=4, reserved_known=1, idle_trim_s=30)
    listener = _host(HostConfig(listen_host="127.0.0.1", listen_port=0, limits=full), clock)
    hosts.append(listener)
    idlers = [_host() for _ in range(3)]
    hosts += idlers
    for idler in idlers:
        idler.connect(_addr(listener))
    eventually(lambda: len(listener.peers()) == 3)

    early = _host()
    hosts.append(early)
    with contextlib.suppress(PeerError):
        early.connect(_addr(listener))
    eventually(lambda: listener.stats().refusals.get(limits.INBOUND, 0) == 1)
    assert early.peer_id not in listener.peers()

    clock.now += 31  # every idler has now been idle past idle_trim_s
    newcomer = _host()
    hosts.append(newcomer)
    newcomer.connect(_addr(listener))
    eventually(lambda: newcomer.peer_id in listener.peers())
    assert sum(idler.peer_id in listener.peers() for idler in idlers) == 2
    assert listener.stats().refusals.get(limits.INBOUND, 0) == 1

    known = _host()
    hosts.append(known)
    listener.set_known(lambda peer: peer == known.peer_id)
    known.connect(_addr(listener))  # nobody is idle now, but the reserved room is its
    eventually(lambda: known.peer_id in listener.peers())
    assert len(listener.peers()) == 4


def test_a_trickled_message_loses_the_stream_at_its_deadline(hosts: list[Host]) -> None:
    listener, client = _host(), _host()
    hosts += [listener, client]
    outcome: list[BaseException | bytes | None] = []

    def handler(stream: Stream) -> None:
        try:
            outcome.append(stream.read_message(1024, timeout=1.0))
        except PeerTimeout as exc:
            outcome.append(exc)

    listener.set_handler("/test/message/1.0.0", handler)
    client.connect(_addr(listener))
    stream = client.open_stream(listener.peer_id, ["/test/message/1.0.0"])
    stream.write(varint.encode(100))
    sent = 0
    while not outcome and sent < 100:  # one byte every 50 ms would take 5 s
        with contextlib.suppress(PeerError):
            stream.write(b"x")
        sent += 1
        time.sleep(0.05)
    eventually(lambda: bool(outcome))
    assert isinstance(outcome[0], PeerTimeout)
    assert sent < 100
