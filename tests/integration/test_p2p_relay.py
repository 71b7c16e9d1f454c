"""Circuit relay v2 between real Hosts on loopback: a private node reserves, a peer reaches it.

R relays (the default); B says it is private, so it reserves on the relays among its
peers and advertises `/p2p/R/p2p-circuit/p2p/B`; A, connected only to R, dials that
address and gets a relayed connection that carries identify, ping and handler streams.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from pyrsia.errors import PeerError
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream
from tests.support.wait import eventually

ECHO = "/test/echo/1.0.0"


def _echo(stream: Stream) -> None:
    while data := stream.read():
        stream.write(data)


def _host(**changes: object) -> Host:
    config = HostConfig(listen_host="127.0.0.1", listen_port=0, **changes)  # type: ignore[arg-type]
    return Host(Identity.from_seed(os.urandom(32)), config)


@pytest.fixture
def network() -> Iterator[tuple[Host, Host, Host]]:
    relay = _host()
    # Nothing on loopback stops a hole punch: without these the ends would soon talk
    # directly (test_p2p_dcutr.py shows that), and these tests are about the relay's path.
    private = _host(reachability="private", relay_service=False, hole_punching=False)
    public = _host(relay_service=False, hole_punching=False)
    private.set_handler(ECHO, _echo)
    for host in (relay, private, public):
        host.start()
    try:
        for host in (private, public):
            host.connect(str(relay.listen_addrs[0].with_peer(relay.peer_id)))
        yield relay, private, public
    finally:
        for host in (public, private, relay):
            host.stop()


def _circuit_address(private: Host, relay: Host) -> str:
    eventually(lambda: bool(private.address_kinds()["relayed"]))
    (address,) = private.address_kinds()["relayed"]
    assert f"/p2p/{relay.peer_id}/p2p-circuit/p2p/{private.peer_id}" in address
    return address


def test_a_private_node_reserves_and_is_reached_through_the_relay(network: tuple[Host, Host, Host]) -> None:
    relay, private, public = network
    address = _circuit_address(private, relay)
    assert address in [str(a) for a in private.listen_addrs]  # advertised, in identify too
    assert relay.stats().relay["reservations_granted"] == 1
    assert public.connect(address) == private.peer_id
    info = public.wait_identified(private.peer_id)
    assert info.relayed and ECHO in info.protocols
    assert public.ping(private.peer_id) > 0
    stream = public.open_stream(private.peer_id, [ECHO])
    payload = os.urandom(96 * 1024)  # within the relay's default circuit limit
    echoed: list[bytes] = []
    reader = threading.Thread(target=lambda: echoed.append(stream.read_all(len(payload) + 1, timeout=20)))
    reader.start()
    stream.write(payload)
    stream.close()
    reader.join(30)
    assert echoed == [payload]
    assert private.peer_info(public.peer_id) is not None
    assert relay.stats().circuits_relayed == 1


def test_the_circuit_byte_limit_resets_it(network: tuple[Host, Host, Host]) -> None:
    relay, private, public = network
    public.connect(_circuit_address(private, relay))
    stream = public.open_stream(private.peer_id, [ECHO])
    with pytest.raises(PeerError):  # 128 KiB each way by default: the relay resets both ends
        for _ in range(64):
            stream.write(os.urandom(16 * 1024), timeout=5)
            stream.read(16 * 1024, timeout=5)
    eventually(lambda: not public.is_connected(private.peer_id))
    assert relay.stats().refusals.get("relay_circuit_bytes", 0) >= 1


def test_no_circuit_to_a_peer_without_a_reservation(network: tuple[Host, Host, Host]) -> None:
    relay, private, public = network
    _circuit_address(private, relay)
    stranger = f"/p2p/{relay.peer_id}/p2p-circuit/p2p/{public.peer_id}"
    with pytest.raises(PeerError, match="no circuit"):
        private.connect(stranger, timeout=10)


def test_a_private_node_offers_no_relay_service_and_nobody_reserves_on_it() -> None:
    hop = "/libp2p/circuit/relay/0.2.0/hop"
    relaying_private = _host(reachability="private", hole_punching=False)  # relay_service on
    other_private = _host(reachability="private", relay_service=False, hole_punching=False)
    public_relay = _host()
    hosts = (public_relay, relaying_private, other_private)
    for host in hosts:
        host.start()
    try:
        assert hop not in relaying_private.protocols
        assert hop in public_relay.protocols
        for host in (relaying_private, public_relay):
            other_private.connect(str(host.listen_addrs[0].with_peer(host.peer_id)))
        info = other_private.wait_identified(relaying_private.peer_id)
        assert hop not in info.protocols
        # The other private node reserves on the public relay only.
        eventually(lambda: bool(other_private.address_kinds()["relayed"]))
        assert all(public_relay.peer_id in a for a in other_private.address_kinds()["relayed"])
        assert relaying_private.stats().relay.get("reservations_granted", 0) == 0
    finally:
        for host in hosts:
            host.stop()
